//! The replicated state machine: every change to cluster state is a
//! [`Command`] in the Raft log, and [`State::apply`] turns the committed
//! command into the new state. Pure and deterministic: time arrives inside
//! the command (set by the proposer), so every replica computes the same
//! state from the same log.
//!
//! Resource accounting is derived from tasks: a task in phase `Bound` or
//! `Running` holds its GPU shares, CPU and memory on its node. The
//! [`State::usage`] index is kept in step incrementally and can be rebuilt
//! from the objects ([`State::rebuild_usage`]) after a restart.

use std::collections::{BTreeMap, BTreeSet};

use gpuctl_common::api::{
    Event, GpuShare, Job, JobPhase, Node, NodePhase, NodeSpec, NodeStatus, ObjectMeta, TaskPhase,
    TaskStatus, API_VERSION, MAX_EVENTS,
};
use serde::{Deserialize, Serialize};

/// A log entry's payload: the command and the proposer's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Wall-clock milliseconds at the proposer; the only clock `apply` sees.
    pub now_ms: u64,
    pub cmd: Command,
}

/// Every change to cluster state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Store a new job (validated before proposing; re-checked here).
    SubmitJob { job: Box<Job> },
    /// Add a node or refresh its inventory and addresses.
    RegisterNode { reg: NodeRegistration },
    /// Place whole gangs (one binding per job).
    Bind { bindings: Vec<Binding> },
    /// A node daemon reported a task's phase.
    TaskReport { report: TaskReport },
    /// Stop a job for good.
    CancelJob { name: String },
    /// Mark a node (un)schedulable.
    Cordon { node: String, unschedulable: bool },
    /// The node missed its heartbeats: fail what ran there.
    NodeLost { node: String },
    /// Fail the current attempt of a job (e.g. it ran past its timeout).
    FailAttempt {
        job: String,
        attempt: u32,
        reason: String,
    },
    /// Store a new endpoint; it starts at `minReplicas`.
    CreateEndpoint {
        endpoint: Box<gpuctl_common::endpoint::Endpoint>,
    },
    /// Remove an endpoint and stop its replicas.
    DeleteEndpoint { name: String },
    /// Set an endpoint's desired replicas: missing replica jobs are created, extra
    /// ones start draining, and replicas whose jobs ended are replaced.
    ScaleEndpoint {
        name: String,
        replicas: u32,
        reason: String,
    },
    /// A draining replica has no request in flight (or its grace ran out): stop it.
    ReplicaDrained { endpoint: String, job: String },
    /// Load the gateway observed, kept for `gpuctl get endpoints`.
    EndpointLoad {
        name: String,
        concurrency: f64,
        requests_per_second: f64,
    },
}

impl Command {
    /// Short name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::SubmitJob { .. } => "SubmitJob",
            Command::RegisterNode { .. } => "RegisterNode",
            Command::Bind { .. } => "Bind",
            Command::TaskReport { .. } => "TaskReport",
            Command::CancelJob { .. } => "CancelJob",
            Command::Cordon { .. } => "Cordon",
            Command::NodeLost { .. } => "NodeLost",
            Command::FailAttempt { .. } => "FailAttempt",
            Command::CreateEndpoint { .. } => "CreateEndpoint",
            Command::DeleteEndpoint { .. } => "DeleteEndpoint",
            Command::ScaleEndpoint { .. } => "ScaleEndpoint",
            Command::ReplicaDrained { .. } => "ReplicaDrained",
            Command::EndpointLoad { .. } => "EndpointLoad",
        }
    }
}

/// What a node daemon tells the scheduler about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRegistration {
    pub name: String,
    pub address: String,
    pub agent_endpoint: String,
    pub inventory: String,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub gpus: Vec<gpuctl_common::api::Gpu>,
    pub labels: BTreeMap<String, String>,
}

/// Where each task of one job goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub job: String,
    pub attempt: u32,
    pub tasks: Vec<TaskPlacement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPlacement {
    pub index: u32,
    pub node: String,
    pub gpus: Vec<GpuShare>,
}

/// A task phase change seen by a node daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    pub node: String,
    pub job: String,
    pub index: u32,
    pub attempt: u32,
    pub phase: TaskPhase,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub pid: Option<u32>,
    /// The port a serving task listens on (endpoint replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Why a command was refused. Refusals change nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A binding lost a race with another change; the scheduler will retry.
    #[error("binding of job {job:?} is stale: {reason}")]
    StaleBinding { job: String, reason: String },
}

/// What an applied command produced, for the proposer's reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Job(Box<Job>),
    Node(Box<Node>),
    Endpoint(Box<gpuctl_common::endpoint::Endpoint>),
    /// Bindings that were applied (by job name) and those refused.
    Bound {
        applied: Vec<String>,
        refused: Vec<(String, ApplyError)>,
    },
    Nothing,
}

/// Identifies a stored object (the key in the state column family).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjKey {
    Job(String),
    Node(String),
    Endpoint(String),
}

impl ObjKey {
    /// The storage key, e.g. `job/train`.
    pub fn storage_key(&self) -> String {
        match self {
            ObjKey::Job(n) => format!("job/{n}"),
            ObjKey::Node(n) => format!("node/{n}"),
            ObjKey::Endpoint(n) => format!("endpoint/{n}"),
        }
    }
}

/// Resources in use on one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeUsage {
    /// Thousandths of each GPU in use, by GPU index.
    pub gpu_milli: BTreeMap<u32, u32>,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
}

/// The whole cluster state, as every replica holds it.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub jobs: BTreeMap<String, Job>,
    pub nodes: BTreeMap<String, Node>,
    /// Endpoints; their replicas are jobs labelled `gpuctl.io/endpoint`.
    pub endpoints: BTreeMap<String, gpuctl_common::endpoint::Endpoint>,
    /// Derived: what tasks hold on each node.
    usage: BTreeMap<String, NodeUsage>,
    /// Objects changed since the last [`State::take_dirty`].
    dirty: BTreeSet<ObjKey>,
}

/// Ports handed out as `MASTER_PORT`: one per job, derived from its uid.
const MASTER_PORT_BASE: u32 = 29500;
const MASTER_PORT_SPAN: u64 = 10_000;

impl State {
    /// Build the state from stored objects (after a restart).
    pub fn from_objects(jobs: Vec<Job>, nodes: Vec<Node>) -> State {
        let mut s = State {
            jobs: jobs
                .into_iter()
                .map(|j| (j.metadata.name.clone(), j))
                .collect(),
            nodes: nodes
                .into_iter()
                .map(|n| (n.metadata.name.clone(), n))
                .collect(),
            ..Default::default()
        };
        s.rebuild_usage();
        s
    }

    /// Add the stored endpoints (after a restart or from a snapshot).
    pub fn with_endpoints(mut self, endpoints: Vec<gpuctl_common::endpoint::Endpoint>) -> State {
        self.endpoints = endpoints
            .into_iter()
            .map(|e| (e.metadata.name.clone(), e))
            .collect();
        self
    }

    /// Recompute the usage index from the tasks.
    pub fn rebuild_usage(&mut self) {
        self.usage.clear();
        let holds: Vec<(String, Vec<GpuShare>, u64, u64)> = self
            .jobs
            .values()
            .flat_map(|j| {
                j.status
                    .tasks
                    .iter()
                    .filter(|t| t.phase.holds_resources())
                    .filter_map(move |t| {
                        let (cpu, mem) = task_cpu_mem(j, t.index);
                        t.node.clone().map(|n| (n, t.gpus.clone(), cpu, mem))
                    })
            })
            .collect();
        for (node, gpus, cpu, mem) in holds {
            self.hold(&node, &gpus, cpu, mem);
        }
    }

    /// Usage of one node (empty when nothing runs there).
    pub fn usage(&self, node: &str) -> NodeUsage {
        self.usage.get(node).cloned().unwrap_or_default()
    }

    /// Record that an object changed (or was removed), to persist it.
    pub(crate) fn mark_dirty(&mut self, key: ObjKey) {
        self.dirty.insert(key);
    }

    /// Objects changed since the last call, to persist with the applied index.
    pub fn take_dirty(&mut self) -> BTreeSet<ObjKey> {
        std::mem::take(&mut self.dirty)
    }

    /// The stored form of an object, or `None` when it was deleted.
    pub fn object_json(&self, key: &ObjKey) -> Option<Vec<u8>> {
        match key {
            ObjKey::Job(n) => self.jobs.get(n).and_then(|j| serde_json::to_vec(j).ok()),
            ObjKey::Node(n) => self.nodes.get(n).and_then(|n| serde_json::to_vec(n).ok()),
            ObjKey::Endpoint(n) => self
                .endpoints
                .get(n)
                .and_then(|e| serde_json::to_vec(e).ok()),
        }
    }

    fn hold(&mut self, node: &str, gpus: &[GpuShare], cpu: u64, mem: u64) {
        let u = self.usage.entry(node.to_string()).or_default();
        for g in gpus {
            *u.gpu_milli.entry(g.index).or_default() += g.milli;
        }
        u.cpu_milli += cpu;
        u.memory_bytes += mem;
    }

    fn release(&mut self, node: &str, gpus: &[GpuShare], cpu: u64, mem: u64) {
        if let Some(u) = self.usage.get_mut(node) {
            for g in gpus {
                if let Some(m) = u.gpu_milli.get_mut(&g.index) {
                    *m = m.saturating_sub(g.milli);
                    if *m == 0 {
                        u.gpu_milli.remove(&g.index);
                    }
                }
            }
            u.cpu_milli = u.cpu_milli.saturating_sub(cpu);
            u.memory_bytes = u.memory_bytes.saturating_sub(mem);
        }
    }

    /// Apply one committed command at log `index`. Deterministic; on error
    /// nothing changed.
    pub fn apply(&mut self, index: u64, env: &Envelope) -> Result<Applied, ApplyError> {
        let now = env.now_ms;
        match &env.cmd {
            Command::SubmitJob { job } => self.submit(index, now, job),
            Command::RegisterNode { reg } => Ok(self.register(index, now, reg)),
            Command::Bind { bindings } => Ok(self.bind_all(index, now, bindings)),
            Command::TaskReport { report } => self.task_report(index, now, report),
            Command::CancelJob { name } => self.cancel(index, now, name),
            Command::Cordon {
                node,
                unschedulable,
            } => self.cordon(index, node, *unschedulable),
            Command::NodeLost { node } => self.node_lost(index, now, node),
            Command::FailAttempt {
                job,
                attempt,
                reason,
            } => {
                let Some(j) = self.jobs.get(job) else {
                    return Ok(Applied::Nothing);
                };
                if j.status.attempt != *attempt || j.status.phase.is_terminal() {
                    return Ok(Applied::Nothing);
                }
                self.fail_attempt(index, now, job, reason, "AttemptFailed");
                Ok(self.job_applied(job))
            }
            Command::CreateEndpoint { endpoint } => self.create_endpoint(index, now, endpoint),
            Command::DeleteEndpoint { name } => self.delete_endpoint(index, now, name),
            Command::ScaleEndpoint {
                name,
                replicas,
                reason,
            } => self.scale_endpoint(index, now, name, *replicas, reason),
            Command::ReplicaDrained { endpoint, job } => {
                self.replica_drained(index, now, endpoint, job)
            }
            Command::EndpointLoad {
                name,
                concurrency,
                requests_per_second,
            } => self.endpoint_load(index, name, *concurrency, *requests_per_second),
        }
    }

    pub(crate) fn job_applied(&self, name: &str) -> Applied {
        self.jobs
            .get(name)
            .map(|j| Applied::Job(Box::new(j.clone())))
            .unwrap_or(Applied::Nothing)
    }

    pub(crate) fn touch_job(&mut self, index: u64, name: &str) {
        if let Some(j) = self.jobs.get_mut(name) {
            j.metadata.resource_version = Some(index);
        }
        self.dirty.insert(ObjKey::Job(name.to_string()));
    }

    fn touch_node(&mut self, index: u64, name: &str) {
        if let Some(n) = self.nodes.get_mut(name) {
            n.metadata.resource_version = Some(index);
        }
        self.dirty.insert(ObjKey::Node(name.to_string()));
    }

    pub(crate) fn submit(
        &mut self,
        index: u64,
        now: u64,
        job: &Job,
    ) -> Result<Applied, ApplyError> {
        let name = job.metadata.name.clone();
        if self.jobs.contains_key(&name) {
            return Err(ApplyError::AlreadyExists { kind: "job", name });
        }
        job.validate()
            .map_err(|e| ApplyError::Invalid(e.to_string()))?;
        let mut j = job.clone();
        j.api_version = API_VERSION.to_string();
        j.metadata.uid = Some(index);
        j.metadata.creation_timestamp_ms = Some(now);
        if j.metadata.queue.is_none() {
            j.metadata.queue = Some("default".to_string());
        }
        j.status = Default::default();
        j.status.attempt = 1;
        j.status.master_port = MASTER_PORT_BASE + (index % MASTER_PORT_SPAN) as u32;
        j.status.tasks = pending_tasks(&j);
        let msg = format!("{} task(s) queued", j.task_count());
        push_event(&mut j, now, "Submitted", msg);
        self.jobs.insert(name.clone(), j);
        self.touch_job(index, &name);
        Ok(self.job_applied(&name))
    }

    fn register(&mut self, index: u64, now: u64, reg: &NodeRegistration) -> Applied {
        let name = reg.name.clone();
        let node = self.nodes.entry(name.clone()).or_insert_with(|| Node {
            api_version: API_VERSION.to_string(),
            kind: "Node".to_string(),
            metadata: ObjectMeta {
                name: name.clone(),
                uid: Some(index),
                creation_timestamp_ms: Some(now),
                ..Default::default()
            },
            spec: NodeSpec::default(),
            status: NodeStatus {
                registered_ms: now,
                last_transition_ms: now,
                ..Default::default()
            },
        });
        node.metadata.labels = reg.labels.clone();
        let s = &mut node.status;
        if s.phase != NodePhase::Ready {
            s.phase = NodePhase::Ready;
            s.last_transition_ms = now;
        }
        s.address = reg.address.clone();
        s.agent_endpoint = reg.agent_endpoint.clone();
        s.inventory = reg.inventory.clone();
        s.cpu_milli = reg.cpu_milli;
        s.memory_bytes = reg.memory_bytes;
        s.gpus = reg.gpus.clone();
        s.registered_ms = now;
        self.touch_node(index, &name);
        Applied::Node(Box::new(self.nodes[&name].clone()))
    }

    fn cordon(
        &mut self,
        index: u64,
        node: &str,
        unschedulable: bool,
    ) -> Result<Applied, ApplyError> {
        let n = self
            .nodes
            .get_mut(node)
            .ok_or_else(|| ApplyError::NotFound {
                kind: "node",
                name: node.to_string(),
            })?;
        n.spec.unschedulable = unschedulable;
        self.touch_node(index, node);
        Ok(Applied::Node(Box::new(self.nodes[node].clone())))
    }

    fn bind_all(&mut self, index: u64, now: u64, bindings: &[Binding]) -> Applied {
        let mut applied = Vec::new();
        let mut refused = Vec::new();
        for b in bindings {
            match self.bind(index, now, b) {
                Ok(()) => applied.push(b.job.clone()),
                Err(e) => refused.push((b.job.clone(), e)),
            }
        }
        Applied::Bound { applied, refused }
    }

    /// Check one gang binding against current state, then commit it whole.
    fn bind(&mut self, index: u64, now: u64, b: &Binding) -> Result<(), ApplyError> {
        let stale = |reason: String| ApplyError::StaleBinding {
            job: b.job.clone(),
            reason,
        };
        let job = self
            .jobs
            .get(&b.job)
            .ok_or_else(|| stale("job no longer exists".into()))?;
        if job.status.phase != JobPhase::Pending || job.status.attempt != b.attempt {
            return Err(stale(format!(
                "job is {} at attempt {}",
                job.status.phase, job.status.attempt
            )));
        }
        let mut seen = BTreeSet::new();
        // Resources this binding adds, per node, to check against capacity.
        let mut add: BTreeMap<&str, NodeUsage> = BTreeMap::new();
        for p in &b.tasks {
            let t = job
                .status
                .tasks
                .get(p.index as usize)
                .ok_or_else(|| stale(format!("no task {}", p.index)))?;
            if t.phase != TaskPhase::Pending || !seen.insert(p.index) {
                return Err(stale(format!("task {} is {}", p.index, t.phase)));
            }
            let spec = job
                .task_spec(p.index)
                .ok_or_else(|| stale(format!("no task {}", p.index)))?;
            let want: u64 = spec.resources.gpu_milli();
            let got: u64 = p.gpus.iter().map(|g| u64::from(g.milli)).sum();
            if want != got {
                return Err(stale(format!(
                    "task {} needs {want} GPU milli, binding gives {got}",
                    p.index
                )));
            }
            let (cpu, mem) = task_cpu_mem(job, p.index);
            let u = add.entry(p.node.as_str()).or_default();
            for g in &p.gpus {
                *u.gpu_milli.entry(g.index).or_default() += g.milli;
            }
            u.cpu_milli += cpu;
            u.memory_bytes += mem;
        }
        let min = job.spec.min_available.unwrap_or_else(|| job.task_count());
        if (b.tasks.len() as u32) < min {
            return Err(stale(format!(
                "{} of {} tasks placed, gang needs {min}",
                b.tasks.len(),
                job.task_count()
            )));
        }
        for (node_name, extra) in &add {
            let node = self
                .nodes
                .get(*node_name)
                .ok_or_else(|| stale(format!("node {node_name} unknown")))?;
            if node.status.phase != NodePhase::Ready || node.spec.unschedulable {
                return Err(stale(format!("node {node_name} is not schedulable")));
            }
            let used = self.usage(node_name);
            for (gi, m) in &extra.gpu_milli {
                let gpu = node
                    .status
                    .gpus
                    .iter()
                    .find(|g| g.index == *gi)
                    .ok_or_else(|| stale(format!("node {node_name} has no GPU {gi}")))?;
                if !gpu.healthy {
                    return Err(stale(format!("GPU {gi} on {node_name} is unhealthy")));
                }
                if used.gpu_milli.get(gi).copied().unwrap_or(0) + m > 1000 {
                    return Err(stale(format!("GPU {gi} on {node_name} is over-committed")));
                }
            }
            if node.status.cpu_milli > 0 && used.cpu_milli + extra.cpu_milli > node.status.cpu_milli
            {
                return Err(stale(format!("not enough CPU on {node_name}")));
            }
            if node.status.memory_bytes > 0
                && used.memory_bytes + extra.memory_bytes > node.status.memory_bytes
            {
                return Err(stale(format!("not enough memory on {node_name}")));
            }
        }
        // All checks passed: commit the gang.
        let mut local: BTreeMap<String, u32> = BTreeMap::new();
        let mut holds = Vec::new();
        let job = self.jobs.get_mut(&b.job).expect("checked above");
        let mut placed: Vec<&TaskPlacement> = b.tasks.iter().collect();
        placed.sort_by_key(|p| p.index);
        for p in placed {
            let lr = local.entry(p.node.clone()).or_default();
            let (cpu, mem) = task_cpu_mem(job, p.index);
            let t = &mut job.status.tasks[p.index as usize];
            t.phase = TaskPhase::Bound;
            t.node = Some(p.node.clone());
            t.gpus = p.gpus.clone();
            t.local_rank = *lr;
            *lr += 1;
            holds.push((p.node.clone(), p.gpus.clone(), cpu, mem));
        }
        // Tasks a partial gang (minAvailable) left out will not run this attempt.
        for t in job
            .status
            .tasks
            .iter_mut()
            .filter(|t| t.phase == TaskPhase::Pending)
        {
            t.phase = TaskPhase::Cancelled;
            t.message = Some("not placed: the gang started with minAvailable tasks".into());
        }
        job.status.phase = JobPhase::Running;
        job.status.start_time_ms = Some(now);
        let nodes: BTreeSet<&str> = b.tasks.iter().map(|p| p.node.as_str()).collect();
        let msg = format!(
            "attempt {}: {} task(s) bound to {}",
            job.status.attempt,
            b.tasks.len(),
            nodes.into_iter().collect::<Vec<_>>().join(", ")
        );
        push_event(job, now, "Scheduled", msg);
        for (n, g, c, m) in holds {
            self.hold(&n, &g, c, m);
        }
        self.touch_job(index, &b.job);
        Ok(())
    }

    fn task_report(&mut self, index: u64, now: u64, r: &TaskReport) -> Result<Applied, ApplyError> {
        let Some(job) = self.jobs.get_mut(&r.job) else {
            return Ok(Applied::Nothing); // job gone: a stale report
        };
        if job.status.attempt != r.attempt || job.status.phase.is_terminal() {
            return Ok(Applied::Nothing);
        }
        let Some(t) = job.status.tasks.get_mut(r.index as usize) else {
            return Ok(Applied::Nothing);
        };
        if t.node.as_deref() != Some(r.node.as_str()) || !t.phase.holds_resources() {
            return Ok(Applied::Nothing);
        }
        match r.phase {
            TaskPhase::Running => {
                if t.phase == TaskPhase::Bound {
                    t.phase = TaskPhase::Running;
                    t.pid = r.pid;
                    t.port = r.port;
                    t.start_time_ms = Some(now);
                    self.touch_job(index, &r.job);
                }
            }
            TaskPhase::Succeeded | TaskPhase::Failed => {
                t.phase = r.phase;
                t.exit_code = r.exit_code;
                t.message = r.message.clone();
                t.finish_time_ms = Some(now);
                if r.pid.is_some() {
                    t.pid = r.pid;
                }
                let (node, gpus) = (r.node.clone(), t.gpus.clone());
                let (cpu, mem) = task_cpu_mem(job, r.index);
                self.release(&node, &gpus, cpu, mem);
                if r.phase == TaskPhase::Failed {
                    let code = r
                        .exit_code
                        .map(|c| format!("exit code {c}"))
                        .unwrap_or_else(|| "failed".into());
                    let why = match &r.message {
                        Some(m) if !m.is_empty() => format!("task {} {code}: {m}", r.index),
                        _ => format!("task {} {code}", r.index),
                    };
                    self.fail_attempt(index, now, &r.job, &why, "TaskFailed");
                } else {
                    let job = self.jobs.get_mut(&r.job).expect("present");
                    let all_done =
                        job.status.tasks.iter().all(|t| {
                            matches!(t.phase, TaskPhase::Succeeded | TaskPhase::Cancelled)
                        });
                    if all_done {
                        job.status.phase = JobPhase::Succeeded;
                        job.status.completion_time_ms = Some(now);
                        job.status.message = None;
                        push_event(
                            job,
                            now,
                            "Succeeded",
                            format!("attempt {} succeeded", job.status.attempt),
                        );
                    }
                }
                self.touch_job(index, &r.job);
            }
            other => {
                return Err(ApplyError::Invalid(format!(
                    "a node may report Running, Succeeded or Failed, not {other}"
                )))
            }
        }
        Ok(self.job_applied(&r.job))
    }

    /// Stop every task of the job's current attempt that still holds
    /// resources, marking it `phase`; pending tasks are cancelled too.
    pub(crate) fn stop_tasks(&mut self, name: &str, phase: TaskPhase, message: &str) {
        let Some(job) = self.jobs.get_mut(name) else {
            return;
        };
        let mut releases = Vec::new();
        for i in 0..job.status.tasks.len() {
            let t = &job.status.tasks[i];
            if t.phase.is_terminal() {
                continue;
            }
            let holds = t.phase.holds_resources();
            let (cpu, mem) = task_cpu_mem(job, t.index);
            let t = &mut job.status.tasks[i];
            if holds {
                if let Some(n) = &t.node {
                    releases.push((n.clone(), t.gpus.clone(), cpu, mem));
                }
            }
            t.phase = if holds { phase } else { TaskPhase::Cancelled };
            t.message = Some(message.to_string());
        }
        for (n, g, c, m) in releases {
            self.release(&n, &g, c, m);
        }
    }

    /// The current attempt failed: stop its other tasks, then retry the
    /// whole job if it has retries left, or fail it.
    fn fail_attempt(&mut self, index: u64, now: u64, name: &str, reason: &str, event: &str) {
        self.stop_tasks(
            name,
            TaskPhase::Failed,
            &format!("attempt failed: {reason}"),
        );
        let Some(job) = self.jobs.get_mut(name) else {
            return;
        };
        let attempt = job.status.attempt;
        push_event(job, now, event, format!("attempt {attempt}: {reason}"));
        if attempt <= job.spec.max_retries {
            job.status.attempt = attempt + 1;
            job.status.phase = JobPhase::Pending;
            job.status.tasks = pending_tasks(job);
            job.status.start_time_ms = None;
            job.status.message = Some(format!("retrying after: {reason}"));
            let msg = format!(
                "attempt {} of {} queued",
                attempt + 1,
                job.spec.max_retries + 1
            );
            push_event(job, now, "Retrying", msg);
        } else {
            job.status.phase = JobPhase::Failed;
            job.status.completion_time_ms = Some(now);
            job.status.message = Some(reason.to_string());
        }
        self.touch_job(index, name);
    }

    fn cancel(&mut self, index: u64, now: u64, name: &str) -> Result<Applied, ApplyError> {
        let job = self.jobs.get(name).ok_or_else(|| ApplyError::NotFound {
            kind: "job",
            name: name.to_string(),
        })?;
        if job.status.phase.is_terminal() {
            return Err(ApplyError::FailedPrecondition(format!(
                "job {name:?} already {}; nothing to cancel",
                job.status.phase
            )));
        }
        self.stop_tasks(name, TaskPhase::Cancelled, "job cancelled");
        let job = self.jobs.get_mut(name).expect("checked");
        job.status.phase = JobPhase::Cancelled;
        job.status.completion_time_ms = Some(now);
        job.status.message = Some("cancelled by user".into());
        push_event(job, now, "Cancelled", "cancelled by user".into());
        self.touch_job(index, name);
        Ok(self.job_applied(name))
    }

    fn node_lost(&mut self, index: u64, now: u64, node: &str) -> Result<Applied, ApplyError> {
        let n = self
            .nodes
            .get_mut(node)
            .ok_or_else(|| ApplyError::NotFound {
                kind: "node",
                name: node.to_string(),
            })?;
        if n.status.phase == NodePhase::Lost {
            return Ok(Applied::Nothing);
        }
        n.status.phase = NodePhase::Lost;
        n.status.last_transition_ms = now;
        self.touch_node(index, node);
        let affected: Vec<String> = self
            .jobs
            .values()
            .filter(|j| {
                j.status
                    .tasks
                    .iter()
                    .any(|t| t.phase.holds_resources() && t.node.as_deref() == Some(node))
            })
            .map(|j| j.metadata.name.clone())
            .collect();
        for j in affected {
            self.fail_attempt(
                index,
                now,
                &j,
                &format!("node {node} was lost (missed heartbeats)"),
                "NodeLost",
            );
        }
        Ok(Applied::Node(Box::new(self.nodes[node].clone())))
    }

    /// Jobs waiting for placement, in submission order.
    pub fn pending_jobs(&self) -> Vec<&Job> {
        let mut v: Vec<&Job> = self
            .jobs
            .values()
            .filter(|j| j.status.phase == JobPhase::Pending)
            .collect();
        v.sort_by_key(|j| {
            (
                std::cmp::Reverse(j.spec.priority),
                j.metadata.uid.unwrap_or(0),
            )
        });
        v
    }

    /// Tasks (of current attempts) bound to or running on `node`.
    pub fn tasks_on_node<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = (&'a Job, &'a TaskStatus)> + 'a {
        self.jobs.values().flat_map(move |j| {
            j.status
                .tasks
                .iter()
                .filter(move |t| t.phase.holds_resources() && t.node.as_deref() == Some(node))
                .map(move |t| (j, t))
        })
    }
}

/// CPU and memory one task of `job` asks for.
fn task_cpu_mem(job: &Job, index: u32) -> (u64, u64) {
    job.task_spec(index)
        .map(|s| {
            (
                s.resources.cpu.map(|c| c.0).unwrap_or(0),
                s.resources.memory.map(|m| m.0).unwrap_or(0),
            )
        })
        .unwrap_or((0, 0))
}

fn pending_tasks(job: &Job) -> Vec<TaskStatus> {
    let mut out = Vec::new();
    for g in &job.spec.tasks {
        for _ in 0..g.replicas {
            out.push(TaskStatus {
                index: out.len() as u32,
                group: g.name.clone(),
                ..Default::default()
            });
        }
    }
    out
}

pub(crate) fn push_event(job: &mut Job, now: u64, reason: &str, message: String) {
    job.status.events.push(Event {
        time_ms: now,
        reason: reason.to_string(),
        message,
    });
    let n = job.status.events.len();
    if n > MAX_EVENTS {
        job.status.events.drain(..n - MAX_EVENTS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuctl_common::api::{Gpu, JobSpec, Resources, TaskSpec};

    fn reg(name: &str, gpus: u32) -> Command {
        Command::RegisterNode {
            reg: NodeRegistration {
                name: name.into(),
                address: "127.0.0.1".into(),
                agent_endpoint: "http://127.0.0.1:1".into(),
                inventory: "simulated".into(),
                cpu_milli: 64_000,
                memory_bytes: 256 << 30,
                gpus: (0..gpus)
                    .map(|i| Gpu {
                        uuid: format!("GPU-{name}-{i}"),
                        index: i,
                        model: "A100-80GB".into(),
                        memory_bytes: 80 << 30,
                        nvlink_domain: String::new(),
                        healthy: true,
                    })
                    .collect(),
                labels: Default::default(),
            },
        }
    }

    fn job(name: &str, replicas: u32, gpus: f64, retries: u32) -> Job {
        let mut j = Job::new(
            name,
            JobSpec {
                tasks: vec![TaskSpec {
                    name: "main".into(),
                    replicas,
                    command: vec!["true".into()],
                    env: Default::default(),
                    working_dir: None,
                    resources: Resources {
                        gpus,
                        ..Default::default()
                    },
                }],
                min_available: None,
                priority: 0,
                topology: Default::default(),
                max_retries: retries,
                timeout_seconds: None,
            },
        );
        j.metadata.queue = None;
        j
    }

    struct Harness {
        s: State,
        index: u64,
    }

    impl Harness {
        fn new() -> Self {
            Harness {
                s: State::default(),
                index: 0,
            }
        }
        fn apply(&mut self, cmd: Command) -> Result<Applied, ApplyError> {
            self.index += 1;
            let env = Envelope {
                now_ms: 1000 * self.index,
                cmd,
            };
            self.s.apply(self.index, &env)
        }
        fn bind(&mut self, job: &str, node: &str, gpu_sets: &[&[u32]]) -> Applied {
            let attempt = self.s.jobs[job].status.attempt;
            let tasks = gpu_sets
                .iter()
                .enumerate()
                .map(|(i, set)| TaskPlacement {
                    index: i as u32,
                    node: node.into(),
                    gpus: set
                        .iter()
                        .map(|g| GpuShare {
                            index: *g,
                            uuid: format!("GPU-{node}-{g}"),
                            milli: 1000,
                        })
                        .collect(),
                })
                .collect();
            self.apply(Command::Bind {
                bindings: vec![Binding {
                    job: job.into(),
                    attempt,
                    tasks,
                }],
            })
            .unwrap()
        }
        fn report(&mut self, job: &str, index: u32, phase: TaskPhase, code: Option<i32>) {
            let t = &self.s.jobs[job].status.tasks[index as usize];
            let r = TaskReport {
                node: t.node.clone().unwrap_or_default(),
                job: job.into(),
                index,
                attempt: self.s.jobs[job].status.attempt,
                phase,
                exit_code: code,
                message: None,
                pid: Some(42),
                port: None,
            };
            self.apply(Command::TaskReport { report: r }).unwrap();
        }
        fn check_usage(&self) {
            let mut rebuilt = self.s.clone();
            rebuilt.rebuild_usage();
            for n in self.s.nodes.keys() {
                assert_eq!(
                    self.s.usage(n),
                    rebuilt.usage(n),
                    "usage index drifted on {n}"
                );
            }
        }
    }

    #[test]
    fn submit_bind_run_succeed() {
        let mut h = Harness::new();
        h.apply(reg("n1", 4)).unwrap();
        h.apply(Command::SubmitJob {
            job: Box::new(job("a", 2, 2.0, 0)),
        })
        .unwrap();
        assert_eq!(h.s.jobs["a"].status.phase, JobPhase::Pending);
        assert_eq!(h.s.jobs["a"].metadata.queue.as_deref(), Some("default"));
        let Applied::Bound { applied, refused } = h.bind("a", "n1", &[&[0, 1], &[2, 3]]) else {
            panic!()
        };
        assert_eq!((applied.len(), refused.len()), (1, 0));
        assert_eq!(h.s.usage("n1").gpu_milli.len(), 4);
        assert_eq!(h.s.jobs["a"].status.tasks[1].local_rank, 1);
        h.report("a", 0, TaskPhase::Running, None);
        h.report("a", 1, TaskPhase::Running, None);
        h.report("a", 0, TaskPhase::Succeeded, Some(0));
        assert_eq!(h.s.jobs["a"].status.phase, JobPhase::Running);
        h.report("a", 1, TaskPhase::Succeeded, Some(0));
        assert_eq!(h.s.jobs["a"].status.phase, JobPhase::Succeeded);
        assert!(h.s.usage("n1").gpu_milli.is_empty());
        h.check_usage();
    }

    #[test]
    fn duplicate_submit_is_refused_and_changes_nothing() {
        let mut h = Harness::new();
        h.apply(Command::SubmitJob {
            job: Box::new(job("a", 1, 1.0, 0)),
        })
        .unwrap();
        let before = h.s.jobs["a"].clone();
        let _ = h.s.take_dirty();
        let e = h
            .apply(Command::SubmitJob {
                job: Box::new(job("a", 2, 1.0, 0)),
            })
            .unwrap_err();
        assert!(matches!(e, ApplyError::AlreadyExists { .. }));
        assert_eq!(h.s.jobs["a"], before);
        assert!(h.s.take_dirty().is_empty());
    }

    #[test]
    fn over_commit_is_refused() {
        let mut h = Harness::new();
        h.apply(reg("n1", 4)).unwrap();
        h.apply(Command::SubmitJob {
            job: Box::new(job("a", 1, 4.0, 0)),
        })
        .unwrap();
        h.apply(Command::SubmitJob {
            job: Box::new(job("b", 1, 1.0, 0)),
        })
        .unwrap();
        h.bind("a", "n1", &[&[0, 1, 2, 3]]);
        let Applied::Bound { refused, .. } = h.bind("b", "n1", &[&[2]]) else {
            panic!()
        };
        assert_eq!(refused.len(), 1);
        assert_eq!(h.s.jobs["b"].status.phase, JobPhase::Pending);
        h.check_usage();
    }

    #[test]
    fn failure_retries_whole_gang_then_fails() {
        let mut h = Harness::new();
        h.apply(reg("n1", 4)).unwrap();
        h.apply(Command::SubmitJob {
            job: Box::new(job("a", 2, 1.0, 1)),
        })
        .unwrap();
        h.bind("a", "n1", &[&[0], &[1]]);
        h.report("a", 0, TaskPhase::Running, None);
        h.report("a", 1, TaskPhase::Failed, Some(3));
        let j = &h.s.jobs["a"];
        assert_eq!((j.status.phase, j.status.attempt), (JobPhase::Pending, 2));
        assert!(j.status.tasks.iter().all(|t| t.phase == TaskPhase::Pending));
        assert!(
            h.s.usage("n1").gpu_milli.is_empty(),
            "the failed attempt released everything"
        );
        // A late report of the old attempt is ignored.
        let stale = TaskReport {
            node: "n1".into(),
            job: "a".into(),
            index: 0,
            attempt: 1,
            phase: TaskPhase::Succeeded,
            exit_code: Some(0),
            message: None,
            pid: None,
            port: None,
        };
        h.apply(Command::TaskReport { report: stale }).unwrap();
        assert_eq!(h.s.jobs["a"].status.phase, JobPhase::Pending);
        h.bind("a", "n1", &[&[2], &[3]]);
        h.report("a", 0, TaskPhase::Failed, Some(1));
        let j = &h.s.jobs["a"];
        assert_eq!(j.status.phase, JobPhase::Failed);
        assert!(j.status.message.as_deref().unwrap().contains("exit code 1"));
        h.check_usage();
    }

    #[test]
    fn lost_node_fails_its_tasks() {
        let mut h = Harness::new();
        h.apply(reg("n1", 2)).unwrap();
        h.apply(Command::SubmitJob {
            job: Box::new(job("a", 1, 2.0, 1)),
        })
        .unwrap();
        h.bind("a", "n1", &[&[0, 1]]);
        h.report("a", 0, TaskPhase::Running, None);
        h.apply(Command::NodeLost { node: "n1".into() }).unwrap();
        assert_eq!(h.s.nodes["n1"].status.phase, NodePhase::Lost);
        let j = &h.s.jobs["a"];
        assert_eq!((j.status.phase, j.status.attempt), (JobPhase::Pending, 2));
        assert!(j.status.events.iter().any(|e| e.reason == "NodeLost"));
        // Binding onto a lost node is refused.
        let Applied::Bound { refused, .. } = h.bind("a", "n1", &[&[0, 1]]) else {
            panic!()
        };
        assert_eq!(refused.len(), 1);
        // It comes back by registering again.
        h.apply(reg("n1", 2)).unwrap();
        assert_eq!(h.s.nodes["n1"].status.phase, NodePhase::Ready);
        h.check_usage();
    }

    #[test]
    fn cancel_releases_and_is_final() {
        let mut h = Harness::new();
        h.apply(reg("n1", 2)).unwrap();
        h.apply(Command::SubmitJob {
            job: Box::new(job("a", 1, 2.0, 3)),
        })
        .unwrap();
        h.bind("a", "n1", &[&[0, 1]]);
        h.apply(Command::CancelJob { name: "a".into() }).unwrap();
        assert_eq!(h.s.jobs["a"].status.phase, JobPhase::Cancelled);
        assert!(h.s.usage("n1").gpu_milli.is_empty());
        assert!(matches!(
            h.apply(Command::CancelJob { name: "a".into() }),
            Err(ApplyError::FailedPrecondition(_))
        ));
        assert!(matches!(
            h.apply(Command::CancelJob { name: "zz".into() }),
            Err(ApplyError::NotFound { .. })
        ));
    }

    #[test]
    fn cordoned_node_refuses_binding() {
        let mut h = Harness::new();
        h.apply(reg("n1", 2)).unwrap();
        h.apply(Command::Cordon {
            node: "n1".into(),
            unschedulable: true,
        })
        .unwrap();
        h.apply(Command::SubmitJob {
            job: Box::new(job("a", 1, 1.0, 0)),
        })
        .unwrap();
        let Applied::Bound { refused, .. } = h.bind("a", "n1", &[&[0]]) else {
            panic!()
        };
        assert_eq!(refused.len(), 1);
    }

    #[test]
    fn envelope_round_trips_as_json() {
        let env = Envelope {
            now_ms: 7,
            cmd: Command::SubmitJob {
                job: Box::new(job("a", 2, 0.5, 0)),
            },
        };
        let bytes = serde_json::to_vec(&env).unwrap();
        let back: Envelope = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, env);
    }
}
