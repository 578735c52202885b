//! The NodeAgent service with TLS on: it registers an `https://` endpoint,
//! serves callers presenting a certificate from the cluster CA, and
//! refuses a client without one at the handshake.

use std::sync::Arc;
use std::time::Duration;

use gpuctl_node::inventory::SimulatedInventory;
use gpuctl_node::{Config, Node};
use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::node_agent_client::NodeAgentClient;
use gpuctl_security::ca;
use gpuctl_security::tls::{self, Tls, TlsFiles};

async fn read_logs(url: &str, tls: &Tls) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let ep = tls::endpoint(url, Some(tls))?.connect_timeout(Duration::from_secs(3));
    let ch = tokio::time::timeout(Duration::from_secs(5), ep.connect())
        .await
        .map_err(|_| "connect timed out")??;
    let mut client = NodeAgentClient::new(ch);
    let call = client.read_logs(pb::ReadLogsRequest {
        job: "nope".into(),
        task_index: 0,
        attempt: 1,
        follow: false,
    });
    match tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .map_err(|_| "call timed out")?
    {
        Ok(_) => Ok(()),
        Err(s) => Err(Box::new(s)),
    }
}

#[tokio::test]
async fn the_agent_requires_a_client_certificate_from_the_ca() {
    let work = tempfile::tempdir().unwrap();
    let files = ca::ensure_dev(&work.path().join("tls")).unwrap();
    let tls = files.tls_files().load().unwrap();
    let inventory =
        Arc::new(SimulatedInventory::from_specs("node-1", &["1xA100-80GB".to_string()]).unwrap());
    let config = Config {
        name: "node-1".into(),
        // Nothing listens there: the agent serves all the same.
        servers: vec!["127.0.0.1:1".into()],
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        address: None,
        work_dir: work.path().join("work"),
        artifact_dir: None,
        artifact_sweep: None,
        cpu_milli: 1000,
        memory_bytes: 1 << 30,
        labels: Default::default(),
        cordon_after_unhealthy_gpus: 0,
        heartbeat_interval: Duration::from_millis(100),
        kill_grace: Duration::from_secs(1),
        task_ports: Default::default(),
        fence_timeout: Duration::from_secs(7),
        supervisor_exe: Some(env!("CARGO_BIN_EXE_gpu-node").into()),
        ready_file: None,
        tls: Some(tls.clone()),
        token_file: None,
        join_token_file: None,
        replica_ca: None,
        metrics_insecure: false,
        isolation: Default::default(),
    };
    let node = Node::bind(config, inventory).await.unwrap();
    let url = node.identity().agent_endpoint.clone();
    assert_eq!(url, format!("https://{}", node.agent_addr()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(node.run(async move {
        let _ = stop_rx.await;
    }));

    // With the cluster certificate, the call reaches the service (which
    // answers for the unknown job).
    let e = read_logs(&url, &tls).await.unwrap_err();
    let s = e
        .downcast_ref::<tonic::Status>()
        .expect("a status from the service");
    assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");

    // Trusting the CA but presenting no certificate: refused, and said so.
    let anon = TlsFiles {
        ca: Some(files.ca.clone()),
        ..TlsFiles::default()
    }
    .load()
    .unwrap();
    let e = read_logs(&url, &anon).await.unwrap_err();
    let e: &(dyn std::error::Error + 'static) = &*e;
    assert_eq!(
        tls::diagnose(e, &url, anon.ca_path()).await.as_deref(),
        Some("the server requires a client certificate")
    );
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_tls_node_told_a_plaintext_scheduler_says_so_in_one_line() {
    let work = tempfile::tempdir().unwrap();
    let tls = ca::ensure_dev(&work.path().join("tls"))
        .unwrap()
        .tls_files()
        .load()
        .unwrap();
    // A plaintext gRPC server where the node expects TLS.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::node_agent_server::NodeAgentServer::new(Silent))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    let servers = gpuctl_node::agent::Servers::new(&[addr.to_string()], Some(&tls)).unwrap();
    let (call, mut client) = servers.client();
    let s = client
        .heartbeat(pb::HeartbeatRequest::default())
        .await
        .expect_err("no TLS there");
    let why = servers.why(call.index, &s);
    assert!(why.contains("does not speak TLS"), "{why}");
}

/// A NodeAgent with no logs, served plaintext.
struct Silent;

#[tonic::async_trait]
impl pb::node_agent_server::NodeAgent for Silent {
    type ReadLogsStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::LogChunk, tonic::Status>>;
    async fn read_logs(
        &self,
        _r: tonic::Request<pb::ReadLogsRequest>,
    ) -> Result<tonic::Response<Self::ReadLogsStream>, tonic::Status> {
        Err(tonic::Status::not_found("no logs"))
    }
}
