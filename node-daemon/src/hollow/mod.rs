//! Hollow nodes (`gpu-node --simulate N`): one process stands in for N node
//! daemons, the kubemark/KWOK pattern, for capacity planning and for
//! measuring the control plane at scale.
//!
//! Each hollow node is a node daemon without processes: it joins (with the
//! join token, its credential in its own file), registers its simulated
//! GPUs, heartbeats, watches its assignments and sends its reports through
//! the real `NodeService` calls, on the real agent loops
//! ([`agent::register_until_ok`], [`agent::heartbeat_loop`],
//! [`agent::watch_loop`], [`agent::outbox_loop`]). Only the runtime differs:
//! a task "runs" as a timer ([`tasks`]).
//!
//! ```text
//!   shapes (--gpus | --gpu-file | --node-list CSV) ─► node i's inventory
//!   node i: join ─► Register ─► Heartbeat loop
//!                              WatchAssignments ─► tasks::run (timers) ─► outbox ─► ReportTask
//! ```
//!
//! Nodes share gRPC connections in groups ([`NODES_PER_CONNECTION`]), so a
//! fleet of thousands does not open thousands of sockets. Hollow nodes
//! serve no logs (`gpuctl logs` has nothing to read) and no metrics of
//! their own.

pub mod shapes;
pub mod tasks;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::agent::{self, Credentials, NodeIdentity, Servers};
use crate::NodeError;
pub use shapes::{NodeShape, ShapeError, Shapes};

/// Hollow nodes that share one connection to each scheduler replica
/// (HTTP/2 streams; servers commonly allow a few hundred per connection).
pub const NODES_PER_CONNECTION: usize = 32;

/// The label every hollow node carries, so they can be told apart.
pub const HOLLOW_LABEL: &str = "gpuctl.io/hollow";

/// How a fleet runs (the flags of `gpu-node --simulate`).
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// How many nodes.
    pub count: usize,
    /// Node `i` is named `{prefix}-{i:05}`.
    pub prefix: String,
    pub servers: Vec<String>,
    pub shapes: Shapes,
    /// Reported when the shape gives none.
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub labels: BTreeMap<String, String>,
    /// Used until the scheduler names its own.
    pub heartbeat_interval: Duration,
    /// How long a task runs when its env names no `GPUCTL_SIM_DURATION`.
    pub task_duration: Duration,
    /// Holds each node's credential (`NAME.token`).
    pub work_dir: PathBuf,
    pub join_token_file: Option<PathBuf>,
    pub tls: Option<gpuctl_security::tls::Tls>,
    /// Spread the nodes' starts over this long (so N registrations do not
    /// arrive at once).
    pub ramp: Duration,
}

/// The name of node `i` of a fleet.
pub fn node_name(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:05}")
}

/// Check the whole fleet's description, then run every node until
/// `shutdown` resolves.
pub async fn run_fleet(
    cfg: FleetConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    std::fs::create_dir_all(&cfg.work_dir).map_err(|source| NodeError::WorkDir {
        path: cfg.work_dir.clone(),
        source,
    })?;
    let mut nodes = Vec::with_capacity(cfg.count);
    let mut shared: Option<Servers> = None;
    for i in 0..cfg.count {
        let name = node_name(&cfg.prefix, i);
        gpuctl_common::api::validate_name("--name", &name)
            .map_err(|e| NodeError::Fleet(e.to_string()))?;
        let (inventory, cpu, mem) = cfg
            .shapes
            .inventory(i, &name)
            .map_err(|e| NodeError::Fleet(e.to_string()))?;
        let credentials = Credentials::load(
            cfg.work_dir.join(format!("{name}.token")),
            cfg.join_token_file.as_deref(),
        )?;
        let base = match &shared {
            Some(s) if i % NODES_PER_CONNECTION != 0 => s.sharing(),
            _ => {
                let s = Servers::new(&cfg.servers, cfg.tls.as_ref())?;
                let mine = s.sharing();
                shared = Some(s);
                mine
            }
        };
        let servers = Arc::new(base.with_credentials(&name, credentials));
        let mut labels = cfg.labels.clone();
        labels.insert(HOLLOW_LABEL.to_string(), "true".to_string());
        let identity = NodeIdentity {
            name,
            address: "127.0.0.1".to_string(),
            agent_endpoint: String::new(),
            cpu_milli: if cpu > 0 { cpu } else { cfg.cpu_milli },
            memory_bytes: if mem > 0 { mem } else { cfg.memory_bytes },
            labels,
            cordon_after_unhealthy_gpus: 0,
        };
        nodes.push((servers, identity, inventory));
    }
    let step = cfg.ramp.checked_div(cfg.count.max(1) as u32);
    let mut running = tokio::task::JoinSet::new();
    for (i, (servers, identity, inventory)) in nodes.into_iter().enumerate() {
        let delay = step.unwrap_or_default() * i as u32;
        let (interval, duration) = (cfg.heartbeat_interval, cfg.task_duration);
        running.spawn(async move {
            tokio::time::sleep(delay).await;
            run_node(servers, identity, inventory, interval, duration).await;
        });
    }
    tracing::info!("hollow fleet of {} node(s) started", cfg.count);
    shutdown.await;
    running.shutdown().await;
    Ok(())
}

/// One hollow node: join, register, then heartbeat, watch and run timers
/// until aborted.
async fn run_node(
    servers: Arc<Servers>,
    identity: NodeIdentity,
    inventory: Arc<dyn crate::inventory::GpuInventory>,
    interval: Duration,
    task_duration: Duration,
) {
    servers.join_until_ok().await;
    let interval = agent::register_until_ok(&servers, &identity, &inventory, interval).await;
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    tokio::join!(
        agent::heartbeat_loop(servers.clone(), identity.clone(), inventory, interval),
        agent::watch_loop(servers.clone(), identity.name.clone(), events_tx),
        tasks::run(identity.name.clone(), events_rx, reports_tx, task_duration),
        agent::outbox_loop(servers, reports_rx),
    );
}
