//! `gpu-node`, gpuctl's node daemon: one per host. It reports the host's GPUs
//! to the scheduler, runs the tasks the scheduler assigns to it as process
//! groups, and serves their logs and the host's metrics.
//!
//! ```text
//!                 Register / Heartbeat(GPU metrics)
//!   inventory ──► agent::{register_until_ok, heartbeat_loop} ─────────────► scheduler
//!   (nvml | sim)                                                            NodeService
//!       ▲        WatchAssignments: full desired set (level-triggered)           │
//!       │busy    agent::watch_loop ◄────────────────────────────────────────────┘
//!       │             │ Event::Desired                                          ▲
//!       │             ▼                                                          │
//!   agent::Reconciler ── plan() ──► runtime::start (env::task_env) ─► process group
//!       │  local task table   ▲             │ stdout+stderr                 │
//!       │                     └ Event::Exited ◄── waiter ◄───── exit ─────────┘
//!       │ ReportTask(Running/Succeeded/Failed)      ▼
//!       └──► agent::outbox_loop (ordered per task, retried) ┘  <work-dir>/logs/<job>/task-I-attempt-A.log
//!                                                               │
//!   scheduler (log proxy) ──NodeAgent.ReadLogs──► logs::LogService
//!   Prometheus ──GET /metrics, /healthz──► gpuctl_telemetry::serve ─► metrics::Metrics
//!                                          (GPU gauges sampled on scrape)
//! ```
//!
//! Assignments from the scheduler become typed [`assignment::Assignment`]s
//! as they arrive (in `agent::watch_loop`), and reports stay
//! [`assignment::TaskReport`]s until the outbox sends them, so the daemon
//! works with a `TaskPhase`, never a phase string.
//!
//! Identity: every `NodeService` call carries this node's credential
//! (`authorization: Bearer`, from `--token-file`), obtained once by trading
//! a join token through `NodeService.Join` ([`agent::credentials`]). A task
//! whose assignment names an owner runs as that owner's Unix user, or is
//! refused with the rule it breaks ([`owner`]); its log, folder and step
//! files are that user's.
//!
//! [`hollow`] runs many simulated nodes in one process (`--simulate N`):
//! the same agent loops, with tasks that run as timers.
//!
//! The pure parts are [`env::task_env`] (what a task sees), [`agent::plan()`]
//! (desired vs. local → actions) and the inventory parsers; the rest is the
//! I/O shell around them. [`Node`] ties it together; `main.rs` only parses
//! flags.

pub mod agent;
pub mod assignment;
pub mod env;
pub mod hollow;
pub mod inventory;
pub mod logs;
pub mod metrics;
pub mod owner;
pub mod runtime;
pub mod secrets;
pub mod steps;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gpuctl_proto::v1::node_agent_server::NodeAgentServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use agent::{Event, NodeIdentity, Reconciler, ReconcilerConfig, Servers};
use inventory::GpuInventory;
use logs::{LiveTasks, LogService};
use metrics::Metrics;

/// How the daemon runs (the flags of `gpu-node`, parsed).
#[derive(Debug, Clone)]
pub struct Config {
    /// Node name, unique in the cluster.
    pub name: String,
    /// Scheduler replicas' gRPC URLs, tried in order.
    pub servers: Vec<String>,
    /// Where the NodeAgent (log) service listens.
    pub listen: SocketAddr,
    /// Where `/metrics` and `/healthz` are served.
    pub metrics_listen: SocketAddr,
    /// Host gang members use as MASTER_ADDR; `None`: the IP of `listen` (or,
    /// for a wildcard listen address, the IP this host reaches the scheduler from).
    pub address: Option<String>,
    /// Holds `logs/`.
    pub work_dir: PathBuf,
    /// The workflow artifact store's folder; `None`: `<work_dir>/artifacts`.
    pub artifact_dir: Option<PathBuf>,
    /// How often the artifacts of deleted workflows are looked for and
    /// removed; `None`: never.
    pub artifact_sweep: Option<Duration>,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub labels: BTreeMap<String, String>,
    /// Used until the scheduler names its own in `RegisterResponse`.
    pub heartbeat_interval: Duration,
    /// SIGTERM → SIGKILL delay when stopping a task.
    pub kill_grace: Duration,
    /// Ports for serving tasks' `$PORT`.
    pub task_ports: crate::runtime::PortRange,
    /// Written (atomically) after the first successful `Register`.
    pub ready_file: Option<PathBuf>,
    /// This node's credential (mode 0600); `None`: `<work_dir>/node.token`.
    pub token_file: Option<PathBuf>,
    /// A join token, traded through `NodeService.Join` for the credential
    /// when the token file holds none (or the scheduler refuses it).
    /// `None` and no credential: calls carry no token.
    pub join_token_file: Option<PathBuf>,
    /// TLS: calls to the scheduler present this node's certificate, and
    /// the NodeAgent service serves TLS and requires a client certificate
    /// from the CA. None: plaintext.
    pub tls: Option<gpuctl_security::tls::Tls>,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the work folder {path:?}: {source}")]
    WorkDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Agent(#[from] agent::AgentError),
    #[error(transparent)]
    Credentials(#[from] agent::CredentialError),
    #[error("setting up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("TLS for the NodeAgent service: {0}")]
    Tls(String),
    #[error("--simulate: {0}")]
    Fleet(String),
}

/// A daemon with its listeners bound, ready to [`Node::run`].
pub struct Node {
    config: Config,
    inventory: Arc<dyn GpuInventory>,
    agent_listener: TcpListener,
    metrics_listener: TcpListener,
    agent_addr: SocketAddr,
    metrics_addr: SocketAddr,
    identity: NodeIdentity,
    servers: Arc<Servers>,
    metrics: Metrics,
    /// The NodeAgent service's server, with TLS (client certificates
    /// required) when configured.
    agent_server: tonic::transport::Server,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.config.name)
            .field("agent_addr", &self.agent_addr)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The local IP this host uses to reach `server` (a UDP "connect" sends
/// nothing); loopback when that cannot be found.
fn outbound_ip(server: &str) -> IpAddr {
    let authority = server
        .split("://")
        .nth(1)
        .unwrap_or(server)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let found = (|| {
        use std::net::ToSocketAddrs;
        let target = authority.to_socket_addrs().ok()?.next()?;
        let bind: SocketAddr = if target.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = std::net::UdpSocket::bind(bind).ok()?;
        sock.connect(target).ok()?;
        Some(sock.local_addr().ok()?.ip())
    })();
    found.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

impl Node {
    /// Bind both listeners and prepare the work folder; nothing runs yet.
    pub async fn bind(config: Config, inventory: Arc<dyn GpuInventory>) -> Result<Node, NodeError> {
        let logs = config.work_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|source| NodeError::WorkDir {
            path: logs.clone(),
            source,
        })?;
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Bind { what, addr, source })
        };
        let agent_listener = bind("--listen", config.listen).await?;
        let metrics_listener = bind("--metrics-listen", config.metrics_listen).await?;
        let local = |l: &TcpListener, addr: SocketAddr| {
            l.local_addr().map_err(|source| NodeError::Bind {
                what: "local address",
                addr,
                source,
            })
        };
        let agent_addr = local(&agent_listener, config.listen)?;
        let metrics_addr = local(&metrics_listener, config.metrics_listen)?;
        let credentials = agent::Credentials::load(
            config
                .token_file
                .clone()
                .unwrap_or_else(|| config.work_dir.join("node.token")),
            config.join_token_file.as_deref(),
        )?;
        let servers = Arc::new(
            Servers::new(&config.servers, config.tls.as_ref())?
                .with_credentials(&config.name, credentials),
        );
        let mut agent_server = tonic::transport::Server::builder();
        if let Some(t) = &config.tls {
            let cfg = t
                .server_config(gpuctl_security::tls::ClientAuth::Required)
                .map_err(|e| NodeError::Tls(e.to_string()))?;
            agent_server = agent_server
                .tls_config(cfg)
                .map_err(|e| NodeError::Tls(e.to_string()))?;
        }
        let endpoint_ip = if agent_addr.ip().is_unspecified() {
            outbound_ip(&config.servers[0])
        } else {
            agent_addr.ip()
        };
        let address = config
            .address
            .clone()
            .unwrap_or_else(|| endpoint_ip.to_string());
        let endpoint_host = if agent_addr.ip().is_unspecified() {
            address.clone()
        } else {
            agent_addr.ip().to_string()
        };
        let identity = NodeIdentity {
            name: config.name.clone(),
            address,
            agent_endpoint: gpuctl_security::tls::url(
                &host_port(&endpoint_host, agent_addr.port()),
                config.tls.is_some(),
            ),
            cpu_milli: config.cpu_milli,
            memory_bytes: config.memory_bytes,
            labels: config.labels.clone(),
        };
        let leftovers = runtime::PidDir::new(config.work_dir.join("pids")).kill_leftovers();
        if leftovers > 0 {
            tracing::warn!(
                "killed {leftovers} task process group(s) a previous run of this daemon left running"
            );
        }
        // The folders of tasks a previous run started (they are gone now).
        let _ = std::fs::remove_dir_all(config.work_dir.join("tasks"));
        let metrics = Metrics::new(inventory.clone())?;
        Ok(Node {
            config,
            inventory,
            agent_listener,
            metrics_listener,
            agent_addr,
            metrics_addr,
            identity,
            servers,
            metrics,
            agent_server,
        })
    }

    /// Where the NodeAgent service listens.
    pub fn agent_addr(&self) -> SocketAddr {
        self.agent_addr
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// What `Register` reports about this node.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// Run until `shutdown` resolves; then stop every task's process group
    /// (SIGTERM, SIGKILL after the grace period), send what reports can be
    /// sent within a short bound, and return.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let live = LiveTasks::default();
        let logs_dir = self.config.work_dir.join("logs");
        let artifact_dir = self
            .config
            .artifact_dir
            .clone()
            .unwrap_or_else(|| self.config.work_dir.join("artifacts"));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        // Built before the listeners move out of `self`; spawned below.
        let health = self.health();
        let control_loops = self.control_loops(artifact_dir.clone(), events_tx.clone());

        let mut agent_server = self.agent_server;
        let grpc = tokio::spawn(
            agent_server
                .add_service(NodeAgentServer::new(LogService::new(
                    logs_dir.clone(),
                    live.clone(),
                )))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(self.agent_listener)
                        .with_nodelay(Some(true)),
                    stopped(stop_rx.clone()),
                ),
        );
        let httpd = tokio::spawn(gpuctl_telemetry::serve(
            self.metrics_listener,
            self.metrics.registry.clone(),
            health,
            stopped(stop_rx.clone()),
        ));

        // No task of an earlier run is kept, so neither are its secrets.
        let secrets_dir = self.config.work_dir.join("secrets");
        secrets::remove_all(&secrets_dir);
        let reconciler = tokio::spawn(
            Reconciler::new(
                ReconcilerConfig {
                    node: self.config.name.clone(),
                    logs_dir,
                    kill_grace: self.config.kill_grace,
                    ports: self.config.task_ports,
                    pid_dir: self.config.work_dir.join("pids"),
                    steps_dir: self.config.work_dir.join("steps"),
                    tasks_dir: self.config.work_dir.join("tasks"),
                    artifact_dir,
                    secrets_dir,
                },
                self.inventory.clone(),
                self.metrics.clone(),
                live,
                reports_tx,
                events_tx.clone(),
            )
            .run(events_rx),
        );
        let outbox = tokio::spawn(agent::outbox_loop(self.servers.clone(), reports_rx));
        let control = tokio::spawn(control_loops);

        shutdown.await;
        tracing::info!("shutting down");
        control.abort();
        // The reconciler stops every process group and waits (bounded) for them.
        let _ = events_tx.send(Event::Shutdown);
        let _ = reconciler.await;
        // Reports of the tasks just stopped: best effort, bounded.
        if tokio::time::timeout(Duration::from_secs(2), outbox)
            .await
            .is_err()
        {
            tracing::warn!("scheduler unreachable: some task reports were not sent");
        }
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), grpc).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), httpd).await;
    }

    /// `/healthz`: unhealthy when the scheduler has not acknowledged a
    /// heartbeat for a few intervals (its tasks keep running; it just cannot
    /// be told).
    fn health(&self) -> gpuctl_telemetry::HealthCheck {
        let servers = self.servers.clone();
        let within = (self.config.heartbeat_interval * 5).max(Duration::from_secs(10));
        Arc::new(move || servers.contact.check(gpuctl_common::now_ms(), within))
    }

    /// Register (then write the ready file), and from then on heartbeat,
    /// watch assignments and sweep artifacts until aborted.
    fn control_loops(
        &self,
        artifact_dir: PathBuf,
        events: mpsc::UnboundedSender<Event>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let servers = self.servers.clone();
        let identity = self.identity.clone();
        let inventory = self.inventory.clone();
        let default_interval = self.config.heartbeat_interval;
        let sweep = self
            .config
            .artifact_sweep
            .map(|every| (artifact_dir, every));
        let ready = self.config.ready_file.clone().map(|path| {
            (
                path,
                serde_json::json!({
                    "name": self.config.name,
                    "agent": self.agent_addr.to_string(),
                    "metrics": self.metrics_addr.to_string(),
                    "pid": std::process::id(),
                    "inventory": self.inventory.kind(),
                }),
            )
        });
        async move {
            // With a join token and no credential yet: join before anything else.
            servers.join_until_ok().await;
            let interval =
                agent::register_until_ok(&servers, &identity, &inventory, default_interval).await;
            if let Some((path, doc)) = ready {
                if let Err(e) = write_atomically(&path, doc.to_string().as_bytes()) {
                    tracing::error!("cannot write the ready file {path:?}: {e}");
                    eprintln!("gpu-node: cannot write the ready file {path:?}: {e}");
                }
            }
            let sweep = {
                let servers = servers.clone();
                async move {
                    if let Some((dir, every)) = sweep {
                        agent::artifact_sweep_loop(servers, dir, every).await;
                    }
                }
            };
            tokio::join!(
                agent::heartbeat_loop(servers.clone(), identity.clone(), inventory, interval),
                agent::watch_loop(servers, identity.name, events),
                sweep,
            );
        }
    }
}

/// Write `data` to `path` via a temporary file and a rename, so readers see
/// either nothing or the whole file.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
