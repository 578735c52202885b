//! The agent: talks to the scheduler's `NodeService` and keeps this node's
//! processes equal to the desired set of tasks.
//!
//! Four loops share nothing but channels:
//!
//! - *control*: `Register` (retried with backoff), then `Heartbeat` every
//!   interval (registering again when told to) and `WatchAssignments`, whose
//!   every message is the full desired set (level-triggered).
//! - *reconciler*: owns the local task table. On each desired set it runs the
//!   pure [`plan`] and carries out its actions: start processes, stop process
//!   groups, report tasks it cannot have (lost across a daemon restart).
//!   The scheduler frees a stopped task's GPUs at once (a preempted or
//!   cancelled task), but its process may live on for the kill grace; a new
//!   task that would use one of those GPUs beyond its capacity waits here
//!   until that process has exited.
//! - *waiters*: one per process, turning its exit into an event.
//! - *outbox*: sends `ReportTask` in order, retrying until acknowledged, so a
//!   scheduler restart loses no report (the scheduler applies them idempotently).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gpuctl_proto::v1::node_service_client::NodeServiceClient;
use gpuctl_proto::v1::{
    GpuDevice, GpuMetrics, HeartbeatRequest, RegisterRequest, ReportTaskRequest, StepIo,
    StepOutputs, TaskAssignment, WatchAssignmentsRequest,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::env::task_env;
use crate::inventory::GpuInventory;
use crate::logs::LiveTasks;
use crate::metrics::Metrics;
use crate::runtime::{self, log_path, Exit, StartSpec, TaskKey};
use crate::steps;

/// First retry delay of every loop that talks to the scheduler.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Message of the report for a `Running` task this daemon has no process for.
pub const LOST_MESSAGE: &str = "task process lost: node daemon restarted";

/// Errors of the agent's set-up (the loops themselves retry forever).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("--server: no scheduler address given")]
    NoServer,
    #[error("--server {url:?}: {reason}")]
    BadServer { url: String, reason: String },
}

/// Doubling retry delay, capped.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The delay to wait now; the next one is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d
    }
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Logs a failing loop once per distinct error, and once when it recovers.
#[derive(Debug, Default)]
struct Quiet {
    last: Option<String>,
}

impl Quiet {
    fn failed(&mut self, what: &str, err: impl std::fmt::Display) {
        let msg = err.to_string();
        if self.last.as_deref() != Some(msg.as_str()) {
            tracing::warn!("{what} failed: {msg} (retrying)");
            self.last = Some(msg);
        }
    }
    fn ok(&mut self, what: &str) {
        if self.last.take().is_some() {
            tracing::info!("{what} works again");
        }
    }
}

/// A status in one line: code, message and the root cause of a transport
/// error ("unavailable: tcp connect error (Connection refused ...)").
pub fn brief(s: &Status) -> String {
    let mut root: Option<&dyn std::error::Error> = std::error::Error::source(s);
    while let Some(next) = root.and_then(|e| e.source()) {
        root = Some(next);
    }
    let code = format!("{:?}", s.code()).to_lowercase();
    match root {
        Some(r) if !s.message().contains(&r.to_string()) => {
            format!("{code}: {} ({r})", s.message())
        }
        _ => format!("{code}: {}", s.message()),
    }
}

/// The scheduler replicas, tried in order: a call that fails as if the
/// replica were down (or not the leader) moves on to the next one.
#[derive(Debug)]
pub struct Servers {
    urls: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
    /// When the scheduler last acknowledged a registration or heartbeat.
    pub contact: Contact,
}

/// Whether this node is in touch with the scheduler, for `/healthz`.
#[derive(Debug, Default)]
pub struct Contact {
    /// ms since the epoch of the last acknowledged call; 0: never.
    last_ok_ms: std::sync::atomic::AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

impl Contact {
    pub fn ok(&self, now_ms: u64) {
        self.last_ok_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn failed(&self, why: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// Healthy when the scheduler acknowledged a call within `within`.
    pub fn check(&self, now_ms: u64, within: Duration) -> Result<(), String> {
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        let error = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        if last == 0 {
            return Err(format!("not registered with the scheduler yet{error}"));
        }
        let quiet = now_ms.saturating_sub(last);
        if quiet > within.as_millis() as u64 {
            return Err(format!(
                "no heartbeat acknowledged by the scheduler for {:.1}s{error}",
                quiet as f64 / 1000.0
            ));
        }
        Ok(())
    }
}

impl Servers {
    /// Lazily connecting channels to each URL (`http://host:port`).
    pub fn new(urls: &[String]) -> Result<Servers, AgentError> {
        if urls.is_empty() {
            return Err(AgentError::NoServer);
        }
        let mut channels = Vec::new();
        for url in urls {
            let with_scheme = if url.contains("://") {
                url.clone()
            } else {
                format!("http://{url}")
            };
            let ep = Endpoint::from_shared(with_scheme).map_err(|e| AgentError::BadServer {
                url: url.clone(),
                reason: e.to_string(),
            })?;
            let ep = ep
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            channels.push(ep.connect_lazy());
        }
        Ok(Servers {
            urls: urls.to_vec(),
            channels,
            current: AtomicUsize::new(0),
            contact: Contact::default(),
        })
    }

    /// The replica to call now, and its position for [`Servers::failed`].
    pub fn client(&self) -> (usize, NodeServiceClient<Channel>) {
        let i = self.current.load(Ordering::Relaxed) % self.channels.len();
        (i, NodeServiceClient::new(self.channels[i].clone()))
    }

    /// A call to replica `i` failed: move on if it looks down or not leader.
    pub fn failed(&self, i: usize, status: &Status) {
        let rotate = matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
        );
        if rotate && self.channels.len() > 1 {
            let next = (i + 1) % self.channels.len();
            if self
                .current
                .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                tracing::debug!(
                    "scheduler {} failed ({}); trying {}",
                    self.urls[i],
                    status.code(),
                    self.urls[next]
                );
            }
        }
    }
}

/// What the agent needs to know about this node.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub name: String,
    /// Host other gang members reach (MASTER_ADDR).
    pub address: String,
    /// `http://host:port` of the NodeAgent service.
    pub agent_endpoint: String,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub labels: BTreeMap<String, String>,
}

/// The `Register` request for this node and inventory.
pub fn register_request(id: &NodeIdentity, inv: &dyn GpuInventory) -> RegisterRequest {
    RegisterRequest {
        name: id.name.clone(),
        address: id.address.clone(),
        agent_endpoint: id.agent_endpoint.clone(),
        gpus: inv
            .devices()
            .into_iter()
            .map(|d| GpuDevice {
                uuid: d.uuid,
                index: d.index,
                model: d.model,
                memory_bytes: d.memory_bytes,
                nvlink_domain: d.nvlink_domain,
                healthy: d.healthy,
            })
            .collect(),
        cpu_milli: id.cpu_milli,
        memory_bytes: id.memory_bytes,
        inventory: inv.kind().to_string(),
        labels: id
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Register until the scheduler accepts; returns the heartbeat interval it
/// asks for (or `default` when it names none).
pub async fn register_until_ok(
    servers: &Servers,
    id: &NodeIdentity,
    inv: &Arc<dyn GpuInventory>,
    default: Duration,
) -> Duration {
    let mut backoff = Backoff::default();
    let mut quiet = Quiet::default();
    loop {
        // Device lists are cached by every inventory: cheap to call here.
        let req = register_request(id, inv.as_ref());
        let (i, mut client) = servers.client();
        match client.register(req).await {
            Ok(resp) => {
                quiet.ok("Register");
                servers.contact.ok(gpuctl_common::now_ms());
                tracing::info!("registered node {} with {}", id.name, servers.urls[i]);
                let ms = resp.into_inner().heartbeat_interval_ms;
                return if ms > 0 {
                    Duration::from_millis(ms)
                } else {
                    default
                };
            }
            Err(s) => {
                servers
                    .contact
                    .failed(format!("Register with {}: {}", servers.urls[i], brief(&s)));
                quiet.failed(&format!("Register with {}", servers.urls[i]), brief(&s));
                servers.failed(i, &s);
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Heartbeat every `interval`; register again when the scheduler asks.
pub async fn heartbeat_loop(
    servers: Arc<Servers>,
    id: NodeIdentity,
    inv: Arc<dyn GpuInventory>,
    mut interval: Duration,
) {
    let mut quiet = Quiet::default();
    let default = interval;
    loop {
        tokio::time::sleep(interval).await;
        let samples = {
            let inv = inv.clone();
            tokio::task::spawn_blocking(move || inv.metrics())
                .await
                .unwrap_or_default()
        };
        let req = HeartbeatRequest {
            name: id.name.clone(),
            metrics: samples
                .into_iter()
                .map(|s| GpuMetrics {
                    uuid: s.uuid,
                    utilization_ratio: s.utilization_ratio,
                    memory_used_bytes: s.memory_used_bytes,
                    temperature_celsius: s.temperature_celsius,
                    power_watts: s.power_watts,
                    xid_errors: s.xid_errors,
                    healthy: s.healthy,
                })
                .collect(),
        };
        let (i, mut client) = servers.client();
        match client.heartbeat(req).await {
            Ok(resp) => {
                quiet.ok("Heartbeat");
                servers.contact.ok(gpuctl_common::now_ms());
                if resp.into_inner().reregister {
                    tracing::info!("scheduler asked node {} to register again", id.name);
                    interval = register_until_ok(&servers, &id, &inv, default).await;
                }
            }
            Err(s) => {
                servers
                    .contact
                    .failed(format!("Heartbeat to {}: {}", servers.urls[i], brief(&s)));
                quiet.failed(&format!("Heartbeat to {}", servers.urls[i]), brief(&s));
                servers.failed(i, &s);
            }
        }
    }
}

/// Every `every`, remove the artifacts of workflows the cluster no longer
/// has (deleted by hand or by their TTL). Only folders unchanged for `every`
/// are asked about, so a workflow created a moment ago is never mistaken for
/// a deleted one; nothing is removed while no scheduler answers.
pub async fn artifact_sweep_loop(servers: Arc<Servers>, artifact_dir: PathBuf, every: Duration) {
    let mut quiet = Quiet::default();
    let root = crate::steps::FsArtifactStore::new(artifact_dir);
    loop {
        tokio::time::sleep(every).await;
        let store = root.clone();
        let candidates = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.workflows_quiet_for(every))
                .await
                .unwrap_or_default()
        };
        if candidates.is_empty() {
            continue;
        }
        let (i, mut client) = servers.client();
        let req = gpuctl_proto::v1::GoneWorkflowsRequest {
            workflows: candidates,
        };
        let gone = match client.gone_workflows(req).await {
            Ok(resp) => {
                quiet.ok("GoneWorkflows");
                resp.into_inner().gone
            }
            Err(s) => {
                quiet.failed(&format!("GoneWorkflows to {}", servers.urls[i]), brief(&s));
                servers.failed(i, &s);
                continue;
            }
        };
        let _ = tokio::task::spawn_blocking(move || {
            let mut store = store;
            for wf in gone {
                match gpuctl_common::artifact::ArtifactStore::delete_workflow(&mut store, &wf) {
                    Ok(()) => tracing::info!(workflow = %wf, "removed the artifacts of a deleted workflow"),
                    Err(e) => tracing::warn!("{e}"),
                }
            }
        })
        .await;
    }
}

/// Follow `WatchAssignments`, reconnecting with backoff, and hand every
/// desired set to the reconciler the moment it arrives.
pub async fn watch_loop(servers: Arc<Servers>, node: String, events: mpsc::UnboundedSender<Event>) {
    let mut backoff = Backoff::default();
    let mut quiet = Quiet::default();
    loop {
        let (i, mut client) = servers.client();
        let what = format!("WatchAssignments from {}", servers.urls[i]);
        match client
            .watch_assignments(WatchAssignmentsRequest { node: node.clone() })
            .await
        {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(msg)) => {
                            let received = Instant::now();
                            quiet.ok(&what);
                            backoff.reset();
                            tracing::debug!(
                                "assignments version {}: {} tasks",
                                msg.version,
                                msg.tasks.len()
                            );
                            if events
                                .send(Event::Desired {
                                    tasks: msg.tasks,
                                    received,
                                })
                                .is_err()
                            {
                                return;
                            }
                        }
                        Ok(None) => {
                            quiet.failed(&what, "the scheduler ended the stream");
                            break;
                        }
                        Err(s) => {
                            quiet.failed(&what, brief(&s));
                            servers.failed(i, &s);
                            break;
                        }
                    }
                }
            }
            Err(s) => {
                quiet.failed(&what, brief(&s));
                servers.failed(i, &s);
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Codes that retrying cannot fix: the report is dropped with a warning
/// rather than blocking every later report.
fn permanent(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::OutOfRange
            | Code::Unimplemented
    )
}

/// Send reports, each retried (capped backoff) until acknowledged. The
/// reports of one task go in order; those of different tasks go
/// concurrently, so the scheduler commits many in one Raft round instead of
/// one round each (what a wide workflow fan-out needs). Returns once the
/// channel is closed and everything queued was sent or refused.
pub async fn outbox_loop(
    servers: Arc<Servers>,
    mut reports: mpsc::UnboundedReceiver<ReportTaskRequest>,
) {
    let quiet = Arc::new(std::sync::Mutex::new(Quiet::default()));
    let mut lanes: HashMap<(String, u32, u32), mpsc::UnboundedSender<ReportTaskRequest>> =
        HashMap::new();
    let mut senders = tokio::task::JoinSet::new();
    while let Some(report) = reports.recv().await {
        while senders.try_join_next().is_some() {}
        let key = (report.job.clone(), report.task_index, report.attempt);
        let last = report.phase != "Running";
        let lane = lanes.entry(key.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.spawn(send_lane(servers.clone(), rx, quiet.clone()));
            tx
        });
        let _ = lane.send(report);
        if last {
            // The task's final report: its lane ends once it is sent.
            lanes.remove(&key);
        }
    }
    lanes.clear();
    while senders.join_next().await.is_some() {}
}

/// Send one task's reports in order.
async fn send_lane(
    servers: Arc<Servers>,
    mut reports: mpsc::UnboundedReceiver<ReportTaskRequest>,
    quiet: Arc<std::sync::Mutex<Quiet>>,
) {
    let quiet = |f: &dyn Fn(&mut Quiet)| f(&mut quiet.lock().unwrap_or_else(|p| p.into_inner()));
    while let Some(report) = reports.recv().await {
        let mut backoff = Backoff::default();
        loop {
            let (i, mut client) = servers.client();
            match client.report_task(report.clone()).await {
                Ok(_) => {
                    quiet(&|q| q.ok("ReportTask"));
                    break;
                }
                Err(s) if permanent(s.code()) => {
                    tracing::warn!(
                        "scheduler refused report {} {}/task-{}/attempt-{}: {}",
                        report.phase,
                        report.job,
                        report.task_index,
                        report.attempt,
                        s.message()
                    );
                    break;
                }
                Err(s) => {
                    let what = format!("ReportTask to {}", servers.urls[i]);
                    quiet(&|q| q.failed(&what, brief(&s)));
                    servers.failed(i, &s);
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// What the reconciler reacts to.
#[derive(Debug)]
pub enum Event {
    /// A full desired set from `WatchAssignments`.
    Desired {
        tasks: Vec<TaskAssignment>,
        received: Instant,
    },
    /// A task's main process ended.
    Exited { key: TaskKey, exit: Exit },
    /// Stop every process and return once they are gone.
    Shutdown,
}

/// The local state of a task, as [`plan`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalState {
    /// Its process is running.
    Running,
    /// Its process group was sent SIGTERM because it left the desired set.
    Stopping,
    /// Assigned, but a GPU it needs is still held by a stopping process of
    /// this node (a preempted or cancelled task within its grace period);
    /// started as soon as that process exits, so that a GPU is never used
    /// beyond its capacity.
    Waiting,
    /// Over (exited, failed to start, or reported lost); kept while the task
    /// is still desired so that a re-sent assignment never starts it twice.
    Done,
}

impl LocalState {
    /// Its process lives (running, or stopping within the kill grace): it
    /// holds its GPUs and its port.
    pub fn has_process(self) -> bool {
        matches!(self, LocalState::Running | LocalState::Stopping)
    }
}

/// One step of reconciliation.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A `Bound` task with no local record: start it.
    Start(TaskAssignment),
    /// A `Running` task with no local record: its process is gone (the daemon
    /// restarted); report it failed, never start it again.
    ReportLost(TaskAssignment),
    /// A running process whose task is no longer desired: stop its group.
    Stop(TaskKey),
    /// A finished task that is no longer desired: drop its record.
    Forget(TaskKey),
}

/// The key of an assignment.
pub fn key_of(a: &TaskAssignment) -> TaskKey {
    TaskKey {
        job: a.job.clone(),
        task_index: a.task_index,
        attempt: a.attempt,
    }
}

/// Compare the desired set with the local table. Pure and idempotent: the
/// same inputs give the same actions, and after carrying them out the next
/// call with the same desired set gives none.
pub fn plan(desired: &[TaskAssignment], local: &BTreeMap<TaskKey, LocalState>) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut seen = HashSet::new();
    for a in desired {
        let key = key_of(a);
        if !seen.insert(key.clone()) || local.contains_key(&key) {
            continue;
        }
        match a.phase.as_str() {
            "Bound" => actions.push(Action::Start(a.clone())),
            "Running" => actions.push(Action::ReportLost(a.clone())),
            // Any other phase is the scheduler's business, not a process.
            _ => {}
        }
    }
    for (key, state) in local {
        if seen.contains(key) {
            continue;
        }
        match state {
            LocalState::Running => actions.push(Action::Stop(key.clone())),
            LocalState::Stopping => {}
            LocalState::Done | LocalState::Waiting => actions.push(Action::Forget(key.clone())),
        }
    }
    actions
}

/// A task this daemon knows about.
#[derive(Debug)]
struct LocalTask {
    state: LocalState,
    /// Process group id; `None` for tasks that never had a process here.
    pid: Option<u32>,
    gpus: Vec<u32>,
    /// Thousandths of each of `gpus` the task holds.
    milli: Vec<u32>,
    /// A `Waiting` task's assignment and when it arrived.
    waiting: Option<(Box<TaskAssignment>, Instant)>,
    /// `$PORT` of a serving task (0: none).
    port: u16,
    /// Becomes true when the main process has exited.
    exited: Option<watch::Receiver<bool>>,
    /// A workflow step: what to collect when it exits.
    step: Option<Box<StepRun>>,
}

/// A running workflow step's files.
#[derive(Debug)]
struct StepRun {
    io: StepIo,
    prepared: steps::Prepared,
    log: PathBuf,
    /// The step's own folder, removed once its outputs are collected.
    dir: PathBuf,
}

/// Settings of the reconciler.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    pub node: String,
    /// Log files live under `<logs_dir>/<job>/`.
    pub logs_dir: PathBuf,
    /// SIGTERM → SIGKILL delay when stopping a task.
    pub kill_grace: Duration,
    /// Ports for serving tasks' `$PORT`.
    pub ports: runtime::PortRange,
    /// Where running process groups are recorded (see [`runtime::PidDir`]).
    pub pid_dir: PathBuf,
    /// Workflow steps' folders (script, standard output, relative paths).
    pub steps_dir: PathBuf,
    /// The artifact store's folder (shared by the nodes of one machine).
    pub artifact_dir: PathBuf,
}

/// Owns the local task table; see the module docs.
pub struct Reconciler {
    cfg: ReconcilerConfig,
    tasks: BTreeMap<TaskKey, LocalTask>,
    /// The keys of the last desired set, to forget a stopped task on exit.
    desired: HashSet<TaskKey>,
    inventory: Arc<dyn GpuInventory>,
    metrics: Metrics,
    live: LiveTasks,
    reports: mpsc::UnboundedSender<ReportTaskRequest>,
    events: mpsc::UnboundedSender<Event>,
    pids: runtime::PidDir,
    /// Set once shutdown began: waiting tasks are not started any more.
    shutting_down: bool,
    /// The last `$PORT` given; the next is looked for after it.
    last_port: u16,
}

impl Reconciler {
    pub fn new(
        cfg: ReconcilerConfig,
        inventory: Arc<dyn GpuInventory>,
        metrics: Metrics,
        live: LiveTasks,
        reports: mpsc::UnboundedSender<ReportTaskRequest>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        let cfg_ports = cfg.ports;
        let node_hash = cfg
            .node
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        Reconciler {
            pids: runtime::PidDir::new(cfg.pid_dir.clone()),
            cfg,
            tasks: BTreeMap::new(),
            desired: HashSet::new(),
            inventory,
            metrics,
            live,
            reports,
            events,
            shutting_down: false,
            // Daemons sharing a host (gpuctl dev --nodes N) start at
            // different places in the range, so they rarely try the same port.
            last_port: {
                let r = cfg_ports;
                let n = u32::from(r.last - r.first) + 1;
                r.first + ((std::process::id().wrapping_mul(7919) ^ node_hash) % n) as u16
            },
        }
    }

    /// Handle events until `Shutdown` (or every sender is gone).
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Desired { tasks, received } => self.reconcile(&tasks, received),
                Event::Exited { key, exit } => self.exited(key, exit),
                Event::Shutdown => {
                    self.shutdown(&mut rx).await;
                    return;
                }
            }
        }
    }

    fn local_states(&self) -> BTreeMap<TaskKey, LocalState> {
        self.tasks
            .iter()
            .map(|(k, t)| (k.clone(), t.state))
            .collect()
    }

    fn reconcile(&mut self, desired: &[TaskAssignment], received: Instant) {
        self.desired = desired.iter().map(key_of).collect();
        // Stops first, so that a task taking a stopped task's GPU sees it stopping.
        let (starts, others): (Vec<Action>, Vec<Action>) = plan(desired, &self.local_states())
            .into_iter()
            .partition(|a| matches!(a, Action::Start(_)));
        for action in others.into_iter().chain(starts) {
            match action {
                Action::Start(a) => self.start(&a, received),
                Action::ReportLost(a) => {
                    let key = key_of(&a);
                    tracing::warn!(
                        "{key}: assigned as Running but no process here; reporting it lost"
                    );
                    self.report(&key, "Failed", -1, LOST_MESSAGE, 0);
                    self.tasks.insert(
                        key,
                        LocalTask {
                            state: LocalState::Done,
                            pid: None,
                            gpus: Vec::new(),
                            milli: Vec::new(),
                            waiting: None,
                            port: 0,
                            exited: None,
                            step: None,
                        },
                    );
                }
                Action::Stop(key) => self.stop(&key),
                Action::Forget(key) => {
                    self.tasks.remove(&key);
                }
            }
        }
        self.update_busy();
    }

    fn start(&mut self, a: &TaskAssignment, received: Instant) {
        let key = key_of(a);
        if let Some(why) = self.blocked_by(a) {
            tracing::info!("{key}: waiting to start: {why}");
            self.tasks.insert(
                key,
                LocalTask {
                    state: LocalState::Waiting,
                    pid: None,
                    gpus: Vec::new(),
                    milli: Vec::new(),
                    waiting: Some((Box::new(a.clone()), received)),
                    port: 0,
                    exited: None,
                    step: None,
                },
            );
            return;
        }
        let mut env = task_env(a);
        // A serving task (an endpoint replica) gets a free port as $PORT, reported
        // with Running so the gateway can reach it.
        let mut port = 0u16;
        let mut port_error = None;
        if a.wants_port {
            let taken: HashSet<u16> = self
                .tasks
                .values()
                .filter(|t| t.state.has_process())
                .map(|t| t.port)
                .collect();
            match runtime::free_port(self.cfg.ports, self.last_port, &taken) {
                Ok(p) => {
                    port = p;
                    self.last_port = p;
                    env.insert("PORT".into(), p.to_string());
                }
                Err(e) => port_error = Some(format!("cannot find a free port for the task: {e}")),
            }
        }
        let command = runtime::resolve_sibling_program(&a.command);
        let mut step = None;
        let started = match (log_path(&self.cfg.logs_dir, &key), port_error) {
            (_, Some(message)) => Err(runtime::StartError {
                exit_code: 127,
                message,
            }),
            (Ok(log), None) => match &a.step {
                None => runtime::start(&StartSpec {
                    command: &command,
                    env: &env,
                    working_dir: &a.working_dir,
                    log: &log,
                    stdout: None,
                }),
                Some(io) => self.start_step(&key, a, io, &env, log, &mut step),
            },
            (Err(e), None) => Err(runtime::StartError {
                exit_code: 127,
                message: format!("cannot start the task: {e}"),
            }),
        };
        match started {
            Ok(process) => {
                let pid = process.pid;
                self.metrics
                    .start_latency
                    .observe(received.elapsed().as_secs_f64());
                self.metrics.task_starts.inc();
                self.metrics.tasks_running.inc();
                tracing::info!("{key}: started pid {pid}: {:?}", a.command);
                self.live.insert(key.clone());
                self.pids.record(&key, pid);
                self.report_with(&key, "Running", 0, "", pid, port, None);
                let (exited_tx, exited_rx) = watch::channel(false);
                let events = self.events.clone();
                let waiter_key = key.clone();
                tokio::spawn(async move {
                    let exit = process.wait().await;
                    let _ = exited_tx.send(true);
                    let _ = events.send(Event::Exited {
                        key: waiter_key,
                        exit,
                    });
                });
                self.tasks.insert(
                    key,
                    LocalTask {
                        state: LocalState::Running,
                        pid: Some(pid),
                        gpus: a.gpu_indices.clone(),
                        milli: gpu_milli(a),
                        waiting: None,
                        port,
                        exited: Some(exited_rx),
                        step,
                    },
                );
            }
            Err(e) => {
                tracing::warn!("{key}: {}", e.message);
                self.metrics.task_exits.with_label_values(&["failed"]).inc();
                self.report(&key, "Failed", e.exit_code, &e.message, 0);
                self.tasks.insert(
                    key,
                    LocalTask {
                        state: LocalState::Done,
                        pid: None,
                        gpus: Vec::new(),
                        milli: Vec::new(),
                        waiting: None,
                        port: 0,
                        exited: None,
                        step: None,
                    },
                );
            }
        }
    }

    /// Why `a` cannot start yet: one of its GPUs would be used beyond its
    /// capacity, counting processes still stopping on it. `None` when it can.
    fn blocked_by(&self, a: &TaskAssignment) -> Option<String> {
        let want = gpu_milli(a);
        for (&gpu, &need) in a.gpu_indices.iter().zip(&want) {
            let holders = self.tasks.iter().filter_map(|(k, t)| {
                let live = t.state.has_process();
                let i = t.gpus.iter().position(|&g| g == gpu)?;
                live.then(|| (k, t.state, t.milli.get(i).copied().unwrap_or(1000)))
            });
            let (mut held, mut stopping) = (0u32, Vec::new());
            for (k, state, m) in holders {
                held += m;
                if state == LocalState::Stopping {
                    stopping.push(k.to_string());
                }
            }
            if !stopping.is_empty() && held + need > 1000 {
                return Some(format!(
                    "GPU {gpu} is still held by {} (stopping)",
                    stopping.join(", ")
                ));
            }
        }
        None
    }

    /// Start the waiting tasks that can start now (after a process exited).
    fn start_waiting(&mut self) {
        if self.shutting_down {
            return;
        }
        let waiting: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.state == LocalState::Waiting)
            .map(|(k, _)| k.clone())
            .collect();
        for key in waiting {
            let Some((a, received)) = self.tasks.remove(&key).and_then(|t| t.waiting) else {
                continue;
            };
            self.start(&a, received);
        }
    }

    /// Prepare a workflow step's files, then start it. A step whose files
    /// cannot be prepared is reported failed with the reason.
    fn start_step(
        &self,
        key: &TaskKey,
        a: &TaskAssignment,
        io: &StepIo,
        env: &BTreeMap<String, String>,
        log: PathBuf,
        step: &mut Option<Box<StepRun>>,
    ) -> Result<runtime::Process, runtime::StartError> {
        let dir = self
            .cfg
            .steps_dir
            .join(format!("{}-{}", key.job, key.attempt));
        let store = steps::FsArtifactStore::new(&self.cfg.artifact_dir);
        let prepared =
            steps::prepare(&dir, io, &a.command, &a.working_dir, &store).map_err(|message| {
                if let Some(parent) = log.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                let _ = std::fs::write(&log, format!("gpu-node: {message}\n"));
                runtime::StartError {
                    exit_code: 127,
                    message,
                }
            })?;
        let wd = prepared.working_dir.display().to_string();
        let started = runtime::start(&StartSpec {
            command: &prepared.command,
            env,
            working_dir: &wd,
            log: &log,
            stdout: prepared.stdout.as_deref(),
        });
        *step = Some(Box::new(StepRun {
            io: io.clone(),
            prepared,
            log,
            dir,
        }));
        started
    }

    fn stop(&mut self, key: &TaskKey) {
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        let (Some(pid), Some(exited)) = (task.pid, task.exited.clone()) else {
            return;
        };
        task.state = LocalState::Stopping;
        tracing::info!("{key}: no longer assigned; stopping process group {pid}");
        tokio::spawn(stop_task(pid, self.cfg.kill_grace, exited));
    }

    fn exited(&mut self, key: TaskKey, exit: Exit) {
        self.live.remove(&key);
        self.pids.forget(&key);
        self.metrics.tasks_running.dec();
        let result = if exit.succeeded() {
            "succeeded"
        } else {
            "failed"
        };
        self.metrics.task_exits.with_label_values(&[result]).inc();
        let was = self.tasks.get(&key).map(|t| t.state);
        match was {
            Some(LocalState::Running) => {
                if exit.succeeded() {
                    tracing::info!("{key}: succeeded");
                } else {
                    tracing::info!("{key}: failed: {}", exit.message);
                }
                let phase = if exit.succeeded() {
                    "Succeeded"
                } else {
                    "Failed"
                };
                let outputs = self
                    .tasks
                    .get_mut(&key)
                    .and_then(|t| t.step.take())
                    .map(|s| {
                        let store = steps::FsArtifactStore::new(&self.cfg.artifact_dir);
                        let o = steps::collect(&s.prepared, &s.io, exit.succeeded(), &store);
                        if let Some(out) = &s.prepared.stdout {
                            steps::append_to_log(out, &s.log);
                        }
                        // The outputs are in the report and the store now.
                        let _ = std::fs::remove_dir_all(&s.dir);
                        o
                    });
                self.report_with(&key, phase, exit.code, &exit.message, 0, 0, outputs);
            }
            // Stopped because it left the desired set: nobody wants a report.
            _ => tracing::info!("{key}: stopped ({})", exit.message),
        }
        if self.desired.contains(&key) {
            if let Some(t) = self.tasks.get_mut(&key) {
                t.state = LocalState::Done;
                t.gpus.clear();
                t.milli.clear();
            }
        } else {
            self.tasks.remove(&key);
        }
        self.start_waiting();
        self.update_busy();
    }

    fn report(&self, key: &TaskKey, phase: &str, exit_code: i32, message: &str, pid: u32) {
        self.report_with(key, phase, exit_code, message, pid, 0, None);
    }

    /// Report a task's phase; `port` for a serving task that started, `outputs`
    /// for a workflow step that ended.
    #[allow(clippy::too_many_arguments)]
    fn report_with(
        &self,
        key: &TaskKey,
        phase: &str,
        exit_code: i32,
        message: &str,
        pid: u32,
        port: u16,
        outputs: Option<StepOutputs>,
    ) {
        let _ = self.reports.send(ReportTaskRequest {
            outputs,
            node: self.cfg.node.clone(),
            job: key.job.clone(),
            task_index: key.task_index,
            attempt: key.attempt,
            phase: phase.to_string(),
            exit_code,
            message: message.to_string(),
            pid,
            port: u32::from(port),
        });
    }

    fn update_busy(&self) {
        let mut busy: Vec<u32> = self
            .tasks
            .values()
            .filter(|t| t.state.has_process())
            .flat_map(|t| t.gpus.iter().copied())
            .collect();
        busy.sort_unstable();
        busy.dedup();
        self.inventory.set_busy(&busy);
    }

    /// Stop every process group (SIGTERM, SIGKILL after the grace period) and
    /// wait, bounded, for their exits so their reports are queued.
    async fn shutdown(&mut self, rx: &mut mpsc::UnboundedReceiver<Event>) {
        self.shutting_down = true;
        let running: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.state.has_process())
            .map(|(k, _)| k.clone())
            .collect();
        if running.is_empty() {
            return;
        }
        tracing::info!("stopping {} task(s) before exiting", running.len());
        for key in &running {
            // Stopping ones already have a stop in flight.
            if let Some(t) = self
                .tasks
                .get(key)
                .filter(|t| t.state == LocalState::Running)
            {
                if let (Some(pid), Some(exited)) = (t.pid, t.exited.clone()) {
                    tokio::spawn(stop_task(pid, self.cfg.kill_grace, exited));
                }
            }
        }
        let deadline = Instant::now() + self.cfg.kill_grace + Duration::from_secs(2);
        let mut left: HashSet<TaskKey> = running.into_iter().collect();
        while !left.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Event::Exited { key, exit })) => {
                    left.remove(&key);
                    self.exited(key, exit);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// Thousandths of each assigned GPU (whole GPUs when the scheduler sent none).
fn gpu_milli(a: &TaskAssignment) -> Vec<u32> {
    (0..a.gpu_indices.len())
        .map(|i| a.gpu_milli.get(i).copied().unwrap_or(1000))
        .collect()
}

async fn stop_task(pid: u32, grace: Duration, mut exited: watch::Receiver<bool>) {
    runtime::stop_group(pid, grace, async move {
        let _ = exited.wait_for(|done| *done).await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(job: &str, phase: &str) -> TaskAssignment {
        TaskAssignment {
            job: job.into(),
            task_index: 0,
            attempt: 1,
            phase: phase.into(),
            command: vec!["true".into()],
            job_tasks: 1,
            ..Default::default()
        }
    }

    fn key(job: &str) -> TaskKey {
        TaskKey {
            job: job.into(),
            task_index: 0,
            attempt: 1,
        }
    }

    #[test]
    fn healthy_only_while_the_scheduler_answers() {
        let c = Contact::default();
        let within = Duration::from_secs(10);
        c.failed("Register with http://s:7000: unavailable".into());
        let e = c.check(1_000, within).unwrap_err();
        assert_eq!(
            e,
            "not registered with the scheduler yet (last error: Register with http://s:7000: unavailable)"
        );
        c.ok(5_000);
        assert_eq!(c.check(15_000, within), Ok(()));
        let e = c.check(15_001, within).unwrap_err();
        assert!(
            e.starts_with("no heartbeat acknowledged by the scheduler for 10.0s"),
            "{e}"
        );
    }

    #[test]
    fn plan_table() {
        use LocalState::*;
        type Local = &'static [(&'static str, LocalState)];
        let bound = || task("a", "Bound");
        let running = || task("a", "Running");
        #[rustfmt::skip]
        let cases: [(&str, Vec<TaskAssignment>, Local, Vec<Action>); 12] = [
            ("bound and new: start", vec![bound()], &[], vec![Action::Start(bound())]),
            ("bound and running here: nothing", vec![bound()], &[("a", Running)], vec![]),
            ("running and running here: nothing", vec![running()], &[("a", Running)], vec![]),
            ("re-sent after exit: not again", vec![bound()], &[("a", Done)], vec![]),
            ("running, unknown here: lost", vec![running()], &[], vec![Action::ReportLost(running())]),
            ("gone while running: stop", vec![], &[("a", Running)], vec![Action::Stop(key("a"))]),
            ("gone while stopping: wait", vec![], &[("a", Stopping)], vec![]),
            ("gone after exit: forget", vec![], &[("a", Done)], vec![Action::Forget(key("a"))]),
            ("waiting for a GPU: nothing", vec![bound()], &[("a", Waiting)], vec![]),
            ("gone while waiting: forget", vec![], &[("a", Waiting)], vec![Action::Forget(key("a"))]),
            ("other phases: nothing", vec![task("a", "Pending")], &[], vec![]),
            ("duplicates: once", vec![bound(), bound()], &[], vec![Action::Start(bound())]),
        ];
        for (name, desired, local, want) in cases {
            let local: BTreeMap<TaskKey, LocalState> =
                local.iter().map(|(j, s)| (key(j), *s)).collect();
            assert_eq!(plan(&desired, &local), want, "{name}");
        }
    }

    #[test]
    fn new_attempt_replaces_old() {
        let mut retry = task("a", "Bound");
        retry.attempt = 2;
        let local: BTreeMap<TaskKey, LocalState> =
            [(key("a"), LocalState::Running)].into_iter().collect();
        assert_eq!(
            plan(&[retry.clone()], &local),
            vec![Action::Start(retry), Action::Stop(key("a"))]
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let mut b = Backoff::default();
        let got: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_MIN);
    }
}
