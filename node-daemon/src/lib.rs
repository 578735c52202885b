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
//!   agent::Reconciler ── plan() ──► supervisor (gpu-node supervise) ─► runtime::start ─► process group
//!       │  local task table   ▲     (env::task_env)       │ stdout+stderr            │
//!       │                     └ Event::Started/Exited ◄── waiter ◄── exit.json ◄─────┘
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
//! Restarts: each task runs under a supervisor of its own ([`supervisor`])
//! that outlives the daemon; a daemon started again over the same work
//! folder takes back the tasks still running and reports those that ended
//! meanwhile. Supervisors stop their task when the daemon has not reached
//! the scheduler for the fence timeout ([`supervisor::lease`]).
//!
//! Confinement: each task runs in a cgroup of its own (CPU quota, memory
//! limit, pids limit, GPU device rules) and with its own `/tmp`, and its
//! exit says `OOMKilled: ...` when its memory limit killed it
//! ([`isolation`]); without root or cgroups the daemon says so once at
//! start and runs tasks without limits. The supervisor sets both up as it
//! starts the task, and reads them back when it ends.
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
pub mod container;
pub mod env;
pub mod hollow;
pub mod inventory;
pub mod isolation;
pub mod logs;
pub mod metrics;
pub mod owner;
pub mod replica_tls;
pub mod runtime;
pub mod secrets;
pub mod steps;
pub mod supervisor;
pub mod warm;

pub use supervisor::record::write_atomically;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
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
    /// Unhealthy GPUs at which the scheduler cordons this node (0: never by
    /// count; an XID that needs a reboot always cordons it).
    pub cordon_after_unhealthy_gpus: u32,
    /// Used until the scheduler names its own in `RegisterResponse`.
    pub heartbeat_interval: Duration,
    /// SIGTERM → SIGKILL delay when stopping a task.
    pub kill_grace: Duration,
    /// Ports for serving tasks' `$PORT`.
    pub task_ports: crate::runtime::PortRange,
    /// A task's supervisor stops it when the scheduler has not acknowledged
    /// a call from this daemon for longer (so that a node the scheduler
    /// declares lost runs nothing it may restart elsewhere); zero: never.
    pub fence_timeout: Duration,
    /// The `gpu-node` executable that supervises tasks (`gpu-node
    /// supervise`); `None`: this process's own (`/proc/self/exe`).
    pub supervisor_exe: Option<PathBuf>,
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
    /// The node CA that signs endpoint replicas' certificates
    /// ([`replica_tls`]); `None`: replicas that serve TLS cannot run here.
    pub replica_ca: Option<Arc<gpuctl_security::replica::ReplicaIssuer>>,
    /// `/metrics` and `/healthz` in plain HTTP although `tls` is given.
    pub metrics_insecure: bool,
    /// Tasks' cgroups, pids limit and private `/tmp` ([`isolation`]).
    pub isolation: isolation::Options,
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
    #[error("{0}")]
    Isolation(String),
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
    /// What confines tasks here, found at start.
    isolation: Arc<isolation::Isolation>,
    /// `/metrics` over HTTPS, unless `metrics_insecure`.
    metrics_tls: Option<tokio_rustls::TlsAcceptor>,
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
            cordon_after_unhealthy_gpus: config.cordon_after_unhealthy_gpus,
        };
        // Process groups recorded in `pids/` by a daemon from before tasks
        // had supervisors: nothing can take them back, so they go. Tasks
        // under supervisors are taken back when the daemon runs.
        let leftovers = runtime::PidDir::new(config.work_dir.join("pids")).kill_leftovers();
        if leftovers > 0 {
            tracing::warn!(
                "killed {leftovers} task process group(s) a previous run of this daemon left running"
            );
        }
        let isolation =
            isolation::Isolation::detect(&config.isolation, &config.name, &config.work_dir)
                .map_err(NodeError::Isolation)?;
        for note in &isolation.notes {
            tracing::info!("{note}");
        }
        for warning in &isolation.warnings {
            tracing::warn!("{warning}");
        }
        let cgroups_left = isolation.remove_leftovers();
        if cgroups_left > 0 {
            tracing::warn!("removed {cgroups_left} empty task cgroup(s) a previous run left");
        }
        let isolation = Arc::new(isolation);
        let metrics = Metrics::new(inventory.clone(), isolation.clone())?;
        let metrics_tls = match &config.tls {
            Some(t) if !config.metrics_insecure => Some(
                t.acceptor(None)
                    .map_err(|e| NodeError::Tls(format!("/metrics: {e}")))?,
            ),
            _ => None,
        };
        Ok(Node {
            metrics_tls,
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
            isolation,
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

    /// `https` or `http`: how `/metrics` is served.
    pub fn metrics_scheme(&self) -> &'static str {
        if self.metrics_tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// What `Register` reports about this node.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// Run until `shutdown` resolves; then stop every task's process group
    /// (SIGTERM, SIGKILL after the grace period), send what reports can be
    /// sent within a short bound, and return.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        // The node's cgroup folders go when this returns, or when the
        // future is dropped (a runtime shutting down).
        let _cgroups = isolation::RemoveOnDrop(self.isolation.clone());
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
        let supervisors = self.supervisors();
        let warm = supervisors.warm.clone();

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
        let httpd = tokio::spawn(gpuctl_telemetry::serve_with(
            self.metrics_listener,
            self.metrics.registry.clone(),
            health,
            self.metrics_tls.clone(),
            stopped(stop_rx.clone()),
        ));

        // Moved on whenever the scheduler acknowledges a call; supervisors
        // stop their tasks when it gets too old (fencing).
        let lease = {
            let servers = self.servers.clone();
            tokio::spawn(supervisor::lease::keep(
                supervisors.lease.clone(),
                move || servers.contact.last_ok_ms(),
            ))
        };
        let mut reconciler = Reconciler::new(
            ReconcilerConfig {
                node: self.config.name.clone(),
                logs_dir,
                kill_grace: self.config.kill_grace,
                ports: self.config.task_ports,
                supervisors,
                steps_dir: self.config.work_dir.join("steps"),
                tasks_dir: self.config.work_dir.join("tasks"),
                artifact_dir,
                secrets_dir: self.config.work_dir.join("secrets"),
                isolation: self.isolation.clone(),
                replica_tls: replica_tls::ReplicaTls {
                    tls: self.config.tls.is_some(),
                    issuer: self.config.replica_ca.clone(),
                    address: self.identity.address.clone(),
                },
            },
            self.inventory.clone(),
            self.metrics.clone(),
            live,
            reports_tx,
            events_tx.clone(),
        );
        // Tasks whose supervisors outlived a previous run are taken back;
        // the files of any other earlier task go.
        let adopted = reconciler.adopt();
        if adopted.running + adopted.ended > 0 {
            tracing::info!(
                "took back {} running task(s) and {} that ended while the daemon was down",
                adopted.running,
                adopted.ended
            );
        }
        let reconciler = tokio::spawn(reconciler.run(events_rx));
        let outbox = tokio::spawn(agent::outbox_loop(self.servers.clone(), reports_rx));
        let control = tokio::spawn(control_loops);

        shutdown.await;
        tracing::info!("shutting down");
        control.abort();
        lease.abort();
        // The reconciler stops every process group and waits (bounded) for them.
        let _ = events_tx.send(Event::Shutdown);
        let _ = reconciler.await;
        // Warm supervisors leave with their waiting processes and cgroups.
        if let Some(pool) = warm {
            pool.close().await;
        }
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

    /// How this daemon starts its tasks' supervisors.
    fn supervisors(&self) -> supervisor::Supervisors {
        let exe = self.config.supervisor_exe.clone().unwrap_or_else(|| {
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
        });
        let lease = self.config.work_dir.join("lease");
        let size = self.config.isolation.warm_supervisors;
        let warm = (size > 0).then(|| {
            let flags = vec![
                "--lease".to_string(),
                lease.display().to_string(),
                "--fence-ms".to_string(),
                self.config.fence_timeout.as_millis().to_string(),
                "--kill-grace-ms".to_string(),
                self.config.kill_grace.as_millis().to_string(),
            ];
            let pool = Arc::new(supervisor::pool::Pool::new(
                size,
                exe.clone(),
                flags,
                self.isolation.clone(),
            ));
            pool.fill();
            pool
        });
        supervisor::Supervisors {
            root: self.config.work_dir.join("supervisors"),
            exe,
            lease,
            fence: self.config.fence_timeout,
            kill_grace: self.config.kill_grace,
            warm,
        }
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
        let events_for_health = events.clone();
        async move {
            // Faults from before the first registration travel with it.
            let known = agent::known_faults(inventory.as_ref());
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
            let health = agent::gpu_health_loop(
                servers.clone(),
                identity.clone(),
                inventory.clone(),
                events_for_health,
                known,
                default_interval.min(Duration::from_secs(1)),
            );
            tokio::join!(
                health,
                agent::heartbeat_loop(servers.clone(), identity.clone(), inventory, interval),
                agent::watch_loop(servers, identity.name, events),
                sweep,
            );
        }
    }
}
