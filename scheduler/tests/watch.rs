//! `WatchAssignments` at many nodes: a job's life wakes the stream of the
//! node it runs on, not every node's (in process, on 127.0.0.1:0).

use std::time::Duration;

use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::control_client::ControlClient;
use gpuctl_proto::v1::node_service_client::NodeServiceClient;
use gpuctl_scheduler::api::ServiceOptions;
use gpuctl_scheduler::controllers::ControllerOptions;
use gpuctl_scheduler::raft::RaftOptions;
use gpuctl_scheduler::server::{Config, Server};
use tonic::transport::Channel;

const LIMIT: Duration = Duration::from_secs(20);
const NODES: usize = 20;

async fn start(dir: &std::path::Path) -> (Server, String) {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", grpc.local_addr().unwrap());
    let cfg = Config {
        id: 1,
        peers: Default::default(),
        data_dir: dir.to_path_buf(),
        raft: RaftOptions::default(),
        service: ServiceOptions::default(),
        controller: ControllerOptions {
            node_timeout: Duration::from_secs(60),
            resync: Duration::from_millis(100),
        },
        tls: None,
    };
    let s = Server::start(cfg, grpc, metrics).await.unwrap();
    assert!(s.wait_leader(LIMIT).await, "single voter became leader");
    (s, addr)
}

fn register(name: &str) -> pb::RegisterRequest {
    let n = gpuctl_testkit::node(name)
        .gpus(4, gpuctl_testkit::A100)
        .cpu_milli(32_000)
        .memory_bytes(128 << 30)
        .build();
    pb::RegisterRequest {
        name: n.metadata.name,
        address: n.status.address,
        agent_endpoint: n.status.agent_endpoint,
        gpus: n
            .status
            .gpus
            .into_iter()
            .map(|g| pb::GpuDevice {
                uuid: g.uuid,
                index: g.index,
                model: g.model,
                memory_bytes: g.memory_bytes,
                nvlink_domain: g.nvlink_domain,
                healthy: g.healthy,
                xid: g.xid,
            })
            .collect(),
        cpu_milli: n.status.cpu_milli,
        memory_bytes: n.status.memory_bytes,
        inventory: n.status.inventory,
        labels: Default::default(),
        cordon_after_unhealthy_gpus: 0,
    }
}

/// The next message of `stream` that satisfies `want`.
async fn next_where(
    stream: &mut tonic::Streaming<pb::Assignments>,
    want: impl Fn(&pb::Assignments) -> bool,
) -> pb::Assignments {
    tokio::time::timeout(LIMIT, async {
        loop {
            let a = stream.message().await.unwrap().expect("stream open");
            if want(&a) {
                return a;
            }
        }
    })
    .await
    .expect("the assignments arrive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_wakes_only_the_stream_of_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path()).await;
    let ch = Channel::from_shared(addr).unwrap().connect().await.unwrap();
    let (mut c, mut n) = (ControlClient::new(ch.clone()), NodeServiceClient::new(ch));
    let names: Vec<String> = (0..NODES).map(|i| format!("n{i:02}")).collect();
    for name in &names {
        n.register(register(name)).await.unwrap();
    }
    let mut streams = Vec::new();
    for name in &names {
        let mut s = n
            .watch_assignments(pb::WatchAssignmentsRequest { node: name.clone() })
            .await
            .unwrap()
            .into_inner();
        next_where(&mut s, |a| a.tasks.is_empty()).await;
        streams.push(s);
    }
    let builds = || server.raft.shared.metrics.assignment_builds.get();
    let before = builds();

    let job = gpuctl_testkit::job("a").gpus(1.0).build();
    c.apply(pb::ApplyRequest {
        object_json: serde_json::to_string(&job).unwrap(),
        source: "a.yaml".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // Find the node it was bound to from the job, then follow its stream.
    let node = tokio::time::timeout(LIMIT, async {
        loop {
            let r = c
                .get(pb::GetRequest {
                    kind: "jobs".into(),
                    name: "a".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let j: gpuctl_common::api::Job = serde_json::from_str(&r.objects_json[0]).unwrap();
            if let Some(n) = j.status.tasks[0].node.clone() {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the job is bound");
    let i = names.iter().position(|x| *x == node).unwrap();
    let a = next_where(&mut streams[i], |a| a.tasks.len() == 1).await;
    let t = a.tasks[0].clone();
    for (phase, code) in [(pb::TaskPhase::Running, 0), (pb::TaskPhase::Succeeded, 0)] {
        n.report_task(pb::ReportTaskRequest {
            node: node.clone(),
            job: t.job.clone(),
            task_index: t.task_index,
            attempt: t.attempt,
            phase: phase.into(),
            exit_code: code,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    next_where(&mut streams[i], |a| a.tasks.is_empty()).await;

    // Submit, bind, Running and Succeeded: four applies. Woken per applied
    // batch, every one of the 20 streams would have built its set each
    // time (80); woken per node, the job's node builds a handful.
    let built = builds() - before;
    assert!(
        built < NODES as u64,
        "{built} assignment sets built for one job's life on one of {NODES} nodes"
    );
    assert!(built >= 2, "the job's node saw it bound and gone ({built})");
}
