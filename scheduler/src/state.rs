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
use gpuctl_common::queue::{Queue, QueueStatus, DEFAULT_QUEUE};
use serde::{Deserialize, Serialize};

mod workflows;
pub use workflows::{
    sanitize_job_name, MemoRecord, StepOutputs, WorkflowObject, WorkflowRecords, LABEL_STEP,
    LABEL_WORKFLOW, WORKFLOW_API_VERSION,
};

/// A log entry's payload: the command and the proposer's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Wall-clock milliseconds at the proposer; the only clock `apply` sees.
    pub now_ms: u64,
    pub cmd: Command,
    /// The client's id for this request, the same on every retry of it: a
    /// request already applied is answered from its record instead of being
    /// applied again (see [`State::apply`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Envelope {
    /// A command stamped with `now_ms`, with no request id.
    pub fn new(now_ms: u64, cmd: Command) -> Envelope {
        Envelope {
            now_ms,
            cmd,
            request_id: None,
        }
    }
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
    /// Create or replace a queue. When the queue carries
    /// `metadata.resourceVersion`, the replace is a compare-and-set on it.
    PutQueue { queue: Box<Queue> },
    /// Stop the current attempts of `victims` (job, attempt) so that job
    /// `by` can run; each is queued again without using up a retry.
    Preempt {
        victims: Vec<(String, u32)>,
        by: String,
        reason: String,
    },
    /// Store a workflow and start its run under `name` (the proposer picks
    /// the `generateName` suffix, so every replica agrees on it).
    SubmitWorkflow {
        name: String,
        workflow: Box<gpuctl_pipelines::Workflow>,
        #[serde(default)]
        arguments: BTreeMap<String, String>,
    },
    /// A workflow's timer passed (retry backoff, a deadline).
    WorkflowTick { name: String },
    /// Stop a workflow: its running steps are cancelled.
    CancelWorkflow { name: String },
    /// Remove a finished job.
    DeleteJob { name: String },
    /// Remove a finished workflow and its step jobs.
    DeleteWorkflow { name: String },
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
            Command::PutQueue { .. } => "PutQueue",
            Command::Preempt { .. } => "Preempt",
            Command::SubmitWorkflow { .. } => "SubmitWorkflow",
            Command::WorkflowTick { .. } => "WorkflowTick",
            Command::CancelWorkflow { .. } => "CancelWorkflow",
            Command::DeleteJob { .. } => "DeleteJob",
            Command::DeleteWorkflow { .. } => "DeleteWorkflow",
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
    /// A workflow step's outputs, with its final report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<StepOutputs>,
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
    /// A compare-and-set named a resourceVersion that is no longer current.
    #[error("{0}")]
    Conflict(String),
    /// The refusal recorded for a request that is being retried.
    #[error("{message}")]
    Repeated { code: ErrorCode, message: String },
}

/// The class of an [`ApplyError`], kept in request records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    AlreadyExists,
    NotFound,
    Invalid,
    FailedPrecondition,
    Conflict,
}

impl ApplyError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ApplyError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            ApplyError::NotFound { .. } => ErrorCode::NotFound,
            ApplyError::Invalid(_) => ErrorCode::Invalid,
            ApplyError::FailedPrecondition(_) | ApplyError::StaleBinding { .. } => {
                ErrorCode::FailedPrecondition
            }
            ApplyError::Conflict(_) => ErrorCode::Conflict,
            ApplyError::Repeated { code, .. } => *code,
        }
    }
}

/// How an applied request ended, kept for [`REQUEST_TTL_MS`] so that a
/// client's retry of it gets the same answer instead of a second apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: String,
    /// The proposer's clock when it was applied.
    pub at_ms: u64,
    /// The Raft index it was applied at.
    pub index: u64,
    /// The object it changed (its storage key), when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<(ErrorCode, String)>,
}

/// How long a request is remembered: longer than any client keeps retrying.
pub const REQUEST_TTL_MS: u64 = 10 * 60 * 1000;
/// Most requests remembered at once; the oldest are forgotten first.
pub const MAX_REQUEST_RECORDS: usize = 100_000;
/// Longest accepted request id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// What an applied command produced, for the proposer's reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Job(Box<Job>),
    Node(Box<Node>),
    Queue(Box<Queue>),
    /// A workflow, as the API serves it.
    Workflow(Box<serde_json::Value>),
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
    Queue(String),
    /// A [`RequestRecord`], by request id.
    Request(String),
    /// A workflow's header record (its run without nodes).
    Workflow(String),
    /// One node of a workflow's run: (workflow, node id).
    WorkflowNode(String, String),
    /// A memoization cache entry, by key.
    Memo(String),
    Endpoint(String),
}

impl ObjKey {
    /// The storage key, e.g. `job/train`.
    pub fn storage_key(&self) -> String {
        match self {
            ObjKey::Job(n) => format!("job/{n}"),
            ObjKey::Node(n) => format!("node/{n}"),
            ObjKey::Queue(n) => format!("queue/{n}"),
            ObjKey::Request(n) => format!("req/{n}"),
            ObjKey::Workflow(n) => format!("workflow/{n}"),
            ObjKey::WorkflowNode(w, id) => format!("wfnode/{w}/{id}"),
            ObjKey::Memo(k) => format!("memo/{k}"),
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
    pub queues: BTreeMap<String, Queue>,
    /// Recently applied requests, by id, and the same in age order.
    requests: BTreeMap<String, RequestRecord>,
    requests_by_age: BTreeSet<(u64, String)>,
    pub workflows: BTreeMap<String, WorkflowObject>,
    /// The workflows' memoization cache: `memoize.key` → outputs.
    pub memo: BTreeMap<String, gpuctl_pipelines::MemoEntry>,
    /// Derived: each workflow's nodes as last marked for storing, to find
    /// the ones an apply changed.
    persisted_nodes: BTreeMap<String, BTreeMap<String, gpuctl_pipelines::Node>>,
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

    /// Build the state from the state column family's objects (storage
    /// key, JSON), as stored by [`State::object_json`]. Unknown keys are
    /// skipped (they belong to a newer version); an undecodable object is an
    /// error naming its key.
    pub fn from_stored(objects: &[(String, Vec<u8>)]) -> Result<State, String> {
        fn decode<T: serde::de::DeserializeOwned>(k: &str, v: &[u8]) -> Result<T, String> {
            serde_json::from_slice(v).map_err(|e| format!("stored object {k}: {e}"))
        }
        let mut s = State::default();
        let mut workflows = WorkflowRecords::default();
        let mut memo = Vec::new();
        for (k, v) in objects {
            if workflows
                .add(k.as_bytes(), v)
                .map_err(|e| format!("stored object {k}: {e}"))?
            {
                // A workflow's header or one of its nodes.
            } else if k.starts_with("memo/") {
                memo.push(decode::<MemoRecord>(k, v)?);
            } else if let Some(n) = k.strip_prefix("job/") {
                s.jobs.insert(n.to_string(), decode(k, v)?);
            } else if let Some(n) = k.strip_prefix("node/") {
                s.nodes.insert(n.to_string(), decode(k, v)?);
            } else if let Some(n) = k.strip_prefix("endpoint/") {
                s.endpoints.insert(n.to_string(), decode(k, v)?);
            } else if let Some(n) = k.strip_prefix("queue/") {
                s.queues.insert(n.to_string(), decode(k, v)?);
            } else if k.starts_with("req/") {
                let r: RequestRecord = decode(k, v)?;
                s.requests_by_age.insert((r.at_ms, r.id.clone()));
                s.requests.insert(r.id.clone(), r);
            }
        }
        s.rebuild_usage();
        Ok(s.with_workflows(workflows.finish(), memo))
    }

    /// Every stored object as (storage key, JSON): what [`State::from_stored`]
    /// reads back.
    pub fn stored_objects(&self) -> Vec<(String, Vec<u8>)> {
        let keys = self
            .jobs
            .keys()
            .map(|n| ObjKey::Job(n.clone()))
            .chain(self.nodes.keys().map(|n| ObjKey::Node(n.clone())))
            .chain(self.queues.keys().map(|n| ObjKey::Queue(n.clone())))
            .chain(self.requests.keys().map(|n| ObjKey::Request(n.clone())))
            .chain(self.memo.keys().map(|k| ObjKey::Memo(k.clone())))
            .chain(self.endpoints.keys().map(|n| ObjKey::Endpoint(n.clone())));
        let mut out: Vec<(String, Vec<u8>)> = keys
            .filter_map(|k| self.object_json(&k).map(|v| (k.storage_key(), v)))
            .collect();
        for w in self.workflows.values() {
            out.extend(w.records().into_iter().map(|(k, v)| (k.storage_key(), v)));
        }
        out
    }

    /// The record of a request applied in the last [`REQUEST_TTL_MS`].
    pub fn request(&self, id: &str) -> Option<&RequestRecord> {
        self.requests.get(id)
    }

    /// What a queue's jobs hold and wait for now.
    pub fn queue_status(&self, queue: &str) -> QueueStatus {
        let mut st = QueueStatus::default();
        let mut milli = 0u64;
        for j in self.jobs.values() {
            if j.metadata.queue.as_deref().unwrap_or(DEFAULT_QUEUE) != queue {
                continue;
            }
            match j.status.phase {
                JobPhase::Pending => st.pending_jobs += 1,
                JobPhase::Running => st.running_jobs += 1,
                _ => {}
            }
            milli += j.gpu_milli_held();
        }
        st.gpus_in_use = milli as f64 / 1000.0;
        st
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

    /// Usage of each node where something runs, by node name (in order).
    pub fn usages(&self) -> impl Iterator<Item = (&str, &NodeUsage)> + '_ {
        self.usage.iter().map(|(n, u)| (n.as_str(), u))
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
            ObjKey::Queue(n) => self.queues.get(n).and_then(|q| serde_json::to_vec(q).ok()),
            ObjKey::Request(n) => self
                .requests
                .get(n)
                .and_then(|r| serde_json::to_vec(r).ok()),
            ObjKey::Workflow(n) => self.workflows.get(n).and_then(|w| w.header_json()),
            ObjKey::WorkflowNode(w, id) => self.workflows.get(w).and_then(|w| w.node_json(id)),
            ObjKey::Memo(k) => self.memo.get(k).and_then(|e| {
                serde_json::to_vec(&MemoRecord {
                    key: k.clone(),
                    entry: e.clone(),
                })
                .ok()
            }),
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
    ///
    /// A command with a request id that was already applied is not applied
    /// again: the answer is the recorded one (the object's current form, or
    /// the same refusal). This makes a client's retry after a lost answer
    /// (say, the leader died between commit and reply) safe for every write,
    /// compare-and-set included.
    pub fn apply(&mut self, index: u64, env: &Envelope) -> Result<Applied, ApplyError> {
        let Some(id) = &env.request_id else {
            return self.apply_cmd(index, env);
        };
        self.forget_requests(env.now_ms);
        if let Some(r) = self.requests.get(id) {
            return match &r.error {
                Some((code, message)) => Err(ApplyError::Repeated {
                    code: *code,
                    message: message.clone(),
                }),
                None => Ok(r
                    .object
                    .as_deref()
                    .map(|k| self.applied_object(k))
                    .unwrap_or(Applied::Nothing)),
            };
        }
        if id.is_empty() || id.len() > MAX_REQUEST_ID_LEN {
            return Err(ApplyError::Invalid(format!(
                "request id must be 1 to {MAX_REQUEST_ID_LEN} bytes"
            )));
        }
        let result = self.apply_cmd(index, env);
        let (object, error) = match &result {
            Ok(Applied::Job(j)) => (Some(ObjKey::Job(j.metadata.name.clone())), None),
            Ok(Applied::Node(n)) => (Some(ObjKey::Node(n.metadata.name.clone())), None),
            Ok(Applied::Queue(q)) => (Some(ObjKey::Queue(q.metadata.name.clone())), None),
            Ok(Applied::Endpoint(e)) => (Some(ObjKey::Endpoint(e.metadata.name.clone())), None),
            Ok(Applied::Workflow(w)) => (
                w["metadata"]["name"]
                    .as_str()
                    .map(|n| ObjKey::Workflow(n.to_string())),
                None,
            ),
            Ok(_) => (None, None),
            Err(e) => (None, Some((e.code(), e.to_string()))),
        };
        let record = RequestRecord {
            id: id.clone(),
            at_ms: env.now_ms,
            index,
            object: object.map(|k| k.storage_key()),
            error,
        };
        self.requests_by_age.insert((env.now_ms, id.clone()));
        self.requests.insert(id.clone(), record);
        self.dirty.insert(ObjKey::Request(id.clone()));
        result
    }

    /// Drop request records older than [`REQUEST_TTL_MS`], and the oldest
    /// beyond [`MAX_REQUEST_RECORDS`].
    fn forget_requests(&mut self, now: u64) {
        while let Some((at, id)) = self.requests_by_age.first().cloned() {
            let expired = at.saturating_add(REQUEST_TTL_MS) < now;
            if !expired && self.requests.len() < MAX_REQUEST_RECORDS {
                break;
            }
            self.requests_by_age.pop_first();
            self.requests.remove(&id);
            self.dirty.insert(ObjKey::Request(id));
        }
    }

    /// The current form of the object under a storage key.
    fn applied_object(&self, key: &str) -> Applied {
        if let Some(n) = key.strip_prefix("job/") {
            return self.job_applied(n);
        }
        if let Some(n) = key.strip_prefix("node/") {
            if let Some(node) = self.nodes.get(n) {
                return Applied::Node(Box::new(node.clone()));
            }
        }
        if let Some(n) = key.strip_prefix("queue/") {
            if let Some(q) = self.queues.get(n) {
                return Applied::Queue(Box::new(q.clone()));
            }
        }
        if let Some(n) = key.strip_prefix("endpoint/") {
            if let Some(e) = self.endpoints.get(n) {
                return Applied::Endpoint(Box::new(e.clone()));
            }
        }
        if let Some(n) = key.strip_prefix("workflow/") {
            if let Some(w) = self.workflows.get(n) {
                return Applied::Workflow(Box::new(w.view()));
            }
        }
        Applied::Nothing
    }

    fn apply_cmd(&mut self, index: u64, env: &Envelope) -> Result<Applied, ApplyError> {
        if self.workflows.is_empty() && !matches!(env.cmd, Command::SubmitWorkflow { .. }) {
            return self.apply_command(index, env);
        }
        // Step jobs this command ends advance their workflows in the same
        // apply: collect the jobs it touches.
        let earlier = std::mem::take(&mut self.dirty);
        let r = self.apply_command(index, env);
        let touched: Vec<String> = self
            .dirty
            .iter()
            .filter_map(|k| match k {
                ObjKey::Job(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        let report = match &env.cmd {
            Command::TaskReport { report } => {
                report.outputs.as_ref().map(|o| (report.job.as_str(), o))
            }
            _ => None,
        };
        self.workflow_jobs_changed(index, env.now_ms, &touched, report);
        let changed: Vec<String> = self
            .dirty
            .iter()
            .filter_map(|k| match k {
                ObjKey::Workflow(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        for w in changed {
            self.note_changed_nodes(&w);
        }
        self.dirty.extend(earlier);
        r
    }

    fn apply_command(&mut self, index: u64, env: &Envelope) -> Result<Applied, ApplyError> {
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
            Command::PutQueue { queue } => self.put_queue(index, now, queue),
            Command::Preempt {
                victims,
                by,
                reason,
            } => {
                let mut stopped = Vec::new();
                for (job, attempt) in victims {
                    let Some(j) = self.jobs.get(job) else {
                        continue;
                    };
                    let holds = j.status.tasks.iter().any(|t| t.phase.holds_resources());
                    if j.status.attempt != *attempt || j.status.phase.is_terminal() || !holds {
                        continue;
                    }
                    self.preempt(index, now, job, by, reason);
                    stopped.push(job.clone());
                }
                Ok(Applied::Bound {
                    applied: stopped,
                    refused: Vec::new(),
                })
            }
            Command::SubmitWorkflow {
                name,
                workflow,
                arguments,
            } => self.submit_workflow(index, now, name, workflow, arguments),
            Command::WorkflowTick { name } => self.workflow_tick(index, now, name),
            Command::CancelWorkflow { name } => self.cancel_workflow(index, now, name),
            Command::DeleteJob { name } => self.delete_job(name),
            Command::DeleteWorkflow { name } => self.delete_workflow(name),
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

    /// Stop a job's current attempt for `by` and queue it again; the attempt
    /// does not count as a failure.
    fn preempt(&mut self, index: u64, now: u64, name: &str, by: &str, reason: &str) {
        self.stop_tasks(name, TaskPhase::Failed, reason);
        let Some(job) = self.jobs.get_mut(name) else {
            return;
        };
        let attempt = job.status.attempt;
        remember_attempt(job, now, reason);
        push_event(
            job,
            now,
            "Preempted",
            format!("attempt {attempt}: {reason}"),
        );
        job.status.attempt = attempt + 1;
        job.status.preemptions += 1;
        job.status.phase = JobPhase::Pending;
        job.status.tasks = pending_tasks(job);
        job.status.start_time_ms = None;
        job.status.message = Some(format!("{reason}; waiting to run again"));
        push_event(
            job,
            now,
            "Requeued",
            format!("attempt {} queued after preemption by {by:?}", attempt + 1),
        );
        self.touch_job(index, name);
    }

    /// Why job `j` may not be deleted on its own now, if it may not: it
    /// still runs (cancel it first), or it is a workflow's step or an
    /// endpoint's replica (it goes with its owner).
    pub(crate) fn refuse_delete(&self, j: &Job) -> Option<ApplyError> {
        let name = &j.metadata.name;
        if !j.status.phase.is_terminal() {
            return Some(ApplyError::FailedPrecondition(format!(
                "job {name:?} is {}; cancel it first (gpuctl cancel {name})",
                j.status.phase
            )));
        }
        if let Some(w) = j
            .metadata
            .labels
            .get(LABEL_WORKFLOW)
            .filter(|w| self.workflows.contains_key(*w))
        {
            return Some(ApplyError::FailedPrecondition(format!(
                "job {name:?} is a step of workflow {w:?}; delete the workflow (gpuctl delete workflow {w})"
            )));
        }
        if let Some(e) =
            crate::endpoints::endpoint_of(j).filter(|e| self.endpoints.contains_key(*e))
        {
            return Some(ApplyError::FailedPrecondition(format!(
                "job {name:?} is a replica of endpoint {e:?}; delete the endpoint (gpuctl delete endpoint {e})"
            )));
        }
        None
    }

    /// Remove a job that has ended (see [`State::refuse_delete`]).
    fn delete_job(&mut self, name: &str) -> Result<Applied, ApplyError> {
        let j = self.jobs.get(name).ok_or_else(|| ApplyError::NotFound {
            kind: "job",
            name: name.to_string(),
        })?;
        if let Some(e) = self.refuse_delete(j) {
            return Err(e);
        }
        let j = self.jobs.remove(name).expect("checked");
        self.dirty.insert(ObjKey::Job(name.to_string()));
        Ok(Applied::Job(Box::new(j)))
    }

    /// Remove a workflow that has ended, with its step jobs (its memoized
    /// outputs stay: they are a cache shared by workflows).
    fn delete_workflow(&mut self, name: &str) -> Result<Applied, ApplyError> {
        let w = self
            .workflows
            .get(name)
            .ok_or_else(|| ApplyError::NotFound {
                kind: "workflow",
                name: name.to_string(),
            })?;
        if !w.run.phase().is_terminal() {
            return Err(ApplyError::FailedPrecondition(format!(
                "workflow {name:?} is {}; cancel it first (gpuctl cancel workflow {name})",
                w.run.phase()
            )));
        }
        let view = w.view();
        let nodes: Vec<String> = w.run.nodes().keys().cloned().collect();
        let steps: Vec<String> = self
            .jobs
            .values()
            .filter(|j| j.metadata.labels.get(LABEL_WORKFLOW).map(String::as_str) == Some(name))
            .map(|j| j.metadata.name.clone())
            .collect();
        for job in steps {
            // A step still holding resources (it should not) is stopped first.
            self.stop_tasks(&job, TaskPhase::Cancelled, "its workflow was deleted");
            self.jobs.remove(&job);
            self.dirty.insert(ObjKey::Job(job));
        }
        self.workflows.remove(name);
        self.persisted_nodes.remove(name);
        for id in nodes {
            self.dirty
                .insert(ObjKey::WorkflowNode(name.to_string(), id));
        }
        self.dirty.insert(ObjKey::Workflow(name.to_string()));
        Ok(Applied::Workflow(Box::new(view)))
    }

    fn put_queue(&mut self, index: u64, now: u64, queue: &Queue) -> Result<Applied, ApplyError> {
        queue
            .validate()
            .map_err(|e| ApplyError::Invalid(e.to_string()))?;
        let name = queue.metadata.name.clone();
        let expected = queue.metadata.resource_version;
        let mut q = queue.clone();
        q.api_version = API_VERSION.to_string();
        q.status = None;
        q.metadata.resource_version = Some(index);
        match self.queues.get(&name) {
            Some(old) => {
                if let Some(want) = expected {
                    let have = old.metadata.resource_version.unwrap_or(0);
                    if want != have {
                        return Err(ApplyError::Conflict(format!(
                            "queue {name:?} was changed (resourceVersion {have}) after version {want} that this update is based on; get it again and reapply"
                        )));
                    }
                }
                q.metadata.uid = old.metadata.uid;
                q.metadata.creation_timestamp_ms = old.metadata.creation_timestamp_ms;
            }
            None => {
                if let Some(want) = expected {
                    return Err(ApplyError::NotFound {
                        kind: "queue",
                        name: format!("{name} (the update names resourceVersion {want})"),
                    });
                }
                q.metadata.uid = Some(index);
                q.metadata.creation_timestamp_ms = Some(now);
            }
        }
        self.queues.insert(name.clone(), q.clone());
        self.dirty.insert(ObjKey::Queue(name));
        Ok(Applied::Queue(Box::new(q)))
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
        if let Some(q) = job.metadata.queue.as_deref() {
            if q != DEFAULT_QUEUE && !self.queues.contains_key(q) {
                return Err(ApplyError::Invalid(format!(
                    "metadata.queue: queue {q:?} does not exist; create it first (kind: Queue) or leave the field out for the {DEFAULT_QUEUE:?} queue"
                )));
            }
        }
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
        // Attempts ended by preemption do not use up retries.
        let failures = attempt - job.status.preemptions.min(attempt - 1);
        if failures <= job.spec.max_retries {
            remember_attempt(job, now, reason);
            job.status.attempt = attempt + 1;
            job.status.phase = JobPhase::Pending;
            job.status.tasks = pending_tasks(job);
            job.status.start_time_ms = None;
            job.status.message = Some(format!("retrying after: {reason}"));
            let msg = format!(
                "attempt {} of {} queued",
                attempt + 1,
                job.spec.max_retries + 1 + job.status.preemptions
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
/// Keep where the current attempt's tasks ran, before a new attempt
/// replaces them.
fn remember_attempt(job: &mut Job, now: u64, reason: &str) {
    let nodes = job
        .status
        .tasks
        .iter()
        .map(|t| t.node.clone().unwrap_or_default())
        .collect();
    let s = &mut job.status;
    s.past_attempts.push(gpuctl_common::api::PastAttempt {
        attempt: s.attempt,
        nodes,
        reason: reason.to_string(),
        ended_ms: now,
    });
    let extra = s
        .past_attempts
        .len()
        .saturating_sub(gpuctl_common::api::MAX_PAST_ATTEMPTS);
    s.past_attempts.drain(..extra);
}

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
                ttl_seconds_after_finished: None,
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
            let env = Envelope::new(1000 * self.index, cmd);
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
                outputs: None,
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
            outputs: None,
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

    fn queue(name: &str, weight: u32, version: Option<u64>) -> Box<Queue> {
        let doc = format!(
            "apiVersion: gpuctl.io/v1\nkind: Queue\nmetadata: {{name: {name}}}\nspec: {{weight: {weight}}}\n"
        );
        let mut m = gpuctl_common::api::parse_manifests("q.yaml", &doc).unwrap();
        let gpuctl_common::api::Manifest::Queue(mut q) = m.remove(0) else {
            panic!("not a queue")
        };
        q.metadata.resource_version = version;
        Box::new(q)
    }

    fn put(
        h: &mut Harness,
        name: &str,
        weight: u32,
        version: Option<u64>,
    ) -> Result<u64, ApplyError> {
        match h.apply(Command::PutQueue {
            queue: queue(name, weight, version),
        })? {
            Applied::Queue(q) => Ok(q.metadata.resource_version.unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn queue_updates_compare_and_set_on_resource_version() {
        let mut h = Harness::new();
        let v1 = put(&mut h, "research", 1, None).unwrap();
        assert_eq!(v1, 1);
        // A blind write replaces whatever is there.
        let v2 = put(&mut h, "research", 2, None).unwrap();
        assert_eq!(v2, 2);
        // A compare-and-set on the current version wins...
        let v3 = put(&mut h, "research", 3, Some(v2)).unwrap();
        assert_eq!(h.s.queues["research"].spec.weight, 3);
        // ... and one on a stale version is refused and changes nothing.
        let e = put(&mut h, "research", 9, Some(v2)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Conflict);
        assert!(e.to_string().contains("get it again"), "{e}");
        assert_eq!(h.s.queues["research"].spec.weight, 3);
        assert_eq!(h.s.queues["research"].metadata.resource_version, Some(v3));
        assert_eq!(h.s.queues["research"].metadata.uid, Some(1));
        // An update of a queue that does not exist is not a create.
        let e = put(&mut h, "nope", 1, Some(1)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert!(!h.s.queues.contains_key("nope"));
    }

    #[test]
    fn jobs_name_existing_queues() {
        let mut h = Harness::new();
        let mut j = job("a", 1, 1.0, 0);
        j.metadata.queue = Some("research".into());
        let e = h
            .apply(Command::SubmitJob {
                job: Box::new(j.clone()),
            })
            .unwrap_err();
        assert!(
            e.to_string().contains("queue \"research\" does not exist"),
            "{e}"
        );
        put(&mut h, "research", 1, None).unwrap();
        h.apply(Command::SubmitJob { job: Box::new(j) }).unwrap();
        assert_eq!(h.s.queue_status("research").pending_jobs, 1);
        // The default queue needs no object.
        h.apply(Command::SubmitJob {
            job: Box::new(job("b", 1, 1.0, 0)),
        })
        .unwrap();
        assert_eq!(h.s.queue_status("default").pending_jobs, 1);
    }

    fn with_id(now_ms: u64, id: &str, cmd: Command) -> Envelope {
        let mut env = Envelope::new(now_ms, cmd);
        env.request_id = Some(id.to_string());
        env
    }

    #[test]
    fn a_retried_request_is_answered_from_its_record_not_applied_again() {
        let mut s = State::default();
        let cas = |weight, version| Command::PutQueue {
            queue: queue("q", weight, version),
        };
        s.apply(1, &with_id(10, "r1", cas(1, None))).unwrap();
        let Applied::Queue(q) = s.apply(2, &with_id(20, "r2", cas(2, Some(1)))).unwrap() else {
            panic!()
        };
        assert_eq!(q.metadata.resource_version, Some(2));
        // The retry of r2 (its first answer was lost) must not turn into a
        // conflict with its own write, nor apply twice.
        let Applied::Queue(again) = s.apply(3, &with_id(30, "r2", cas(2, Some(1)))).unwrap() else {
            panic!()
        };
        assert_eq!(again.metadata.resource_version, Some(2));
        // A refusal is repeated as the same refusal.
        let e = s.apply(4, &with_id(40, "r3", cas(5, Some(1)))).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Conflict);
        s.apply(5, &with_id(50, "r4", cas(6, None))).unwrap();
        let e2 = s.apply(6, &with_id(60, "r3", cas(5, Some(1)))).unwrap_err();
        assert_eq!(
            (e2.code(), e2.to_string()),
            (ErrorCode::Conflict, e.to_string())
        );
        // The same for job creates: the retry is not "already exists".
        let submit = Command::SubmitJob {
            job: Box::new(job("a", 1, 1.0, 0)),
        };
        s.apply(7, &with_id(70, "j1", submit.clone())).unwrap();
        assert!(matches!(
            s.apply(8, &with_id(80, "j1", submit.clone())).unwrap(),
            Applied::Job(_)
        ));
        assert_eq!(s.jobs["a"].metadata.uid, Some(7));
        // Records survive a restart (they are stored objects)...
        let back = State::from_stored(&s.stored_objects()).unwrap();
        assert_eq!(back.request("r2"), s.request("r2"));
        assert_eq!(back.queues, s.queues);
        // ... and are forgotten after the TTL, deterministically.
        let mut s = back;
        let late = 80 + REQUEST_TTL_MS + 1;
        s.apply(9, &with_id(late, "x", cas(7, None))).unwrap();
        assert!(s.request("r1").is_none() && s.request("j1").is_none());
        assert!(s.request("x").is_some());
        assert!(s.take_dirty().contains(&ObjKey::Request("r1".to_string())));
        assert!(s.object_json(&ObjKey::Request("r1".into())).is_none());
    }

    #[test]
    fn stored_objects_round_trip_and_unknown_keys_are_skipped() {
        let mut h = Harness::new();
        h.apply(reg("n1", 2)).unwrap();
        put(&mut h, "q", 4, None).unwrap();
        let mut stored = h.s.stored_objects();
        stored.push(("widget/x".into(), b"{}".to_vec()));
        let back = State::from_stored(&stored).unwrap();
        assert_eq!((back.nodes.len(), back.queues.len()), (1, 1));
        stored.push(("queue/bad".into(), b"{".to_vec()));
        let e = State::from_stored(&stored).unwrap_err();
        assert!(e.contains("queue/bad"), "{e}");
    }

    #[test]
    fn preemption_requeues_without_using_a_retry() {
        let mut h = Harness::new();
        h.apply(reg("n1", 2)).unwrap();
        h.apply(Command::SubmitJob {
            job: Box::new(job("low", 1, 2.0, 0)),
        })
        .unwrap();
        h.bind("low", "n1", &[&[0, 1]]);
        h.report("low", 0, TaskPhase::Running, None);
        assert_eq!(h.s.usage("n1").gpu_milli.len(), 2);
        // A stale attempt number changes nothing.
        h.apply(Command::Preempt {
            victims: vec![("low".into(), 7)],
            by: "high".into(),
            reason: "preempted by job \"high\"".into(),
        })
        .unwrap();
        assert_eq!(h.s.jobs["low"].status.phase, JobPhase::Running);
        let Applied::Bound { applied, .. } = h
            .apply(Command::Preempt {
                victims: vec![("low".into(), 1), ("ghost".into(), 1)],
                by: "high".into(),
                reason: "preempted by job \"high\" (priority 5 > 0)".into(),
            })
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(applied, ["low"]);
        let j = &h.s.jobs["low"];
        assert_eq!(
            (j.status.phase, j.status.attempt, j.status.preemptions),
            (JobPhase::Pending, 2, 1)
        );
        assert!(h.s.usage("n1").gpu_milli.is_empty(), "GPUs released");
        assert!(j
            .status
            .events
            .iter()
            .any(|e| e.reason == "Preempted" && e.message.contains("priority 5 > 0")));
        // maxRetries is 0, yet the preempted job runs again; a real failure
        // of that attempt then ends it.
        h.bind("low", "n1", &[&[0, 1]]);
        h.report("low", 0, TaskPhase::Failed, Some(1));
        assert_eq!(h.s.jobs["low"].status.phase, JobPhase::Failed);
    }

    #[test]
    fn deletes_take_finished_jobs_and_workflows_with_every_stored_record() {
        let mut h = Harness::new();
        h.apply(reg("n1", 2)).unwrap();
        h.apply(Command::SubmitJob {
            job: Box::new(job("a", 1, 1.0, 0)),
        })
        .unwrap();
        let e = h
            .apply(Command::DeleteJob { name: "a".into() })
            .unwrap_err();
        assert!(e.to_string().contains("cancel it first"), "{e}");
        h.apply(Command::CancelJob { name: "a".into() }).unwrap();
        h.s.take_dirty();
        h.apply(Command::DeleteJob { name: "a".into() }).unwrap();
        assert!(!h.s.jobs.contains_key("a"));
        assert!(h.s.take_dirty().contains(&ObjKey::Job("a".into())));

        let yaml = "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n      - {name: s, template: t}\n  - name: t\n    container: {image: x, command: [\"true\"]}\n";
        h.apply(Command::SubmitWorkflow {
            name: "wf".into(),
            workflow: Box::new(gpuctl_pipelines::parse_workflow("wf.yaml", yaml).unwrap()),
            arguments: Default::default(),
        })
        .unwrap();
        assert!(h.s.jobs.values().any(|j| j
            .metadata
            .labels
            .get(LABEL_WORKFLOW)
            .map(String::as_str)
            == Some("wf")));
        let e = h
            .apply(Command::DeleteWorkflow { name: "wf".into() })
            .unwrap_err();
        assert!(e.to_string().contains("cancel it first"), "{e}");
        h.apply(Command::CancelWorkflow { name: "wf".into() })
            .unwrap();
        let before = h.s.stored_objects();
        assert!(before.iter().any(|(k, _)| k.starts_with("wfnode/wf/")));
        h.s.take_dirty();
        h.apply(Command::DeleteWorkflow { name: "wf".into() })
            .unwrap();
        let dirty = h.s.take_dirty();
        // Every record the workflow had is marked, and none is left to store.
        let records: Vec<&String> = before
            .iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("wfnode/wf/") || *k == "workflow/wf")
            .collect();
        assert!(records.len() >= 2, "{records:?}");
        for k in records {
            assert!(
                dirty.iter().any(|d| &d.storage_key() == k),
                "{k} not marked for deletion"
            );
        }
        for d in &dirty {
            assert!(h.s.object_json(d).is_none(), "{d:?} still stored");
        }
        assert!(h.s.workflows.is_empty());
        assert!(h.s.jobs.is_empty(), "its step jobs went with it");
    }

    #[test]
    fn envelope_round_trips_as_json() {
        let env = Envelope::new(
            7,
            Command::SubmitJob {
                job: Box::new(job("a", 2, 0.5, 0)),
            },
        );
        let bytes = serde_json::to_vec(&env).unwrap();
        let back: Envelope = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, env);
    }
}
