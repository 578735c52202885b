//! Wires the parts of one scheduler replica together. Takes its listeners
//! and its shutdown signal from outside, so tests run it on `127.0.0.1:0`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gpuctl_proto::v1::control_server::ControlServer;
use gpuctl_proto::v1::node_service_server::NodeServiceServer;
use gpuctl_security::tls::{ClientAuth, Tls};
use tokio::net::TcpListener;

use crate::api::leader_hint::LeaderHint;
use crate::api::raft_peer::RaftPeerService;
use crate::api::{Api, Peers, ServiceOptions};
use crate::controllers::liveness::Cadence;
use crate::controllers::{runner, ControllerOptions, Heartbeats, Loads};
use crate::metrics::Metrics;
use crate::raft::{RaftHandle, RaftOptions, RaftStorage, Transport};
use gpuctl_proto::v1::raft_server::RaftServer;

/// Everything a replica needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: u64,
    /// Every replica of the cluster (id → gRPC URL), this one included;
    /// empty for a single replica.
    pub peers: std::collections::BTreeMap<u64, String>,
    pub data_dir: PathBuf,
    pub raft: RaftOptions,
    pub service: ServiceOptions,
    pub controller: ControllerOptions,
    /// TLS for the gRPC port and for calls to peers and node daemons
    /// (presenting this replica's certificate); None: plaintext.
    pub tls: Option<Tls>,
}

/// A started replica; [`Server::wait_leader`] tells when it accepts writes.
pub struct Server {
    pub raft: RaftHandle,
    /// Peer traffic of this replica (None for a single replica); fault
    /// tests cut it off to partition the replica.
    pub transport: Option<Transport>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The services' shared handle, for the web UI.
    api: Api,
    raft_thread: Option<std::thread::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Server {
    /// Open storage, start Raft, the controllers and both servers.
    pub async fn start(
        cfg: Config,
        grpc: TcpListener,
        metrics_listener: TcpListener,
    ) -> anyhow::Result<Server> {
        let metrics = Metrics::new();
        let StartedRaft {
            raft,
            thread,
            transport,
            addresses,
        } = start_raft(&cfg, &metrics)?;
        let peers = Arc::new(
            Peers::new(cfg.id, &addresses, transport.clone(), cfg.tls.clone())
                .map_err(anyhow::Error::msg)?,
        );
        let heartbeats = Arc::new(Heartbeats::new(Cadence {
            interval: cfg.service.heartbeat_interval,
            timeout: cfg.controller.node_timeout,
            budget: cfg.service.heartbeats_per_second,
        }));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let loads = Arc::new(Loads::default());
        let wakeups = Arc::new(crate::api::node_watch::NodeWakeups::default());
        let api = Api {
            raft: raft.clone(),
            heartbeats: heartbeats.clone(),
            opts: cfg.service.clone(),
            stop: stop_rx.clone(),
            peers: peers.clone(),
            loads: loads.clone(),
            audit_log: Arc::new(crate::api::audit::AuditLog::new(&cfg.data_dir)),
            wakeups: wakeups.clone(),
            explainer: Arc::default(),
            job_json: Arc::default(),
        };
        let ui_api = api.clone();
        let metrics_tls = match &cfg.tls {
            Some(t) if !cfg.service.metrics_insecure => Some(t.acceptor(None)?),
            _ => None,
        };
        let tasks = vec![
            tokio::spawn(crate::api::node_watch::follow(
                raft.shared.clone(),
                wakeups,
                stop_rx.clone(),
            )),
            serve_grpc(api, grpc, cfg.tls.as_ref(), stop_rx.clone())?,
            serve_metrics(
                metrics_listener,
                &metrics,
                metrics_tls,
                raft.clone(),
                stop_rx.clone(),
            ),
            follow_membership(&raft, peers, stop_rx.clone()),
            tokio::spawn(runner::run_endpoints(raft.clone(), loads, stop_rx.clone())),
            tokio::spawn(runner::run_gc(raft.clone(), stop_rx.clone())),
            tokio::spawn(runner::run(
                raft.clone(),
                heartbeats,
                cfg.controller.clone(),
                stop_rx,
            )),
        ];
        Ok(Server {
            raft,
            transport,
            tasks,
            api: ui_api,
            raft_thread: Some(thread),
            stop,
        })
    }

    /// Serve the web UI ([`crate::web`]) on `listener` until shutdown, with
    /// TLS when `tls` is given (the gRPC port's certificate).
    pub fn serve_ui(&mut self, listener: TcpListener, tls: Option<&Tls>) -> anyhow::Result<()> {
        let acceptor = tls.map(|t| t.acceptor(None)).transpose()?;
        let stop = self.stop.subscribe();
        self.tasks.push(crate::web::serve(
            self.api.clone(),
            listener,
            acceptor,
            stop,
        ));
        Ok(())
    }

    /// Wait until this replica knows a leader (bounded).
    pub async fn wait_leader(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.raft.shared.status().leader_id == 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Whether the Raft thread is still running (it stops only on shutdown
    /// or when storage fails or raft-rs panics).
    pub fn raft_alive(&self) -> bool {
        self.raft_thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stop serving, let Raft persist what it holds, and join everything.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        self.raft.shutdown();
        if let Some(t) = self.raft_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// A started Raft thread and what the rest of the replica needs from it.
struct StartedRaft {
    raft: RaftHandle,
    thread: std::thread::JoinHandle<()>,
    transport: Option<Transport>,
    /// The replicas (id → gRPC URL) as this replica starts.
    addresses: BTreeMap<u64, String>,
}

/// Recover the state from storage and start the Raft thread with its peer
/// transport.
fn start_raft(cfg: &Config, metrics: &Metrics) -> anyhow::Result<StartedRaft> {
    let (storage, rec) = RaftStorage::open(&cfg.data_dir)?;
    let state = rec.state()?;
    tracing::info!(
        "recovered {} job(s), {} node(s), {} queue(s), applied index {} from {}",
        state.jobs.len(),
        state.nodes.len(),
        state.queues.len(),
        rec.applied,
        cfg.data_dir.display()
    );
    let mut ropts = cfg.raft.clone();
    ropts.id = cfg.id;
    if !cfg.peers.is_empty() {
        anyhow::ensure!(
            cfg.peers.contains_key(&cfg.id),
            "--peers must list this replica's own id {} too",
            cfg.id
        );
        ropts.initial_voters = cfg.peers.keys().copied().collect();
    }
    // Replica addresses: those agreed by membership changes win over
    // the command line, which only seeds a new cluster.
    let mut addresses = storage.peer_addresses()?;
    if addresses.is_empty() && !cfg.peers.is_empty() {
        addresses = cfg.peers.clone();
        storage.set_peer_addresses(&addresses)?;
    }
    // The transport reports unreachable peers to Raft, which starts below.
    let handle_cell: Arc<std::sync::OnceLock<RaftHandle>> = Arc::new(std::sync::OnceLock::new());
    let cell = handle_cell.clone();
    let transport = Some(Transport::start(
        cfg.id,
        &addresses,
        Arc::new(move |id| {
            if let Some(h) = cell.get() {
                h.unreachable(id);
            }
        }),
        cfg.tls.clone(),
    ));
    let (raft, thread) = crate::raft::start(
        ropts,
        storage,
        state,
        rec.applied,
        metrics.clone(),
        transport.clone(),
    )?;
    let _ = handle_cell.set(raft.clone());
    Ok(StartedRaft {
        raft,
        thread,
        transport,
        addresses,
    })
}

/// Largest Raft peer message accepted (a snapshot is one message).
const MAX_PEER_MESSAGE: usize = 1 << 30;

/// Serve the `Control`, `NodeService` and Raft peer services until `stop`;
/// with TLS, client certificates from the CA are accepted (and the Raft
/// peer service requires one).
fn serve_grpc(
    api: Api,
    grpc: TcpListener,
    tls: Option<&Tls>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // Small RPCs: without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms to a reply.
    let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = tls {
        builder = builder.tls_config(t.server_config(ClientAuth::Optional)?)?;
    }
    // A follower's every answer names the leader (`api/leader_hint.rs`).
    let hint = LeaderHint::new(api.raft.clone(), tls.is_some());
    let router = builder
        .layer(tower::util::MapResponseLayer::new(
            move |r: tonic::codegen::http::Response<tonic::body::Body>| hint.add(r),
        ))
        .add_service(ControlServer::new(api.clone()))
        .add_service(NodeServiceServer::new(api.clone()))
        .add_service(
            RaftServer::new(RaftPeerService {
                api,
                require_client_cert: tls.is_some(),
            })
            // A snapshot travels as one message: the whole state, which is
            // larger than tonic's default 4 MiB limit from a few thousand
            // jobs on. Only the other replicas may call this service.
            .max_decoding_message_size(MAX_PEER_MESSAGE),
        );
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.changed().await;
        };
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            tracing::error!("gRPC server failed: {e}");
        }
    }))
}

/// Serve `/metrics`, and `/healthz` (healthy while a leader is known),
/// until `stop`; over HTTPS when `tls` is given.
fn serve_metrics(
    listener: TcpListener,
    metrics: &Metrics,
    tls: Option<tokio_rustls::TlsAcceptor>,
    raft: RaftHandle,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let health: gpuctl_telemetry::HealthCheck = Arc::new(move || {
        let st = raft.shared.status();
        if st.leader_id == 0 {
            Err(format!(
                "replica {} has no leader (term {})",
                st.id, st.term
            ))
        } else {
            Ok(())
        }
    });
    let registry = metrics.registry.clone();
    tokio::spawn(async move {
        gpuctl_telemetry::serve_with(listener, registry, health, tls, async move {
            let _ = stop.changed().await;
        })
        .await;
    })
}

/// Follow membership changes: who to send Raft traffic and forwards to.
fn follow_membership(
    raft: &RaftHandle,
    peers: Arc<Peers>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut members = raft.shared.members.subscribe();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = members.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
            let addrs = members.borrow_and_update().clone();
            if let Err(e) = peers.set(&addrs) {
                tracing::error!("applying the new membership: {e}");
            }
        }
    })
}
