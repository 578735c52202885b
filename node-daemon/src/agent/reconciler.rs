//! The reconciler: owns the local task table and carries out what [`plan`]
//! decides. It starts tasks (with the environment [`task_env`] builds), each
//! under a supervisor of its own ([`crate::supervisor`]), stops them,
//! reports tasks it cannot have, and turns each exit into a report.
//!
//! When the daemon starts, [`Reconciler::adopt`] takes back the tasks whose
//! supervisors outlived the previous run: live ones are `Running` again
//! (never started twice), and those that ended meanwhile are reported with
//! the exit their supervisor recorded.
//!
//! The scheduler frees a stopped task's GPUs at once (a preempted or
//! cancelled task), but its process may live on for the kill grace; a new
//! task that would use one of those GPUs beyond its capacity waits here
//! until that process has exited.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gpuctl_common::api::TaskPhase;
use gpuctl_proto::v1::StepIo;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::plan::{plan, Action, LocalState};
use crate::assignment::{Assignment, TaskReport};
use crate::container::ContainerSpec;
use crate::env::task_env;
use crate::inventory::GpuInventory;
use crate::isolation::{Isolation, PrivateTmp, TaskIsolation};
use crate::logs::LiveTasks;
use crate::metrics::Metrics;
use crate::owner::{self, RunAs};
use crate::runtime::{self, log_path, Exit, StartError, StartSpec, TaskKey};
use crate::supervisor::record::{Meta, StepMeta, TaskDir};
use crate::supervisor::{self, Launched, Supervisors};
use crate::{secrets, steps};

mod adopt;
mod image;
mod report;
mod started;
mod waiting;
pub use adopt::Adopted;

/// Message of the report for a `Running` task this daemon has no process for.
pub const LOST_MESSAGE: &str = "task process lost: node daemon restarted";

/// What the reconciler reacts to.
#[derive(Debug)]
pub enum Event {
    /// A full desired set from `WatchAssignments`.
    Desired {
        tasks: Vec<Assignment>,
        received: Instant,
    },
    /// A task's supervisor said whether the task started (its pid).
    Started {
        key: TaskKey,
        ready: Result<u32, StartError>,
        /// The supervisor's pid (a warm one gone before it read its task
        /// was replaced by another).
        supervisor: u32,
    },
    /// A task's main process ended.
    Exited { key: TaskKey, exit: Exit },
    /// A GPU reported a fatal XID: fail and stop the tasks on it.
    GpuFault(gpuctl_proto::v1::GpuFault),
    /// Stop every process and return once they are gone.
    Shutdown,
}

/// A task this daemon knows about.
#[derive(Debug)]
struct LocalTask {
    state: LocalState,
    /// The task's process group id, once its supervisor said it started.
    pid: Option<u32>,
    /// Its supervisor's pid; `None` for tasks that never had one here.
    supervisor: Option<u32>,
    /// Its supervisor's folder, removed once the exit is reported.
    dir: Option<TaskDir>,
    /// When its assignment arrived, until it is reported started.
    received: Option<Instant>,
    gpus: Vec<u32>,
    /// Thousandths of each of `gpus` the task holds.
    milli: Vec<u32>,
    /// A `Waiting` task's assignment and when it arrived.
    waiting: Option<(Box<Assignment>, Instant)>,
    /// `$PORT` of a serving task (0: none).
    port: u16,
    /// Becomes true when the main process has exited.
    exited: Option<watch::Receiver<bool>>,
    /// A workflow step: what to collect when it exits.
    step: Option<Box<StepRun>>,
    /// The folder made for a task run as its owner, removed when it exits.
    scratch: Option<PathBuf>,
    /// The task's own `/tmp`, removed when it exits (after its outputs
    /// are read).
    tmp: Option<PrivateTmp>,
    /// Said with its Running report (an image not used here).
    note: Option<String>,
}

impl LocalTask {
    /// A task that is over, or never had a process here.
    fn done() -> Self {
        LocalTask {
            state: LocalState::Done,
            pid: None,
            supervisor: None,
            dir: None,
            received: None,
            gpus: Vec::new(),
            milli: Vec::new(),
            waiting: None,
            port: 0,
            exited: None,
            step: None,
            scratch: None,
            tmp: None,
            note: None,
        }
    }

    /// A task whose GPU is still held by a stopping process.
    fn waiting(a: Assignment, received: Instant) -> Self {
        LocalTask {
            state: LocalState::Waiting,
            waiting: Some((Box::new(a), received)),
            ..LocalTask::done()
        }
    }
}

/// A running workflow step's files.
#[derive(Debug)]
struct StepRun {
    io: StepIo,
    prepared: steps::Prepared,
    log: PathBuf,
    /// The step's own folder, removed once its outputs are collected.
    dir: PathBuf,
    /// The uid it runs as when it has an owner: outputs must be its files.
    uid: Option<u32>,
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
    /// How tasks' supervisors are started, and where their folders are.
    pub supervisors: Supervisors,
    /// Workflow steps' folders (script, standard output, relative paths).
    pub steps_dir: PathBuf,
    /// Folders of tasks that run as their owner (not steps), one each.
    pub tasks_dir: PathBuf,
    /// The artifact store's folder (shared by the nodes of one machine).
    pub artifact_dir: PathBuf,
    /// Tasks' secret files (see [`crate::secrets`]).
    pub secrets_dir: PathBuf,
    /// What confines tasks on this host (cgroups, private `/tmp`).
    pub isolation: Arc<Isolation>,
    /// What endpoint replicas get for TLS.
    pub replica_tls: crate::replica_tls::ReplicaTls,
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
    reports: mpsc::UnboundedSender<TaskReport>,
    events: mpsc::UnboundedSender<Event>,
    /// Set once the first desired set came: until then an adopted task
    /// that ends is kept (as `Done`), so that the scheduler, still showing
    /// it `Running`, does not make it look lost.
    desired_seen: bool,
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
        reports: mpsc::UnboundedSender<TaskReport>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        let cfg_ports = cfg.ports;
        let node_hash = cfg
            .node
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        Reconciler {
            cfg,
            desired_seen: false,
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
                Event::Started {
                    key,
                    ready,
                    supervisor,
                } => self.on_started(key, ready, supervisor),
                Event::Exited { key, exit } => self.exited(key, exit),
                Event::GpuFault(f) => self.gpu_fault(&f),
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

    fn reconcile(&mut self, desired: &[Assignment], received: Instant) {
        self.desired = desired.iter().map(Assignment::key).collect();
        self.desired_seen = true;
        // Stops first, so that a task taking a stopped task's GPU sees it stopping.
        let (starts, others): (Vec<Action>, Vec<Action>) = plan(desired, &self.local_states())
            .into_iter()
            .partition(|a| matches!(a, Action::Start(_)));
        for action in others.into_iter().chain(starts) {
            match action {
                Action::Start(a) => self.start(&a, received),
                Action::ReportLost(a) => {
                    let key = a.key();
                    tracing::warn!(
                        "{key}: assigned as Running but no process here; reporting it lost"
                    );
                    self.report(&key, TaskPhase::Failed, -1, LOST_MESSAGE, 0);
                    self.tasks.insert(key, LocalTask::done());
                }
                Action::Stop(key) => self.stop(&key),
                Action::Forget(key) => {
                    self.tasks.remove(&key);
                }
            }
        }
        self.update_busy();
    }

    fn start(&mut self, a: &Assignment, received: Instant) {
        let key = a.key();
        // Bound before the scheduler learnt that one of its GPUs failed.
        let sick = self
            .inventory
            .devices()
            .into_iter()
            .find(|d| !d.healthy && d.xid != 0 && a.gpu_indices.contains(&d.index));
        if let Some(d) = sick {
            let f = gpuctl_proto::v1::GpuFault {
                index: d.index,
                uuid: d.uuid,
                xid: d.xid,
            };
            self.report_fault(&key, f);
            self.tasks.insert(key, LocalTask::done());
            return;
        }
        if let Some(why) = self.blocked_by(a) {
            tracing::info!("{key}: waiting to start: {why}");
            self.tasks
                .insert(key, LocalTask::waiting(a.clone(), received));
            return;
        }
        let (mut step, mut scratch) = (None, None);
        let iso = self.isolation_of(a);
        let (started, port) = self.spawn(&key, a, &iso, &mut step, &mut scratch);
        match started {
            Ok(launched) => {
                self.started(key.clone(), a, launched, port, step, received);
                let note = self.image_note(a);
                if let Some(t) = self.tasks.get_mut(&key) {
                    t.scratch = scratch;
                    t.tmp = iso.tmp;
                    t.note = note;
                }
            }
            Err(e) => {
                if let Some(dir) = scratch {
                    let _ = std::fs::remove_dir_all(dir);
                }
                if let Some(tmp) = &iso.tmp {
                    tmp.remove();
                }
                self.start_failed(&key, &e, true);
                self.tasks.insert(key, LocalTask::done());
            }
        }
    }

    /// Start `a`'s process group with its environment, its `$PORT` when it
    /// serves, its log file, a workflow step's files, and as its owner (in a
    /// folder of its own). Returns the port given (0: none) with the outcome.
    fn spawn(
        &mut self,
        key: &TaskKey,
        a: &Assignment,
        iso: &TaskIsolation,
        step: &mut Option<Box<StepRun>>,
        scratch: &mut Option<PathBuf>,
    ) -> (Result<Launched, StartError>, u16) {
        let log = match log_path(&self.cfg.logs_dir, key) {
            Ok(log) => log,
            Err(e) => {
                let message = format!("cannot start the task: {e}");
                return (Err(runtime::StartError::new(127, message)), 0);
            }
        };
        let run_as = match &a.owner {
            None => None,
            Some(o) => match owner::resolve(o, &a.job, &self.cfg.node) {
                Ok(r) => Some(r),
                Err(message) => {
                    runtime::note_in_log(&log, &message);
                    return (Err(runtime::StartError::new(126, message)), 0);
                }
            },
        };
        let mut env = task_env(a);
        let mut working_dir = a.working_dir.clone();
        if let Some(r) = &run_as {
            // A folder of the task's own: its working directory unless the
            // job names one, and its HOME without a passwd entry.
            let dir = match &a.step {
                Some(_) => self.step_dir(key),
                None => {
                    let dir = self.task_dir(key);
                    let _ = std::fs::remove_dir_all(&dir);
                    if let Err(e) = owner::own_dir(&dir, r) {
                        let message = format!("creating the task folder {dir:?}: {e}");
                        runtime::note_in_log(&log, &message);
                        return (Err(runtime::StartError::new(127, message)), 0);
                    }
                    if working_dir.is_empty() {
                        working_dir = dir.display().to_string();
                    }
                    *scratch = Some(dir.clone());
                    dir
                }
            };
            r.add_env(&mut env, &dir);
        }
        // A serving task (an endpoint replica) gets a free port as $PORT, reported
        // with Running so the gateway can reach it.
        let mut port = 0u16;
        if a.wants_port {
            match self.next_port() {
                Ok(p) => {
                    port = p;
                    env.insert("PORT".into(), p.to_string());
                }
                Err(e) => {
                    let message = format!("cannot find a free port for the task: {e}");
                    return (Err(runtime::StartError::new(127, message)), 0);
                }
            }
        }
        // Its secret files, and a replica's certificate.
        let owner = run_as.as_ref().map(|r| (r.uid, r.gid));
        let root = &self.cfg.secrets_dir;
        if let Err(message) = self.cfg.replica_tls.task_files(a, root, owner, &mut env) {
            runtime::note_in_log(&log, &message);
            return (Err(runtime::StartError::new(127, message)), 0);
        }
        let command = runtime::resolve_sibling_program(&a.command);
        // A program or working directory under `/tmp` stays visible in the
        // task's own `/tmp`.
        let mut iso = iso.clone();
        if let Some(tmp) = iso.tmp.as_mut() {
            let program = command.first().map(Path::new).filter(|p| p.is_absolute());
            let wd = Some(Path::new(&working_dir)).filter(|p| p.is_absolute());
            tmp.keep_also(program.into_iter().chain(wd));
        }
        let iso = &iso;
        let container = match self.container_of(key, a, &env, scratch.as_ref(), iso) {
            Ok(c) => c,
            Err(message) => {
                runtime::note_in_log(&log, &message);
                return (Err(runtime::StartError::new(127, message)), 0);
            }
        };
        let meta = Meta {
            job: key.job.clone(),
            task_index: key.task_index,
            attempt: key.attempt,
            gpus: a.gpu_indices.clone(),
            milli: a.gpu_shares(),
            port,
            scratch: scratch.clone(),
            step: None,
            container: container.clone(),
        };
        let started = match &a.step {
            None => self.cfg.supervisors.launch(
                &StartSpec {
                    command: &command,
                    env: &env,
                    working_dir: &working_dir,
                    log: &log,
                    stdout: None,
                    run_as: run_as.as_ref(),
                    isolation: Some(iso),
                    container: container.as_ref(),
                },
                &meta,
            ),
            Some(io) => {
                let c = container.as_ref();
                self.start_step(key, a, io, &env, log, run_as.as_ref(), iso, c, step, meta)
            }
        };
        (started, port)
    }

    /// A workflow step's folder (script, standard output, relative paths).
    fn step_dir(&self, key: &TaskKey) -> PathBuf {
        self.cfg
            .steps_dir
            .join(format!("{}-{}", key.job, key.attempt))
    }

    /// The folder of a task that runs as its owner (not a step).
    fn task_dir(&self, key: &TaskKey) -> PathBuf {
        self.cfg
            .tasks_dir
            .join(format!("{}-{}-{}", key.job, key.task_index, key.attempt))
    }

    /// A port for a serving task, looked for after the last one given and
    /// away from those the live processes of this node hold.
    fn next_port(&mut self) -> std::io::Result<u16> {
        let taken: HashSet<u16> = self
            .tasks
            .values()
            .filter(|t| t.state.has_process())
            .map(|t| t.port)
            .collect();
        let p = runtime::free_port(self.cfg.ports, self.last_port, &taken)?;
        self.last_port = p;
        Ok(p)
    }

    /// A supervisor started: the task holds its GPUs from now on. Its
    /// waiter sends [`Event::Started`] once the supervisor says whether the
    /// task started (then it is reported `Running`), and [`Event::Exited`]
    /// when it ends.
    fn started(
        &mut self,
        key: TaskKey,
        a: &Assignment,
        mut launched: Launched,
        port: u16,
        step: Option<Box<StepRun>>,
        received: Instant,
    ) {
        let supervisor = launched.pid();
        tracing::info!(
            "{key}: supervisor pid {supervisor} starting {:?}",
            a.command
        );
        let dir = TaskDir::new(&self.cfg.supervisors.root, &key);
        let (exited_tx, exited_rx) = watch::channel(false);
        let events = self.events.clone();
        let waiter_key = key.clone();
        tokio::spawn(async move {
            let ready = launched.ready().await;
            let ok = ready.is_ok();
            let _ = events.send(Event::Started {
                key: waiter_key.clone(),
                ready,
                supervisor: launched.pid(),
            });
            let exit = launched.wait().await;
            let _ = exited_tx.send(true);
            if ok {
                let _ = events.send(Event::Exited {
                    key: waiter_key,
                    exit,
                });
            }
        });
        self.tasks.insert(
            key,
            LocalTask {
                state: LocalState::Running,
                pid: None,
                supervisor: Some(supervisor),
                dir,
                received: Some(received),
                gpus: a.gpu_indices.clone(),
                milli: a.gpu_shares(),
                waiting: None,
                port,
                exited: Some(exited_rx),
                step,
                scratch: None,
                tmp: None,
                note: None,
            },
        );
    }

    /// Prepare a workflow step's files (as `run_as`'s), then start it. A
    /// step whose files cannot be prepared is reported failed with the reason.
    #[allow(clippy::too_many_arguments)]
    fn start_step(
        &self,
        key: &TaskKey,
        a: &Assignment,
        io: &StepIo,
        env: &BTreeMap<String, String>,
        log: PathBuf,
        run_as: Option<&RunAs>,
        iso: &TaskIsolation,
        container: Option<&ContainerSpec>,
        step: &mut Option<Box<StepRun>>,
        mut meta: Meta,
    ) -> Result<Launched, StartError> {
        let dir = self.step_dir(key);
        let store = steps::FsArtifactStore::new(&self.cfg.artifact_dir);
        let files = steps::StepFiles {
            dir: &dir,
            tmp: iso.tmp.as_ref(),
        };
        let prepared = steps::prepare(&files, io, &a.command, &a.working_dir, &store, run_as)
            .map_err(|message| {
                runtime::note_in_log(&log, &message);
                runtime::StartError::new(127, message)
            })?;
        let wd = prepared.working_dir.display().to_string();
        meta.step = Some(StepMeta {
            io: prost::Message::encode_to_vec(io),
            command: prepared.command.clone(),
            working_dir: prepared.working_dir.clone(),
            stdout: prepared.stdout.clone(),
            log: log.clone(),
            dir: dir.clone(),
            uid: run_as.map(|r| r.uid),
        });
        let started = self.cfg.supervisors.launch(
            &StartSpec {
                command: &prepared.command,
                env,
                working_dir: &wd,
                log: &log,
                stdout: prepared.stdout.as_deref(),
                run_as,
                isolation: Some(iso),
                container,
            },
            &meta,
        );
        *step = Some(Box::new(StepRun {
            io: io.clone(),
            prepared,
            log,
            dir,
            uid: run_as.map(|r| r.uid),
        }));
        started
    }

    fn stop(&mut self, key: &TaskKey) {
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        let (Some(supervisor), Some(exited)) = (task.supervisor, task.exited.clone()) else {
            return;
        };
        task.state = LocalState::Stopping;
        tracing::info!("{key}: no longer assigned; stopping it (supervisor pid {supervisor})");
        tokio::spawn(supervisor::stop(
            supervisor,
            task.pid,
            self.cfg.kill_grace,
            exited,
        ));
    }

    fn exited(&mut self, key: TaskKey, exit: Exit) {
        secrets::remove(&self.cfg.secrets_dir, &key);
        self.live.remove(&key);
        self.metrics.tasks.untrack(&key);
        self.metrics.tasks_running.dec();
        let stopped = self
            .tasks
            .get(&key)
            .is_some_and(|t| t.state != LocalState::Running);
        let result = match (stopped, exit.succeeded()) {
            (true, _) => "stopped",
            (false, true) => "succeeded",
            (false, false) => "failed",
        };
        self.metrics.task_exits.with_label_values(&[result]).inc();
        if let Some(dir) = self.tasks.get_mut(&key).and_then(|t| t.scratch.take()) {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(dir) = self.tasks.get_mut(&key).and_then(|t| t.dir.take()) {
            dir.remove();
        }
        let was = self.tasks.get(&key).map(|t| t.state);
        match was {
            Some(LocalState::Running) => {
                if exit.succeeded() {
                    tracing::info!("{key}: succeeded");
                } else {
                    tracing::info!("{key}: failed: {}", exit.message);
                }
                let phase = if exit.succeeded() {
                    TaskPhase::Succeeded
                } else {
                    TaskPhase::Failed
                };
                let outputs = self
                    .tasks
                    .get_mut(&key)
                    .and_then(|t| t.step.take())
                    .map(|s| {
                        let store = steps::FsArtifactStore::new(&self.cfg.artifact_dir);
                        let o = steps::collect(&s.prepared, &s.io, exit.succeeded(), &store, s.uid);
                        if let Some(out) = &s.prepared.stdout {
                            steps::append_to_log(out, &s.log, s.uid);
                        }
                        // The outputs are in the report and the store now.
                        let _ = std::fs::remove_dir_all(&s.dir);
                        o
                    });
                let mut reported = exit.clone();
                if !exit.succeeded() {
                    // The reason is usually in its last words: say them where
                    // `describe` and the endpoint's events show the failure.
                    let last = log_path(&self.cfg.logs_dir, &key)
                        .ok()
                        .and_then(|log| crate::logs::last_output(&log, 3, 400));
                    if let Some(last) = last {
                        reported.message = format!("{}; last output: {last}", exit.message);
                    }
                }
                self.report_exit(&key, phase, &reported, outputs);
            }
            // Stopped because it left the desired set: nobody wants a report.
            _ => tracing::info!("{key}: stopped ({})", exit.message),
        }
        // After the outputs were read from it.
        if let Some(tmp) = self.tasks.get_mut(&key).and_then(|t| t.tmp.take()) {
            tmp.remove();
        }
        if self.desired.contains(&key) || !self.desired_seen {
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
                if let (Some(supervisor), Some(exited)) = (t.supervisor, t.exited.clone()) {
                    tokio::spawn(supervisor::stop(
                        supervisor,
                        t.pid,
                        self.cfg.kill_grace,
                        exited,
                    ));
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
                Ok(Some(Event::Started {
                    key,
                    ready,
                    supervisor,
                })) => {
                    if ready.is_err() {
                        left.remove(&key);
                    }
                    self.on_started(key, ready, supervisor);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}
