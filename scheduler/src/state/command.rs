//! What goes into the Raft log and what comes back: the [`Envelope`] and
//! its [`Command`], the payloads commands carry, and what applying one
//! produces ([`Applied`]) or why it was refused ([`ApplyError`]). Plain data,
//! shared by the proposers (API, controllers) and the state machine.

use std::collections::{BTreeMap, BTreeSet};

use gpuctl_common::api::{GpuShare, Job, Node, TaskPhase};
use gpuctl_common::queue::Queue;
use serde::{Deserialize, Serialize};

/// A log entry's payload: the command and the proposer's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Wall-clock milliseconds at the proposer; the only clock `apply` sees.
    pub now_ms: u64,
    pub cmd: Command,
    /// The client's id for this request, the same on every retry of it: a
    /// request already applied is answered from its record instead of being
    /// applied again (see [`State::apply`](crate::state::State::apply)).
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
    SubmitJob {
        job: Box<Job>,
    },
    /// Add a node or refresh its inventory and addresses.
    RegisterNode {
        reg: NodeRegistration,
    },
    /// Place whole gangs (one binding per job).
    Bind {
        bindings: Vec<Binding>,
    },
    /// A node daemon reported a task's phase.
    TaskReport {
        report: TaskReport,
    },
    /// Stop a job for good.
    CancelJob {
        name: String,
    },
    /// Mark a node (un)schedulable, with why; `evict` also requeues every
    /// job with a task there, without using a retry (`gpuctl drain`).
    Cordon {
        node: String,
        unschedulable: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        evict: bool,
    },
    /// The node missed its heartbeats: fail what ran there.
    NodeLost {
        node: String,
    },
    /// Fail the current attempt of a job (e.g. it ran past its timeout).
    FailAttempt {
        job: String,
        attempt: u32,
        reason: String,
    },
    /// Create or replace a queue. When the queue carries
    /// `metadata.resourceVersion`, the replace is a compare-and-set on it.
    PutQueue {
        queue: Box<Queue>,
    },
    /// Create or replace a secret.
    PutSecret {
        secret: Box<gpuctl_common::secret::Secret>,
    },
    /// Remove a secret.
    DeleteSecret {
        name: String,
    },
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
        /// The user who submitted it; its step jobs inherit it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// A workflow's timer passed (retry backoff, a deadline).
    WorkflowTick {
        name: String,
    },
    /// Stop a workflow: its running steps are cancelled.
    CancelWorkflow {
        name: String,
    },
    /// Remove a finished job.
    DeleteJob {
        name: String,
    },
    /// Remove a finished workflow and its step jobs.
    DeleteWorkflow {
        name: String,
    },
    /// Store a new endpoint; it starts at `minReplicas`.
    CreateEndpoint {
        endpoint: Box<gpuctl_common::endpoint::Endpoint>,
    },
    /// Remove an endpoint and stop its replicas.
    DeleteEndpoint {
        name: String,
    },
    /// Set an endpoint's desired replicas: missing replica jobs are created, extra
    /// ones start draining, and replicas whose jobs ended are replaced.
    ScaleEndpoint {
        name: String,
        replicas: u32,
        reason: String,
    },
    /// A draining replica has no request in flight (or its grace ran out): stop it.
    ReplicaDrained {
        endpoint: String,
        job: String,
    },
    /// Load the gateway observed, kept for `gpuctl get endpoints`.
    EndpointLoad {
        name: String,
        concurrency: f64,
        requests_per_second: f64,
        /// Request latency the gateways saw (median, 99th percentile), ms.
        #[serde(default)]
        latency_p50_ms: f64,
        #[serde(default)]
        latency_p99_ms: f64,
    },
    /// Add a user.
    CreateUser {
        user: Box<super::identity::User>,
    },
    /// Store a token record (its hash, never the secret).
    CreateToken {
        token: Box<super::identity::Token>,
    },
    /// Stop a token from working.
    RevokeToken {
        id: String,
    },
    /// `gpuctl suspend`: no new step of the workflow starts; running ones
    /// finish.
    SuspendWorkflow {
        name: String,
    },
    /// `gpuctl resume`: steps start again and waiting `suspend` steps end.
    ResumeWorkflow {
        name: String,
    },
    /// An endpoint applied again: a changed replica template rolls out as a
    /// new revision.
    UpdateEndpoint {
        endpoint: Box<gpuctl_common::endpoint::Endpoint>,
    },
    /// The rolling-out revision of an endpoint gets all requests.
    PromoteEndpoint {
        name: String,
    },
    /// Roll an endpoint back to revision `to_revision` (0: the previous one).
    UndoEndpoint {
        name: String,
        to_revision: u64,
    },
    /// Gateways found these replicas of an endpoint ready.
    ReplicasReady {
        endpoint: String,
        jobs: Vec<String>,
    },
    /// Store (or replace) a `WorkflowTemplate`, or with `cluster` a
    /// `ClusterWorkflowTemplate`.
    PutWorkflowTemplate {
        cluster: bool,
        template: Box<gpuctl_pipelines::Workflow>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    DeleteWorkflowTemplate {
        cluster: bool,
        name: String,
    },
    /// Store (or replace the spec of) a `CronWorkflow`.
    PutCronWorkflow {
        cron: Box<gpuctl_pipelines::cron::CronWorkflow>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    DeleteCronWorkflow {
        name: String,
    },
    /// A CronWorkflow's scheduled time (Unix seconds) has come: run it, or
    /// record why not. Applied once per time.
    CronRun {
        name: String,
        scheduled_s: i64,
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
            Command::PutSecret { .. } => "PutSecret",
            Command::DeleteSecret { .. } => "DeleteSecret",
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
            Command::CreateUser { .. } => "CreateUser",
            Command::CreateToken { .. } => "CreateToken",
            Command::RevokeToken { .. } => "RevokeToken",
            Command::SuspendWorkflow { .. } => "SuspendWorkflow",
            Command::ResumeWorkflow { .. } => "ResumeWorkflow",
            Command::UpdateEndpoint { .. } => "UpdateEndpoint",
            Command::PromoteEndpoint { .. } => "PromoteEndpoint",
            Command::UndoEndpoint { .. } => "UndoEndpoint",
            Command::ReplicasReady { .. } => "ReplicasReady",
            Command::PutWorkflowTemplate { .. } => "PutWorkflowTemplate",
            Command::DeleteWorkflowTemplate { .. } => "DeleteWorkflowTemplate",
            Command::PutCronWorkflow { .. } => "PutCronWorkflow",
            Command::DeleteCronWorkflow { .. } => "DeleteCronWorkflow",
            Command::CronRun { .. } => "CronRun",
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
    /// Unhealthy GPUs at which the node is cordoned (0: never by count).
    #[serde(default)]
    pub cordon_after_unhealthy_gpus: u32,
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
    /// What a task that ended used (nodes with cgroups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<gpuctl_common::api::TaskUsage>,
    /// Failed because one of its GPUs reported a fatal XID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_fault: Option<GpuFault>,
}

/// A fatal XID on one GPU of a node, reported with the task it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuFault {
    pub index: u32,
    pub uuid: String,
    pub xid: u64,
}

impl GpuFault {
    /// `GPU 1 (GPU-…) reported XID 79 (GPU has fallen off the bus)`.
    pub fn message(&self) -> String {
        gpuctl_common::xid::fault_message(self.index, &self.uuid, self.xid)
    }
}

/// What a workflow step's node daemon reported besides the exit code.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepOutputs {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// Standard output of a script step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Output artifacts that were found and stored.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub artifacts: BTreeSet<String>,
    /// The daemon could not handle the step's files: the step errored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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

/// What an applied command produced, for the proposer's reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Job(Box<Job>),
    Node(Box<Node>),
    Queue(Box<Queue>),
    /// A workflow, as the API serves it.
    Workflow(Box<serde_json::Value>),
    Endpoint(Box<gpuctl_common::endpoint::Endpoint>),
    /// A secret as `get` shows it (values redacted).
    Secret(Box<gpuctl_common::secret::Secret>),
    User(Box<super::identity::User>),
    /// A token record (the API serves it without its hash).
    Token(Box<super::identity::Token>),
    /// Any other object, as the API serves it (templates, CronWorkflows).
    Object(Box<serde_json::Value>),
    /// Bindings that were applied (by job name) and those refused.
    Bound {
        applied: Vec<String>,
        refused: Vec<(String, ApplyError)>,
    },
    Nothing,
}
