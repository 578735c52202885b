//! The scheduler with TLS on: three replicas elect a leader and forward a
//! write over mutual TLS; the Raft peer service refuses a caller without a
//! client certificate; plaintext and wrong-CA clients get one clear line.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::control_client::ControlClient;
use gpuctl_proto::v1::node_service_client::NodeServiceClient;
use gpuctl_proto::v1::raft_client::RaftClient;
use gpuctl_scheduler::api::ServiceOptions;
use gpuctl_scheduler::controllers::ControllerOptions;
use gpuctl_scheduler::raft::RaftOptions;
use gpuctl_scheduler::server::{Config, Server};
use gpuctl_security::ca;
use gpuctl_security::tls::{self, Tls, TlsFiles};

const LIMIT: Duration = Duration::from_secs(20);

async fn start(
    id: u64,
    dir: &Path,
    grpc: tokio::net::TcpListener,
    peers: &BTreeMap<u64, String>,
    tls: &Tls,
) -> Server {
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = Config {
        id,
        peers: peers.clone(),
        data_dir: dir.to_path_buf(),
        raft: RaftOptions {
            tick: Duration::from_millis(50),
            ..Default::default()
        },
        service: ServiceOptions::default(),
        controller: ControllerOptions {
            node_timeout: Duration::from_secs(60),
            resync: Duration::from_millis(100),
        },
        tls: Some(tls.clone()),
    };
    Server::start(cfg, grpc, metrics).await.unwrap()
}

fn ca_only(files: &ca::DevFiles) -> Tls {
    TlsFiles {
        ca: Some(files.ca.clone()),
        ..TlsFiles::default()
    }
    .load()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_talk_over_mutual_tls_and_refuse_peers_without_a_certificate() {
    let root = tempfile::tempdir().unwrap();
    let files = ca::ensure_dev(&root.path().join("tls")).unwrap();
    let tls = files.tls_files().load().unwrap();
    // `--peers 1=127.0.0.1:PORT` as the flag gives it (http://), made https.
    let mut listeners = Vec::new();
    let mut peers = BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(id, format!("http://{}", l.local_addr().unwrap()));
        listeners.push((id, l));
    }
    let mut servers = Vec::new();
    for (id, l) in listeners {
        servers.push(start(id, &root.path().join(format!("r{id}")), l, &peers, &tls).await);
    }
    for s in &servers {
        assert!(s.wait_leader(LIMIT).await, "a leader elected over TLS");
    }
    let leader = servers[0].raft.shared.status().leader_id;
    let follower = (1..=3u64).find(|id| *id != leader).unwrap();
    let follower_url = tls::url(&peers[&follower], true);

    // A write through a follower is forwarded to the leader over TLS.
    let ch = tls::endpoint(&follower_url, Some(&tls))
        .unwrap()
        .timeout(LIMIT)
        .connect_lazy();
    NodeServiceClient::new(ch.clone())
        .register(pb::RegisterRequest {
            name: "n1".into(),
            address: "127.0.0.1".into(),
            agent_endpoint: "https://127.0.0.1:1".into(),
            cpu_milli: 8000,
            memory_bytes: 16 << 30,
            inventory: "simulated".into(),
            ..Default::default()
        })
        .await
        .expect("a registration forwarded to the leader");
    let got = ControlClient::new(ch.clone())
        .get(pb::GetRequest {
            kind: "nodes".into(),
            name: "n1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.objects_json.len(), 1);

    // The peer service with the cluster certificate: accepted.
    RaftClient::new(ch)
        .step(pb::RaftBatch {
            from: follower,
            messages: vec![],
        })
        .await
        .expect("a replica's certificate is accepted");
    // A TLS client that trusts the CA but presents no certificate: the
    // Control API answers, the peer service refuses.
    let anon = tls::endpoint(&follower_url, Some(&ca_only(&files)))
        .unwrap()
        .timeout(LIMIT)
        .connect_lazy();
    let status = ControlClient::new(anon.clone())
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .expect("Control needs no client certificate")
        .into_inner();
    // The replicas' addresses, as reported, carry the scheme they speak.
    assert_eq!(status.addresses.len(), 3);
    for (id, url) in &status.addresses {
        assert_eq!(url, &tls::url(&peers[id], true));
    }
    let refused = RaftClient::new(anon.clone())
        .step(pb::RaftBatch {
            from: 9,
            messages: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        "raft peer calls need a client certificate from the cluster CA"
    );
    let refused = RaftClient::new(anon)
        .forward(pb::ForwardRequest {
            envelope: b"{}".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // A plaintext client is told the port speaks TLS.
    let plain_url = tls::url(&follower_url, false);
    let err = ControlClient::new(
        tls::endpoint(&plain_url, None)
            .unwrap()
            .timeout(Duration::from_secs(5))
            .connect_lazy(),
    )
    .cluster_status(pb::ClusterStatusRequest {})
    .await
    .unwrap_err();
    let addr = plain_url.trim_start_matches("http://");
    assert_eq!(
        tls::diagnose(&err, &plain_url, None).await.as_deref(),
        Some(
            format!(
                "the server at {addr} speaks TLS: a plaintext client cannot talk to it; drop --insecure and give --ca"
            )
            .as_str()
        )
    );
    for s in servers {
        s.shutdown().await;
    }
}
