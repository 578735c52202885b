//! The scheduler's gRPC API end to end, in process, on 127.0.0.1:0: a fake
//! node registers, jobs are submitted, bound, reported, and everything
//! survives a restart on the same data folder.

use std::time::Duration;

use gpuctl_common::api::{Job, JobPhase, Node, NodePhase, TaskPhase};
use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::control_client::ControlClient;
use gpuctl_proto::v1::node_service_client::NodeServiceClient;
use gpuctl_scheduler::api::ServiceOptions;
use gpuctl_scheduler::controllers::ControllerOptions;
use gpuctl_scheduler::raft::RaftOptions;
use gpuctl_scheduler::server::{Config, Server};
use tonic::transport::Channel;

const LIMIT: Duration = Duration::from_secs(20);

async fn start(dir: &std::path::Path, node_timeout: Duration) -> (Server, String) {
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
            node_timeout,
            resync: Duration::from_millis(100),
        },
        tls: None,
    };
    let s = Server::start(cfg, grpc, metrics).await.unwrap();
    assert!(s.wait_leader(LIMIT).await, "single voter became leader");
    (s, addr)
}

async fn clients(addr: &str) -> (ControlClient<Channel>, NodeServiceClient<Channel>) {
    let ch = Channel::from_shared(addr.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    (ControlClient::new(ch.clone()), NodeServiceClient::new(ch))
}

fn register(name: &str, gpus: u32) -> pb::RegisterRequest {
    let n = gpuctl_testkit::node(name)
        .gpus(gpus, gpuctl_testkit::A100)
        .nvlink("nvl0")
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
        labels: n.metadata.labels.into_iter().collect(),
        cordon_after_unhealthy_gpus: 0,
    }
}

fn job_json(name: &str, replicas: u32, gpus: f64) -> String {
    let j = gpuctl_testkit::job(name).replicas(replicas).gpus(gpus);
    serde_json::to_string(&j.build()).unwrap()
}

async fn get_job(c: &mut ControlClient<Channel>, name: &str) -> Job {
    let r = c
        .get(pb::GetRequest {
            kind: "jobs".into(),
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    serde_json::from_str(&r.objects_json[0]).unwrap()
}

/// Next assignments message with exactly `n` tasks, all of job `job`.
async fn next_with(
    stream: &mut tonic::Streaming<pb::Assignments>,
    job: &str,
    n: usize,
) -> pb::Assignments {
    tokio::time::timeout(LIMIT, async {
        loop {
            let a = stream.message().await.unwrap().expect("stream open");
            if a.tasks.len() == n && a.tasks.iter().all(|t| t.job == job) {
                return a;
            }
        }
    })
    .await
    .expect("assignments arrive")
}

/// A task phase by the name users know it by ("Running").
fn phase_named(name: &str) -> pb::TaskPhase {
    pb::TaskPhase::from_str_name(&format!("TASK_PHASE_{}", name.to_ascii_uppercase()))
        .unwrap_or_else(|| panic!("no task phase {name:?}"))
}

async fn report(
    n: &mut NodeServiceClient<Channel>,
    t: &pb::TaskAssignment,
    phase: &str,
    code: i32,
) {
    n.report_task(pb::ReportTaskRequest {
        node: "n1".into(),
        job: t.job.clone(),
        task_index: t.task_index,
        attempt: t.attempt,
        phase: phase_named(phase).into(),
        exit_code: code,
        message: String::new(),
        pid: 4242,
        ..Default::default()
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gang_lifecycle_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), Duration::from_secs(60)).await;
    let (mut c, mut n) = clients(&addr).await;

    // Before any node exists, a GPU job is refused as impossible.
    let e = c
        .apply(pb::ApplyRequest {
            object_json: job_json("early", 1, 1.0),
            source: "early.yaml".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("no nodes"), "{}", e.message());

    n.register(register("n1", 4)).await.unwrap();
    let mut watch = n
        .watch_assignments(pb::WatchAssignmentsRequest { node: "n1".into() })
        .await
        .unwrap()
        .into_inner();

    for j in ["a", "b", "c"] {
        c.apply(pb::ApplyRequest {
            object_json: job_json(j, 2, 2.0),
            source: format!("{j}.yaml"),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // Impossible: 8 GPUs per task on a 4-GPU node. Nothing stored.
    let e = c
        .apply(pb::ApplyRequest {
            object_json: job_json("huge", 1, 8.0),
            source: "huge.yaml".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("huge.yaml"), "{}", e.message());
    assert!(
        e.message().contains("largest node (n1) has 4"),
        "{}",
        e.message()
    );
    let e = c
        .apply(pb::ApplyRequest {
            object_json: job_json("a", 1, 1.0),
            source: "dup.yaml".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists);

    // Job a takes the whole node: two tasks with disjoint GPUs, ranks 0 and 1.
    let a = next_with(&mut watch, "a", 2).await;
    // Without authentication tasks name no owner: they run as the daemon's user.
    assert!(a.tasks.iter().all(|t| t.owner.is_none()));
    assert!(a
        .tasks
        .iter()
        .all(|t| t.job == "a" && t.phase() == pb::TaskPhase::Bound && t.world_size == 2));
    let mut gpus: Vec<u32> = a.tasks.iter().flat_map(|t| t.gpu_indices.clone()).collect();
    gpus.sort();
    assert_eq!(gpus, vec![0, 1, 2, 3]);
    assert_eq!(
        a.tasks.iter().map(|t| t.rank).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert_eq!(get_job(&mut c, "b").await.status.phase, JobPhase::Pending);

    for t in &a.tasks {
        report(&mut n, t, "Running", 0).await;
    }
    for t in &a.tasks {
        report(&mut n, t, "Succeeded", 0).await;
    }
    let w = c
        .wait(pb::WaitRequest {
            name: "a".into(),
            timeout_ms: 10_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(w.finished);
    assert_eq!(w.phase(), pb::RunPhase::Succeeded);

    // Capacity freed: b is placed next, c still waits.
    let b = next_with(&mut watch, "b", 2).await;
    assert!(b.tasks.iter().all(|t| t.job == "b"), "{b:?}");
    assert_eq!(get_job(&mut c, "c").await.status.phase, JobPhase::Pending);

    // A wait with a short timeout on a pending job returns unfinished.
    let w = c
        .wait(pb::WaitRequest {
            name: "c".into(),
            timeout_ms: 50,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!w.finished);

    server.shutdown().await;

    // Restart on the same folder: all three jobs and the node come back,
    // with b's allocation.
    let (server, addr) = start(dir.path(), Duration::from_secs(60)).await;
    let (mut c, _n) = clients(&addr).await;
    let r = c
        .get(pb::GetRequest {
            kind: "jobs".into(),
            name: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let jobs: Vec<Job> = r
        .objects_json
        .iter()
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    let names: Vec<&str> = jobs.iter().map(|j| j.metadata.name.as_str()).collect();
    assert_eq!(names, vec!["a", "b", "c"]);
    assert_eq!(jobs[0].status.phase, JobPhase::Succeeded);
    assert_eq!(jobs[1].status.phase, JobPhase::Running);
    assert!(jobs[1]
        .status
        .tasks
        .iter()
        .all(|t| t.phase == TaskPhase::Bound));
    assert_eq!(jobs[2].status.phase, JobPhase::Pending);
    let r = c
        .get(pb::GetRequest {
            kind: "nodes".into(),
            name: "n1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let node: Node = serde_json::from_str(&r.objects_json[0]).unwrap();
    assert_eq!(node.status.gpus.len(), 4);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_is_lost_and_its_job_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), Duration::from_millis(300)).await;
    let (mut c, mut n) = clients(&addr).await;
    n.register(register("n1", 2)).await.unwrap();
    let mut j: Job = serde_json::from_str(&job_json("r", 1, 2.0)).unwrap();
    j.spec.max_retries = 1;
    c.apply(pb::ApplyRequest {
        object_json: serde_json::to_string(&j).unwrap(),
        source: "r.yaml".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // No heartbeats: within a bounded time the node is lost and the job's
    // attempt 1 failed; attempt 2 waits for capacity.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let job = get_job(&mut c, "r").await;
        if job.status.attempt == 2 {
            assert_eq!(job.status.phase, JobPhase::Pending);
            assert!(
                job.status.events.iter().any(|e| e.reason == "NodeLost"),
                "{:?}",
                job.status.events
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node never marked lost"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c
        .get(pb::GetRequest {
            kind: "node".into(),
            name: "n1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let node: Node = serde_json::from_str(&r.objects_json[0]).unwrap();
    assert_eq!(node.status.phase, NodePhase::Lost);
    // Its heartbeat now asks it to register again.
    let hb = n
        .heartbeat(pb::HeartbeatRequest {
            name: "n1".into(),
            metrics: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.reregister);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), Duration::from_secs(60)).await;
    let (mut c, mut n) = clients(&addr).await;
    let e = c
        .apply(pb::ApplyRequest {
            object_json: "{not json".into(),
            source: "x.json".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("x.json"), "{}", e.message());
    let bad = job_json("neg", 1, 1.0).replace("\"gpus\":1.0", "\"gpus\":-1.0");
    let e = c
        .apply(pb::ApplyRequest {
            object_json: bad,
            source: "neg.yaml".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        e.message().contains("spec.tasks[0].resources.gpus"),
        "{}",
        e.message()
    );
    let e = c
        .get(pb::GetRequest {
            kind: "pods".into(),
            name: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = c
        .get(pb::GetRequest {
            kind: "job".into(),
            name: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = c
        .cancel(pb::CancelRequest {
            kind: "job".into(),
            name: "nope".into(),
            action: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = c
        .cordon(pb::CordonRequest {
            node: "nope".into(),
            cordon: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let mut r = register("Bad_Name", 1);
    r.name = "Bad_Name".into();
    let e = n.register(r).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = n
        .report_task(pb::ReportTaskRequest {
            // A phase this scheduler has no name for.
            phase: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    server.shutdown().await;
}

fn queue_json(name: &str, weight: u32, quota: f64, version: Option<u64>) -> String {
    let mut v = serde_json::json!({
        "apiVersion": "gpuctl.io/v1",
        "kind": "Queue",
        "metadata": {"name": name},
        "spec": {"weight": weight, "gpuQuota": quota},
    });
    if let Some(rv) = version {
        v["metadata"]["resourceVersion"] = rv.into();
    }
    v.to_string()
}

async fn apply(
    c: &mut ControlClient<Channel>,
    json: String,
    request_id: &str,
) -> Result<serde_json::Value, tonic::Status> {
    let r = c
        .apply(pb::ApplyRequest {
            object_json: json,
            source: "q.yaml".into(),
            request_id: request_id.into(),
            ..Default::default()
        })
        .await?;
    Ok(serde_json::from_str(&r.into_inner().object_json).unwrap())
}

async fn get_queue(c: &mut ControlClient<Channel>, name: &str) -> serde_json::Value {
    let r = c
        .get(pb::GetRequest {
            kind: "queues".into(),
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    serde_json::from_str(&r.objects_json[0]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_compare_and_set_retry_safely_cap_gpus_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), Duration::from_secs(60)).await;
    let (mut c, mut n) = clients(&addr).await;
    n.register(register("n1", 4)).await.unwrap();

    let q = apply(&mut c, queue_json("research", 1, 1.0, None), "a")
        .await
        .unwrap();
    let v1 = q["metadata"]["resourceVersion"].as_u64().unwrap();
    // Compare-and-set on the version just read wins.
    let q = apply(&mut c, queue_json("research", 2, 1.0, Some(v1)), "b")
        .await
        .unwrap();
    let v2 = q["metadata"]["resourceVersion"].as_u64().unwrap();
    assert!(v2 > v1);
    // The same request again (a retry after a lost answer) is answered as
    // the first time, not refused as a conflict with itself.
    let again = apply(&mut c, queue_json("research", 2, 1.0, Some(v1)), "b")
        .await
        .unwrap();
    assert_eq!(again["metadata"]["resourceVersion"].as_u64(), Some(v2));
    // A new request on the stale version is a conflict that names the file.
    let e = apply(&mut c, queue_json("research", 3, 1.0, Some(v1)), "c")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Aborted, "{e:?}");
    assert!(
        e.message()
            .starts_with("q.yaml: queue \"research\" was changed"),
        "{}",
        e.message()
    );
    assert_eq!(get_queue(&mut c, "research").await["spec"]["weight"], 2);

    // The quota (1 GPU) holds the second 1-GPU job back while the first runs.
    let mut watch = n
        .watch_assignments(pb::WatchAssignmentsRequest { node: "n1".into() })
        .await
        .unwrap()
        .into_inner();
    for name in ["r1", "r2"] {
        let mut j: serde_json::Value = serde_json::from_str(&job_json(name, 1, 1.0)).unwrap();
        j["metadata"]["queue"] = "research".into();
        apply(&mut c, j.to_string(), &format!("job-{name}"))
            .await
            .unwrap();
    }
    let a = next_with(&mut watch, "r1", 1).await;
    report(&mut n, &a.tasks[0], "Running", 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get_job(&mut c, "r2").await.status.phase, JobPhase::Pending);
    let q = get_queue(&mut c, "research").await;
    assert_eq!(q["status"]["gpusInUse"], 1.0);
    assert_eq!(q["status"]["pendingJobs"], 1);
    // When r1 ends, r2 gets its turn.
    report(&mut n, &a.tasks[0], "Succeeded", 0).await;
    next_with(&mut watch, "r2", 1).await;
    // A job in a queue that does not exist is refused, naming the field.
    let mut j: serde_json::Value = serde_json::from_str(&job_json("lost", 1, 1.0)).unwrap();
    j["metadata"]["queue"] = "nope".into();
    let e = apply(&mut c, j.to_string(), "job-lost").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("metadata.queue"), "{}", e.message());

    drop((c, n, watch));
    server.shutdown().await;
    let (server, addr) = start(dir.path(), Duration::from_secs(60)).await;
    let (mut c, _n) = clients(&addr).await;
    let q = get_queue(&mut c, "research").await;
    assert_eq!(
        (
            q["spec"]["weight"].as_u64(),
            q["metadata"]["resourceVersion"].as_u64()
        ),
        (Some(2), Some(v2))
    );
    // Request records survive the restart too.
    let again = apply(&mut c, queue_json("research", 2, 1.0, Some(v1)), "b")
        .await
        .unwrap();
    assert_eq!(again["metadata"]["resourceVersion"].as_u64(), Some(v2));
    server.shutdown().await;
}

fn secret_json(name: &str, pairs: &[(&str, &str)]) -> String {
    let data: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    serde_json::json!({
        "apiVersion": "gpuctl.io/v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": data,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_only_the_assignment_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), Duration::from_secs(60)).await;
    let (mut c, mut n) = clients(&addr).await;
    n.register(register("n1", 8)).await.unwrap();
    let mut stream = n
        .watch_assignments(pb::WatchAssignmentsRequest { node: "n1".into() })
        .await
        .unwrap()
        .into_inner();

    // A job naming a secret that does not exist is refused, naming the field.
    let mut job: serde_json::Value = serde_json::from_str(&job_json("uses-hf", 1, 1.0)).unwrap();
    job["spec"]["tasks"][0]["envFrom"] = serde_json::json!([{"secretRef": {"name": "hf"}}]);
    job["spec"]["tasks"][0]["secretFiles"] = serde_json::json!([{"secretRef": {"name": "hf"}}]);
    job["spec"]["tasks"][0]["env"] = serde_json::json!({"TOKEN": "from-env"});
    let e = apply(&mut c, job.to_string(), "").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message()
            .contains("job \"uses-hf\": spec.tasks[0].envFrom[0]: secret \"hf\" does not exist"),
        "{}",
        e.message()
    );

    // Applied, the secret is shown redacted by Apply and Get.
    let shown = apply(
        &mut c,
        secret_json("hf", &[("TOKEN", "s3cret"), ("USER", "bot")]),
        "",
    )
    .await
    .unwrap();
    assert_eq!(shown["data"]["TOKEN"], "<redacted> (6 bytes)");
    let got = c
        .get(pb::GetRequest {
            kind: "secrets".into(),
            name: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.objects_json.len(), 1);
    assert!(!got.objects_json[0].contains("s3cret"));
    assert!(!got.objects_json[0].contains("czNjcmV0")); // base64 of the value

    // The job's assignment carries the values: env (the spec's env wins) and files.
    apply(&mut c, job.to_string(), "").await.unwrap();
    let a = next_with(&mut stream, "uses-hf", 1).await;
    let t = &a.tasks[0];
    assert_eq!(t.secret_env.get("USER").map(String::as_str), Some("bot"));
    assert_eq!(
        t.secret_env.get("TOKEN").map(String::as_str),
        Some("s3cret")
    );
    assert_eq!(t.env.get("TOKEN").map(String::as_str), Some("from-env"));
    assert_eq!(
        t.secret_files.get("hf/TOKEN").map(Vec::as_slice),
        Some(&b"s3cret"[..])
    );
    assert!(t.secret_error.is_empty());

    // Deleted while the task is bound: the assignment says why it cannot start.
    c.delete(pb::DeleteRequest {
        kind: "secret".into(),
        name: "hf".into(),
    })
    .await
    .unwrap();
    let a = next_with(&mut stream, "uses-hf", 1).await;
    assert_eq!(a.tasks[0].secret_error, "secret \"hf\" no longer exists");
    assert!(a.tasks[0].secret_env.is_empty());

    // A secret survives a restart.
    apply(&mut c, secret_json("keys", &[("k", "v")]), "")
        .await
        .unwrap();
    drop((c, n, stream));
    server.shutdown().await;
    let (_server, addr) = start(dir.path(), Duration::from_secs(60)).await;
    let (mut c, _) = clients(&addr).await;
    let got = c
        .get(pb::GetRequest {
            kind: "secret".into(),
            name: "keys".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        got.objects_json[0].contains("<redacted> (1 bytes)"),
        "{:?}",
        got.objects_json
    );
}

/// One page of `get jobs`: the names and the continue token.
async fn page(
    c: &mut ControlClient<Channel>,
    limit: u32,
    continue_token: String,
) -> Result<(Vec<String>, String), tonic::Status> {
    let r = c
        .get(pb::GetRequest {
            kind: "jobs".into(),
            limit,
            continue_token,
            ..Default::default()
        })
        .await?
        .into_inner();
    let names = r
        .objects_json
        .iter()
        .map(|j| serde_json::from_str::<Job>(j).unwrap().metadata.name)
        .collect();
    Ok((names, r.continue_token))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_list_reads_in_pages_in_submission_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = start(dir.path(), Duration::from_secs(60)).await;
    let (mut c, mut n) = clients(&addr).await;
    n.register(register("n1", 1)).await.unwrap();
    // Submitted out of name order: pages follow submission.
    let names = ["e", "b", "d", "a", "c"];
    for n in names {
        apply(&mut c, job_json(n, 1, 1.0), "").await.unwrap();
    }
    let (first, token) = page(&mut c, 2, String::new()).await.unwrap();
    assert_eq!(first, ["e", "b"]);
    assert!(!token.is_empty(), "more follow");
    // A job submitted between pages comes at the end.
    apply(&mut c, job_json("late", 1, 1.0), "").await.unwrap();
    let (second, token) = page(&mut c, 2, token).await.unwrap();
    assert_eq!(second, ["d", "a"]);
    let (third, token) = page(&mut c, 2, token).await.unwrap();
    assert_eq!(third, ["c", "late"]);
    assert_eq!(token, "", "the list ended exactly on the page's end");
    // No limit: the whole list in the same order, and no token.
    let (all, token) = page(&mut c, 0, String::new()).await.unwrap();
    assert_eq!(all, ["e", "b", "d", "a", "c", "late"]);
    assert_eq!(token, "");

    // A token not given by the server, and a limit on another kind, are
    // refused with the rule.
    let e = page(&mut c, 2, "garbage".into()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("continue_token \"garbage\""),
        "{}",
        e.message()
    );
    let e = c
        .get(pb::GetRequest {
            kind: "nodes".into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("page a list of jobs"),
        "{}",
        e.message()
    );
}
