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
//!
//! ```text
//!  command.rs   Envelope, Command, Applied, ApplyError (the log's data)
//!  mod.rs       State and the apply dispatch, request records, usage index
//!  jobs.rs  nodes.rs  queues.rs  endpoints.rs  workflows.rs  users.rs
//!               one file per command family (each an `impl State`)
//!  identity.rs  user and token records (token hashes, never secrets)
//!  templates.rs stored WorkflowTemplates, ClusterWorkflowTemplates and
//!               CronWorkflows; cron.rs a CronWorkflow's scheduled time
//!  views.rs     read models (queue status, endpoint views, tasks on a node)
//!  index.rs     derived indexes kept per apply: jobs by node, per-node
//!               change log, object counts
//!  objects.rs  stored.rs  workflow_object.rs   the stored form
//! ```

use std::collections::{BTreeMap, BTreeSet};

use gpuctl_common::api::{GpuShare, Job, Node};
use gpuctl_common::queue::Queue;

mod command;
mod cron;
pub mod endpoints;
mod health;
#[cfg(test)]
mod health_tests;
pub mod identity;
pub mod index;
mod jobs;
mod nodes;
mod objects;
mod queues;
mod rollouts;
mod secrets;
mod stored;
pub mod templates;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
mod users;
pub mod views;
mod workflow_object;
mod workflow_suspend;
pub mod workflows;

pub use command::{
    Applied, ApplyError, Binding, Command, Envelope, ErrorCode, GpuFault, NodeRegistration,
    StepOutputs, TaskPlacement, TaskReport,
};
pub use index::{ChangeCursor, Counts, JOB_PHASES};
pub use objects::{ObjKey, RequestRecord, MAX_REQUEST_ID_LEN, MAX_REQUEST_RECORDS, REQUEST_TTL_MS};
pub use workflow_object::{
    MemoRecord, WorkflowObject, WorkflowRecords, LABEL_STEP, LABEL_WORKFLOW, WORKFLOW_API_VERSION,
};

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
    /// Tests only: each workflow's nodes as last marked for storing, to
    /// check that the run noted every node an apply changed.
    #[cfg(test)]
    persisted_nodes: BTreeMap<String, BTreeMap<String, gpuctl_pipelines::Node>>,
    /// Endpoints; their replicas are jobs labelled `gpuctl.io/endpoint`.
    pub endpoints: BTreeMap<String, gpuctl_common::endpoint::Endpoint>,
    /// Secrets, with their values; only assignments carry the values out.
    pub secrets: BTreeMap<String, gpuctl_common::secret::Secret>,
    /// Users, by name.
    pub users: BTreeMap<String, identity::User>,
    /// Token records (hashes, never secrets), by token id.
    pub tokens: BTreeMap<String, identity::Token>,
    /// Argo `WorkflowTemplate`s, by name.
    pub workflow_templates: BTreeMap<String, templates::StoredTemplate>,
    /// Argo `ClusterWorkflowTemplate`s, by name.
    pub cluster_workflow_templates: BTreeMap<String, templates::StoredTemplate>,
    /// Argo `CronWorkflow`s, by name.
    pub cron_workflows: BTreeMap<String, templates::CronObject>,
    /// Derived: what tasks hold on each node.
    usage: BTreeMap<String, NodeUsage>,
    /// Derived: the sum of `usage`'s GPU thousandths.
    gpu_milli_allocated: u64,
    /// Derived: jobs by node, object counts.
    index: index::TaskIndex,
    /// Derived: the nodes in the order they last changed.
    changes: index::NodeChanges,
    /// Derived: new at every apply.
    generation: index::Generation,
    /// Objects changed since the last [`State::take_dirty`].
    dirty: Dirty,
}

/// The objects an apply changed: all of them since the last
/// [`State::take_dirty`] (to store), and those that bear on nodes since the
/// last apply (to keep the derived indexes in step).
#[derive(Debug, Clone, Default)]
struct Dirty {
    keys: BTreeSet<ObjKey>,
    /// Jobs, nodes, secrets and users changed by the apply under way.
    fresh: Vec<ObjKey>,
}

impl Dirty {
    fn insert(&mut self, key: ObjKey) {
        if matches!(
            key,
            ObjKey::Job(_) | ObjKey::Node(_) | ObjKey::Secret(_) | ObjKey::User(_)
        ) {
            self.fresh.push(key.clone());
        }
        self.keys.insert(key);
    }
}

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

    /// The record of a request applied in the last [`REQUEST_TTL_MS`].
    pub fn request(&self, id: &str) -> Option<&RequestRecord> {
        self.requests.get(id)
    }

    /// Add the stored endpoints (after a restart or from a snapshot).
    pub fn with_endpoints(mut self, endpoints: Vec<gpuctl_common::endpoint::Endpoint>) -> State {
        self.endpoints = endpoints
            .into_iter()
            .map(|e| (e.metadata.name.clone(), e))
            .collect();
        self
    }

    /// Recompute the derived indexes from the objects: the usage index,
    /// jobs by node and the counts; every node counts as changed.
    pub fn rebuild_usage(&mut self) {
        self.usage.clear();
        self.gpu_milli_allocated = 0;
        self.index = index::TaskIndex::build(self.jobs.values(), self.nodes.values());
        self.changes = index::NodeChanges::default();
        self.generation.bump();
        for n in self.nodes.keys() {
            self.changes.changed(n);
        }
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

    /// Usage of one node, when something runs there.
    pub fn node_usage(&self, node: &str) -> Option<&NodeUsage> {
        self.usage.get(node)
    }

    /// Usage of each node where something runs, by node name (in order).
    pub fn usages(&self) -> impl Iterator<Item = (&str, &NodeUsage)> + '_ {
        self.usage.iter().map(|(n, u)| (n.as_str(), u))
    }

    /// Thousandths of GPUs held by bound or running tasks, cluster-wide.
    pub fn gpu_milli_allocated(&self) -> u64 {
        self.gpu_milli_allocated
    }

    /// Jobs and nodes by phase, kept as they change.
    pub fn counts(&self) -> &Counts {
        self.index.counts()
    }

    /// The per-node change log: which nodes changed since a reader's
    /// [`ChangeCursor`].
    pub fn node_changes(&self) -> &index::NodeChanges {
        &self.changes
    }

    /// A number this state has had since its last apply and no other
    /// state or version of it has had: what is derived from the state can
    /// be kept while it stays the same.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Record that an object changed (or was removed), to persist it.
    pub(crate) fn mark_dirty(&mut self, key: ObjKey) {
        self.dirty.insert(key);
    }

    /// Objects changed since the last call, to persist with the applied index.
    pub fn take_dirty(&mut self) -> BTreeSet<ObjKey> {
        std::mem::take(&mut self.dirty.keys)
    }

    /// After an apply: bring the derived indexes up to the objects it
    /// changed, and note the nodes whose tasks or use changed.
    fn settle(&mut self) {
        let fresh = std::mem::take(&mut self.dirty.fresh);
        if fresh.is_empty() {
            return;
        }
        let mut changed: BTreeSet<String> = BTreeSet::new();
        let mut every_busy_node = false;
        for key in fresh {
            match key {
                ObjKey::Job(n) => changed.extend(self.index.job_changed(&n, self.jobs.get(&n))),
                ObjKey::Node(n) => {
                    self.index.node_changed(&n, self.nodes.get(&n));
                    // A gang's other nodes read this one's address (MASTER_ADDR).
                    for j in self.index.jobs_on(&n) {
                        changed.extend(self.index.nodes_of(j).iter().cloned());
                    }
                    changed.insert(n);
                }
                // Assignments carry secret values and owners' uids.
                ObjKey::Secret(_) | ObjKey::User(_) => every_busy_node = true,
                _ => {}
            }
        }
        if every_busy_node {
            changed.extend(self.index.busy_nodes().map(str::to_string));
        }
        for n in &changed {
            self.changes.changed(n);
        }
    }

    /// Check the derived indexes against a scan of the objects.
    #[cfg(test)]
    pub(crate) fn check_index(&self) {
        let scanned = index::TaskIndex::build(self.jobs.values(), self.nodes.values());
        assert_eq!(self.index, scanned, "the task index drifted from the jobs");
        let held: u64 = self
            .usage
            .values()
            .flat_map(|u| u.gpu_milli.values())
            .map(|m| u64::from(*m))
            .sum();
        assert_eq!(
            self.gpu_milli_allocated, held,
            "allocated GPU total drifted"
        );
    }

    fn hold(&mut self, node: &str, gpus: &[GpuShare], cpu: u64, mem: u64) {
        let u = self.usage.entry(node.to_string()).or_default();
        for g in gpus {
            *u.gpu_milli.entry(g.index).or_default() += g.milli;
            self.gpu_milli_allocated += u64::from(g.milli);
        }
        u.cpu_milli += cpu;
        u.memory_bytes += mem;
    }

    fn release(&mut self, node: &str, gpus: &[GpuShare], cpu: u64, mem: u64) {
        if let Some(u) = self.usage.get_mut(node) {
            for g in gpus {
                if let Some(m) = u.gpu_milli.get_mut(&g.index) {
                    let freed = (*m).min(g.milli);
                    self.gpu_milli_allocated -= u64::from(freed);
                    *m -= freed;
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
    ///
    /// The derived indexes follow the objects the command changed (see
    /// [`index`]), never the whole state.
    pub fn apply(&mut self, index: u64, env: &Envelope) -> Result<Applied, ApplyError> {
        let r = self.apply_once(index, env);
        self.settle();
        self.generation.bump();
        r
    }

    fn apply_once(&mut self, index: u64, env: &Envelope) -> Result<Applied, ApplyError> {
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
            Ok(Applied::User(u)) => (Some(ObjKey::User(u.name.clone())), None),
            Ok(Applied::Token(t)) => (Some(ObjKey::Token(t.id.clone())), None),
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
        let found = match ObjKey::parse(key) {
            Some(ObjKey::Job(n)) => return self.job_applied(&n),
            Some(ObjKey::Node(n)) => self
                .nodes
                .get(&n)
                .map(|x| Applied::Node(Box::new(x.clone()))),
            Some(ObjKey::Queue(n)) => self
                .queues
                .get(&n)
                .map(|q| Applied::Queue(Box::new(q.clone()))),
            Some(ObjKey::Endpoint(n)) => self
                .endpoints
                .get(&n)
                .map(|e| Applied::Endpoint(Box::new(e.clone()))),
            Some(ObjKey::Workflow(n)) => self
                .workflows
                .get(&n)
                .map(|w| Applied::Workflow(Box::new(w.view()))),
            Some(ObjKey::User(n)) => self
                .users
                .get(&n)
                .map(|u| Applied::User(Box::new(u.clone()))),
            Some(ObjKey::Token(n)) => self
                .tokens
                .get(&n)
                .map(|t| Applied::Token(Box::new(t.clone()))),
            _ => None,
        };
        found.unwrap_or(Applied::Nothing)
    }

    fn apply_cmd(&mut self, index: u64, env: &Envelope) -> Result<Applied, ApplyError> {
        if self.workflows.is_empty()
            && !matches!(
                env.cmd,
                Command::SubmitWorkflow { .. } | Command::CronRun { .. }
            )
        {
            return self.apply_command(index, env);
        }
        // Step jobs this command ends advance their workflows in the same
        // apply: collect the jobs it touches.
        let earlier = std::mem::take(&mut self.dirty);
        let r = self.apply_command(index, env);
        let touched: Vec<String> = self
            .dirty
            .keys
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
            .keys
            .iter()
            .filter_map(|k| match k {
                ObjKey::Workflow(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        for w in changed {
            self.note_changed_nodes(&w);
        }
        // The larger set absorbs the smaller (earlier applies of a batch
        // may have marked many objects).
        let Dirty { mut keys, fresh } = earlier;
        if keys.len() < self.dirty.keys.len() {
            std::mem::swap(&mut keys, &mut self.dirty.keys);
        }
        self.dirty.keys.extend(keys);
        debug_assert!(fresh.is_empty(), "fresh keys are settled after each apply");
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
                reason,
                evict,
            } => self.cordon(index, now, node, *unschedulable, reason.as_deref(), *evict),
            Command::NodeLost { node } => self.node_lost(index, now, node),
            Command::FailAttempt {
                job,
                attempt,
                reason,
            } => Ok(self.fail_attempt_if_current(index, now, job, *attempt, reason)),
            Command::PutQueue { queue } => self.put_queue(index, now, queue),
            Command::PutSecret { secret } => self.put_secret(index, now, secret),
            Command::DeleteSecret { name } => self.delete_secret(name),
            Command::Preempt {
                victims,
                by,
                reason,
            } => Ok(self.preempt_all(index, now, victims, by, reason)),
            Command::SubmitWorkflow {
                name,
                workflow,
                arguments,
                owner,
            } => self.submit_workflow(index, now, name, workflow, arguments, owner.as_deref()),
            Command::WorkflowTick { name } => self.workflow_tick(index, now, name),
            Command::CancelWorkflow { name } => self.cancel_workflow(index, now, name),
            Command::SuspendWorkflow { name } => self.suspend_workflow(index, now, name),
            Command::ResumeWorkflow { name } => self.resume_workflow(index, now, name),
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
                latency_p50_ms,
                latency_p99_ms,
            } => self.endpoint_load(
                index,
                name,
                *concurrency,
                *requests_per_second,
                (*latency_p50_ms, *latency_p99_ms),
            ),
            Command::CreateUser { user } => self.create_user(now, user),
            Command::CreateToken { token } => self.create_token(now, token),
            Command::RevokeToken { id } => self.revoke_token(id),
            Command::UpdateEndpoint { endpoint } => self.update_endpoint(index, now, endpoint),
            Command::PromoteEndpoint { name } => self.promote_endpoint(index, now, name),
            Command::UndoEndpoint { name, to_revision } => {
                self.undo_endpoint(index, now, name, *to_revision)
            }
            Command::ReplicasReady { endpoint, jobs } => {
                self.replicas_ready(index, now, endpoint, jobs)
            }
            Command::PutWorkflowTemplate {
                cluster,
                template,
                owner,
            } => self.put_workflow_template(index, now, *cluster, template, owner.as_deref()),
            Command::DeleteWorkflowTemplate { cluster, name } => {
                self.delete_workflow_template(*cluster, name)
            }
            Command::PutCronWorkflow { cron, owner } => {
                self.put_cron_workflow(index, now, cron, owner.as_deref())
            }
            Command::DeleteCronWorkflow { name } => self.delete_cron_workflow(index, now, name),
            Command::CronRun { name, scheduled_s } => self.cron_run(index, now, name, *scheduled_s),
        }
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
