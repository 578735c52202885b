//! Three replicas in process on 127.0.0.1:0: writes through any replica,
//! failover when the leader stops, catch-up after a restart, and a replica
//! cut off from its peers refusing writes while the majority goes on.
//! These run the whole server over gRPC; the replication logic alone is
//! tested without sockets, tick by tick, in `src/raft/harness/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gpuctl_common::api::Job;
use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::control_client::ControlClient;
use gpuctl_scheduler::api::ServiceOptions;
use gpuctl_scheduler::controllers::ControllerOptions;
use gpuctl_scheduler::raft::RaftOptions;
use gpuctl_scheduler::server::{Config, Server};
use tonic::transport::Channel;

const LIMIT: Duration = Duration::from_secs(30);

struct Replica {
    id: u64,
    dir: PathBuf,
    addr: String,
    server: Option<Server>,
}

async fn start_one(
    id: u64,
    dir: &Path,
    listener: tokio::net::TcpListener,
    peers: &BTreeMap<u64, String>,
) -> Server {
    start_opts(id, dir, listener, peers, false).await
}

async fn start_opts(
    id: u64,
    dir: &Path,
    listener: tokio::net::TcpListener,
    peers: &BTreeMap<u64, String>,
    join: bool,
) -> Server {
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = Config {
        id,
        peers: peers.clone(),
        data_dir: dir.to_path_buf(),
        raft: RaftOptions {
            tick: Duration::from_millis(50),
            join,
            ..Default::default()
        },
        service: ServiceOptions::default(),
        controller: ControllerOptions {
            node_timeout: Duration::from_secs(60),
            resync: Duration::from_millis(100),
        },
        tls: None,
    };
    Server::start(cfg, listener, metrics).await.unwrap()
}

async fn cluster(root: &Path) -> (Vec<Replica>, BTreeMap<u64, String>) {
    let mut listeners = Vec::new();
    let mut peers = BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(id, format!("http://{}", l.local_addr().unwrap()));
        listeners.push((id, l));
    }
    let mut replicas = Vec::new();
    for (id, l) in listeners {
        let dir = root.join(format!("r{id}"));
        let server = start_one(id, &dir, l, &peers).await;
        replicas.push(Replica {
            id,
            dir,
            addr: peers[&id].clone(),
            server: Some(server),
        });
    }
    (replicas, peers)
}

async fn client(addr: &str) -> ControlClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(addr.to_string())
        .unwrap()
        .timeout(Duration::from_secs(20))
        .connect_lazy();
    ControlClient::new(ch)
}

fn job_json(name: &str) -> String {
    serde_json::to_string(&gpuctl_testkit::job(name).build()).unwrap()
}

/// Register a CPU-only node through `addr` (jobs are refused on a cluster
/// with no nodes); the answer's metadata.
async fn register_node(addr: &str) -> tonic::metadata::MetadataMap {
    let ch = tonic::transport::Endpoint::from_shared(addr.to_string())
        .unwrap()
        .connect_lazy();
    let mut n = gpuctl_proto::v1::node_service_client::NodeServiceClient::new(ch);
    n.register(pb::RegisterRequest {
        name: "n1".into(),
        address: "127.0.0.1".into(),
        agent_endpoint: "http://127.0.0.1:1".into(),
        cpu_milli: 8000,
        memory_bytes: 16 << 30,
        inventory: "simulated".into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .metadata()
    .clone()
}

/// Id of the replica that all running replicas agree leads, within LIMIT.
async fn agreed_leader(replicas: &[Replica]) -> u64 {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let leaders: Vec<u64> = replicas
            .iter()
            .filter_map(|r| r.server.as_ref())
            .map(|s| s.raft.shared.status().leader_id)
            .collect();
        if leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]) {
            let leader = leaders[0];
            let leads = replicas.iter().any(|r| {
                r.id == leader
                    && r.server
                        .as_ref()
                        .is_some_and(|s| s.raft.shared.status().is_leader())
            });
            if leads {
                return leader;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no agreed leader within {LIMIT:?}: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn job_names(addr: &str) -> Vec<String> {
    let r = client(addr)
        .await
        .get(pb::GetRequest {
            kind: "jobs".into(),
            name: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut names: Vec<String> = r
        .into_inner()
        .objects_json
        .iter()
        .map(|j| serde_json::from_str::<Job>(j).unwrap().metadata.name)
        .collect();
    names.sort();
    names
}

/// Apply through `addr`, retrying UNAVAILABLE (an election) for a bounded time.
async fn apply(addr: &str, name: &str) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let r = client(addr)
            .await
            .apply(pb::ApplyRequest {
                object_json: job_json(name),
                source: "<test>".into(),
                ..Default::default()
            })
            .await;
        match r {
            Ok(_) => return,
            Err(e) if e.code() == tonic::Code::AlreadyExists => return, // an earlier try took effect
            Err(e)
                if e.code() == tonic::Code::Unavailable
                    || e.code() == tonic::Code::DeadlineExceeded =>
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "apply {name} via {addr}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("apply {name} via {addr}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_and_catch_up() {
    let root = tempfile::tempdir().unwrap();
    let (mut replicas, peers) = cluster(root.path()).await;
    let leader = agreed_leader(&replicas).await;
    let follower = replicas
        .iter()
        .find(|r| r.id != leader)
        .unwrap()
        .addr
        .clone();
    register_node(&follower).await;

    // Writes through a follower are forwarded; reads anywhere see them.
    for i in 0..5 {
        apply(&follower, &format!("before-{i}")).await;
    }
    for r in &replicas {
        assert_eq!(
            job_names(&r.addr).await.len(),
            5,
            "replica {} is current",
            r.id
        );
    }

    // Stop the leader: the other two elect a new one and keep accepting writes.
    let old = replicas.iter().position(|r| r.id == leader).unwrap();
    replicas[old].server.take().unwrap().shutdown().await;
    let survivors: Vec<&Replica> = replicas.iter().filter(|r| r.server.is_some()).collect();
    for i in 0..5 {
        apply(&survivors[i % 2].addr, &format!("after-{i}")).await;
    }
    let new_leader = agreed_leader(&replicas).await;
    assert_ne!(new_leader, leader);

    // The old leader restarts on its data folder and catches up.
    let l = tokio::net::TcpListener::bind(replicas[old].addr.trim_start_matches("http://"))
        .await
        .unwrap();
    replicas[old].server = Some(start_one(replicas[old].id, &replicas[old].dir, l, &peers).await);
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let st = replicas[old]
            .server
            .as_ref()
            .unwrap()
            .raft
            .shared
            .read()
            .jobs
            .len();
        if st == 10 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "restarted replica has {st} of 10 jobs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let expect = job_names(&replicas[0].addr).await;
    assert_eq!(expect.len(), 10);
    for r in &replicas {
        assert_eq!(job_names(&r.addr).await, expect, "replica {} agrees", r.id);
    }
    for r in replicas.iter_mut() {
        r.server.take().unwrap().shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_off_replica_refuses_writes_while_majority_works() {
    let root = tempfile::tempdir().unwrap();
    let (mut replicas, _) = cluster(root.path()).await;
    let leader = agreed_leader(&replicas).await;
    register_node(&replicas[0].addr).await;
    // Every replica has applied the registration before the cut.
    let deadline = tokio::time::Instant::now() + LIMIT;
    while replicas.iter().any(|r| {
        r.server
            .as_ref()
            .unwrap()
            .raft
            .shared
            .read()
            .nodes
            .is_empty()
    }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "registration not replicated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Cut off a follower.
    let cut = replicas.iter().position(|r| r.id != leader).unwrap();
    replicas[cut]
        .server
        .as_ref()
        .unwrap()
        .transport
        .as_ref()
        .unwrap()
        .set_cut_off(true);

    let e = client(&replicas[cut].addr)
        .await
        .apply(pb::ApplyRequest {
            object_json: job_json("minority"),
            source: "<test>".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
    assert!(
        e.message().contains("cut off") || e.message().contains("no leader"),
        "{}",
        e.message()
    );

    let majority: Vec<String> = replicas
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != cut)
        .map(|(_, r)| r.addr.clone())
        .collect();
    for (i, addr) in majority.iter().enumerate() {
        apply(addr, &format!("majority-{i}")).await;
    }
    assert_eq!(
        job_names(&majority[0]).await,
        vec!["majority-0", "majority-1"]
    );
    // The cut-off replica did not take the refused write.
    assert!(!replicas[cut]
        .server
        .as_ref()
        .unwrap()
        .raft
        .shared
        .read()
        .jobs
        .contains_key("minority"));

    // Heal: it catches up, and the leader it disrupted nothing (pre-vote).
    replicas[cut]
        .server
        .as_ref()
        .unwrap()
        .transport
        .as_ref()
        .unwrap()
        .set_cut_off(false);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while replicas[cut]
        .server
        .as_ref()
        .unwrap()
        .raft
        .shared
        .read()
        .jobs
        .len()
        != 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "healed replica did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        job_names(&replicas[cut].addr).await,
        vec!["majority-0", "majority-1"]
    );
    for r in replicas.iter_mut() {
        r.server.take().unwrap().shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_and_remove_a_replica() {
    let root = tempfile::tempdir().unwrap();
    let (mut replicas, mut peers) = cluster(root.path()).await;
    let leader = agreed_leader(&replicas).await;
    let follower = replicas
        .iter()
        .find(|r| r.id != leader)
        .unwrap()
        .addr
        .clone();
    register_node(&follower).await;
    for i in 0..3 {
        apply(&follower, &format!("early-{i}")).await;
    }

    // A fourth replica starts empty with --join, and is added through a follower.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr4 = format!("http://{}", l.local_addr().unwrap());
    peers.insert(4, addr4.clone());
    let dir4 = root.path().join("r4");
    let s4 = start_opts(4, &dir4, l, &peers, true).await;
    assert_eq!(
        s4.raft.shared.status().voters,
        Vec::<u64>::new(),
        "a joining replica starts with no configuration"
    );
    replicas.push(Replica {
        id: 4,
        dir: dir4,
        addr: addr4.clone(),
        server: Some(s4),
    });
    let st = client(&follower)
        .await
        .add_peer(pb::AddPeerRequest {
            id: 4,
            address: addr4.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(st.voters.contains(&4), "{st:?}");
    assert_eq!(st.addresses.get(&4), Some(&addr4));
    // It catches up (by snapshot: the log starts after the bootstrap snapshot).
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let s4 = replicas[3].server.as_ref().unwrap();
        if s4.raft.shared.read().jobs.len() == 3 && s4.raft.shared.status().voters.len() == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new replica did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Adding it again is refused.
    let e = client(&follower)
        .await
        .add_peer(pb::AddPeerRequest {
            id: 4,
            address: addr4.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists);

    // Remove a follower other than the new one; writes go on with 3 voters.
    let gone = replicas
        .iter()
        .find(|r| r.id != leader && r.id != 4)
        .unwrap()
        .id;
    let st = client(&replicas[3].addr)
        .await
        .remove_peer(pb::RemovePeerRequest { id: gone })
        .await
        .unwrap()
        .into_inner();
    assert!(!st.voters.contains(&gone), "{st:?}");
    let e = client(&replicas[3].addr)
        .await
        .remove_peer(pb::RemovePeerRequest { id: 99 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let idx = replicas.iter().position(|r| r.id == gone).unwrap();
    replicas[idx].server.take().unwrap().shutdown().await;
    apply(&replicas[3].addr, "after-removal").await;
    let names = job_names(&replicas[3].addr).await;
    assert_eq!(
        names,
        vec!["after-removal", "early-0", "early-1", "early-2"]
    );
    for r in replicas.iter_mut() {
        if let Some(s) = r.server.take() {
            s.shutdown().await;
        }
    }
}

/// Whether `addr` answers `get job NAME` with the job.
async fn has_job(addr: &str, name: &str) -> bool {
    let r = client(addr)
        .await
        .get(pb::GetRequest {
            kind: "job".into(),
            name: name.into(),
            ..Default::default()
        })
        .await;
    match r {
        Ok(r) => r.into_inner().objects_json.len() == 1,
        Err(e) if e.code() == tonic::Code::NotFound => false,
        Err(e) => panic!("get job {name} via {addr}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_after_an_acknowledged_write_sees_it_on_every_replica() {
    let root = tempfile::tempdir().unwrap();
    let (mut replicas, _) = cluster(root.path()).await;
    agreed_leader(&replicas).await;
    register_node(&replicas[0].addr).await;
    let addrs: Vec<String> = replicas.iter().map(|r| r.addr.clone()).collect();
    // Sixteen writers at once, through every replica (the leader's writes
    // skip the read barrier, the followers' are forwarded); each reads its
    // job back from the two other replicas as soon as its write is
    // acknowledged, so their read barriers are asked together and batched.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..16usize {
        let addrs = addrs.clone();
        writers.spawn(async move {
            for i in 0..4 {
                let name = format!("w{w:02}-{i}");
                apply(&addrs[w % 3], &name).await;
                for other in [(w + 1) % 3, (w + 2) % 3] {
                    assert!(
                        has_job(&addrs[other], &name).await,
                        "{name} acknowledged through {} but not seen by {}",
                        addrs[w % 3],
                        addrs[other]
                    );
                }
            }
        });
    }
    while let Some(r) = writers.join_next().await {
        r.unwrap();
    }
    for r in &replicas {
        assert_eq!(job_names(&r.addr).await.len(), 64, "replica {}", r.id);
    }
    for r in replicas.iter_mut() {
        r.server.take().unwrap().shutdown().await;
    }
}

/// Every answer of a follower names the leader's URL (`gpuctl-leader`), so
/// that clients given several replicas send their writes to it; the
/// leader's answers carry no such header.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_followers_answers_name_the_leader() {
    let root = tempfile::tempdir().unwrap();
    let (mut replicas, peers) = cluster(root.path()).await;
    let leader = agreed_leader(&replicas).await;
    for r in &replicas {
        let answer = client(&r.addr)
            .await
            .cluster_status(pb::ClusterStatusRequest {})
            .await
            .unwrap();
        let named = answer
            .metadata()
            .get("gpuctl-leader")
            .map(|v| v.to_str().unwrap().to_string());
        if r.id == leader {
            assert_eq!(named, None, "the leader names no other");
        } else {
            assert_eq!(
                named.as_deref(),
                Some(peers[&leader].as_str()),
                "replica {}",
                r.id
            );
        }
    }
    // The node service's answers too (a node's reports are writes).
    let follower = replicas.iter().find(|r| r.id != leader).unwrap();
    let answer = register_node(&follower.addr).await;
    assert_eq!(
        answer.get("gpuctl-leader").unwrap().to_str().unwrap(),
        peers[&leader]
    );
    for r in replicas.iter_mut() {
        r.server.take().unwrap().shutdown().await;
    }
}
