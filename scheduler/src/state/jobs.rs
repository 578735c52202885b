//! Jobs in the state machine: `SubmitJob`, `Bind` (a whole gang or
//! nothing), `TaskReport`, `CancelJob`, `FailAttempt`, `Preempt` and
//! `DeleteJob`, and the retry rule (a failed attempt requeues the whole gang
//! while retries last; preemption and GPU faults (see `health.rs`) do not
//! use one up).

use std::collections::{BTreeMap, BTreeSet};

use gpuctl_common::api::{push_event, Job, JobPhase, TaskPhase, TaskStatus, API_VERSION};
use gpuctl_common::queue::DEFAULT_QUEUE;

use super::command::{Applied, ApplyError, Binding, TaskPlacement, TaskReport};
use super::endpoints::endpoint_of;
use super::objects::ObjKey;
use super::workflow_object::LABEL_WORKFLOW;
use super::{task_cpu_mem, NodeUsage, State};
use crate::placement::fit::{fit_node, InUse};

/// Ports handed out as `MASTER_PORT`: one per job, derived from its uid.
const MASTER_PORT_BASE: u32 = 29500;
const MASTER_PORT_SPAN: u64 = 10_000;

impl State {
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
        push_event(&mut j.status.events, now, "Submitted", msg);
        self.jobs.insert(name.clone(), j);
        self.touch_job(index, &name);
        Ok(self.job_applied(&name))
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

    pub(super) fn bind_all(&mut self, index: u64, now: u64, bindings: &[Binding]) -> Applied {
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
        self.check_binding(b)?;
        self.commit_binding(index, now, b);
        Ok(())
    }

    /// Why `b` no longer fits the current state, if it does not: the job
    /// moved on, a task is not pending or not given what it asks, the gang
    /// is short of `minAvailable`, or a node cannot hold what it is given.
    fn check_binding(&self, b: &Binding) -> Result<(), ApplyError> {
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
        }
        let min = job.spec.min_available.unwrap_or_else(|| job.task_count());
        if (b.tasks.len() as u32) < min {
            return Err(stale(format!(
                "{} of {} tasks placed, gang needs {min}",
                b.tasks.len(),
                job.task_count()
            )));
        }
        // Each task re-checked with placement's own fit (as Nomad's plan
        // applier re-checks with the scheduler's AllocsFit), the gang's
        // earlier tasks on the same node counted as in use.
        let mut on: BTreeMap<&str, NodeUsage> = BTreeMap::new();
        for p in &b.tasks {
            let node = self
                .nodes
                .get(&p.node)
                .ok_or_else(|| stale(format!("node {} unknown", p.node)))?;
            let spec = job
                .task_spec(p.index)
                .ok_or_else(|| stale(format!("no task {}", p.index)))?;
            let used = on
                .entry(p.node.as_str())
                .or_insert_with(|| self.usage(&p.node));
            let in_use = InUse {
                gpu_milli: &used.gpu_milli,
                cpu_milli: used.cpu_milli,
                memory_bytes: used.memory_bytes,
            };
            if let Some(why) = fit_node(node, in_use, &spec.resources, Some(&p.gpus)).misfit() {
                return Err(stale(why.on(&p.node)));
            }
            for g in &p.gpus {
                *used.gpu_milli.entry(g.index).or_default() += g.milli;
            }
            let (cpu, mem) = task_cpu_mem(job, p.index);
            used.cpu_milli += cpu;
            used.memory_bytes += mem;
        }
        Ok(())
    }

    /// Commit a checked binding: its tasks are bound, the ones a partial
    /// gang left out are cancelled, and the job runs.
    fn commit_binding(&mut self, index: u64, now: u64, b: &Binding) {
        let mut local: BTreeMap<String, u32> = BTreeMap::new();
        let mut holds = Vec::new();
        let job = self.jobs.get_mut(&b.job).expect("checked in check_binding");
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
        push_event(&mut job.status.events, now, "Scheduled", msg);
        for (n, g, c, m) in holds {
            self.hold(&n, &g, c, m);
        }
        self.touch_job(index, &b.job);
    }

    pub(super) fn task_report(
        &mut self,
        index: u64,
        now: u64,
        r: &TaskReport,
    ) -> Result<Applied, ApplyError> {
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
                    // What the node says about how it started the task (an
                    // image it could not honour) goes to the job's events.
                    if let Some(m) = r.message.as_ref().filter(|m| !m.is_empty()) {
                        t.message = Some(m.clone());
                        let msg = format!("task {} on {}: {m}", r.index, r.node);
                        push_event(&mut job.status.events, now, "NodeWarning", msg);
                    }
                    self.touch_job(index, &r.job);
                }
            }
            TaskPhase::Succeeded | TaskPhase::Failed => {
                t.phase = r.phase;
                t.exit_code = r.exit_code;
                t.message = r.message.clone();
                t.finish_time_ms = Some(now);
                t.usage = r.usage;
                if r.pid.is_some() {
                    t.pid = r.pid;
                }
                let (node, gpus) = (r.node.clone(), t.gpus.clone());
                let (cpu, mem) = task_cpu_mem(job, r.index);
                self.release(&node, &gpus, cpu, mem);
                if let (TaskPhase::Failed, Some(f)) = (r.phase, &r.gpu_fault) {
                    let why = format!("task {}: {}", r.index, f.message());
                    self.gpu_faulted(index, now, &node, f);
                    self.requeue(index, now, &r.job, &why, "GpuFault");
                } else if r.phase == TaskPhase::Failed {
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
                            &mut job.status.events,
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
    pub(super) fn fail_attempt(
        &mut self,
        index: u64,
        now: u64,
        name: &str,
        reason: &str,
        event: &str,
    ) {
        self.stop_tasks(
            name,
            TaskPhase::Failed,
            &format!("attempt failed: {reason}"),
        );
        let Some(job) = self.jobs.get_mut(name) else {
            return;
        };
        let attempt = job.status.attempt;
        push_event(
            &mut job.status.events,
            now,
            event,
            format!("attempt {attempt}: {reason}"),
        );
        // Attempts ended by preemption, GPU faults or drains do not use up retries.
        let free = job.status.preemptions + job.status.requeues;
        let failures = attempt - free.min(attempt - 1);
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
                job.spec.max_retries + 1 + free
            );
            push_event(&mut job.status.events, now, "Retrying", msg);
        } else {
            job.status.phase = JobPhase::Failed;
            job.status.completion_time_ms = Some(now);
            job.status.message = Some(reason.to_string());
        }
        self.touch_job(index, name);
    }

    pub(super) fn cancel(
        &mut self,
        index: u64,
        now: u64,
        name: &str,
    ) -> Result<Applied, ApplyError> {
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
        push_event(
            &mut job.status.events,
            now,
            "Cancelled",
            "cancelled by user".into(),
        );
        self.touch_job(index, name);
        Ok(self.job_applied(name))
    }

    /// `FailAttempt`: fail the job's attempt `attempt` if it is still the
    /// current one (a late timeout for an attempt that ended changes nothing).
    pub(super) fn fail_attempt_if_current(
        &mut self,
        index: u64,
        now: u64,
        job: &str,
        attempt: u32,
        reason: &str,
    ) -> Applied {
        let Some(j) = self.jobs.get(job) else {
            return Applied::Nothing;
        };
        if j.status.attempt != attempt || j.status.phase.is_terminal() {
            return Applied::Nothing;
        }
        self.fail_attempt(index, now, job, reason, "AttemptFailed");
        self.job_applied(job)
    }

    /// `Preempt`: stop each victim whose named attempt still holds
    /// resources; the answer lists the jobs stopped.
    pub(super) fn preempt_all(
        &mut self,
        index: u64,
        now: u64,
        victims: &[(String, u32)],
        by: &str,
        reason: &str,
    ) -> Applied {
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
        Applied::Bound {
            applied: stopped,
            refused: Vec::new(),
        }
    }

    /// Stop a job's current attempt for `by` and queue it again; the attempt
    /// does not count as a failure.
    fn preempt(&mut self, index: u64, now: u64, name: &str, by: &str, reason: &str) {
        self.stop_tasks(name, TaskPhase::Failed, reason);
        let Some(job) = self.jobs.get_mut(name) else {
            return;
        };
        job.status.preemptions += 1;
        let queued = format!(
            "attempt {} queued after preemption by {by:?}",
            job.status.attempt + 1
        );
        let message = format!("{reason}; waiting to run again");
        queue_new_attempt(job, now, ("Preempted", reason), message, queued);
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
        if let Some(e) = endpoint_of(j).filter(|e| self.endpoints.contains_key(*e)) {
            return Some(ApplyError::FailedPrecondition(format!(
                "job {name:?} is a replica of endpoint {e:?}; delete the endpoint (gpuctl delete endpoint {e})"
            )));
        }
        None
    }

    /// Remove a job that has ended (see [`State::refuse_delete`]).
    pub(super) fn delete_job(&mut self, name: &str) -> Result<Applied, ApplyError> {
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
}

/// Keep where the current attempt's tasks ran, before a new attempt
/// replaces them.
pub(super) fn remember_attempt(job: &mut Job, now: u64, reason: &str) {
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

pub(super) fn pending_tasks(job: &Job) -> Vec<TaskStatus> {
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

/// Ends `job`'s current attempt through no fault of its own (an `event`
/// with its `reason`: a preemption, a GPU fault, a drain) and queues the
/// next attempt, saying so in its events (`queued`) and `message`.
pub(super) fn queue_new_attempt(
    job: &mut Job,
    now: u64,
    (event, reason): (&str, &str),
    message: String,
    queued: String,
) {
    let attempt = job.status.attempt;
    remember_attempt(job, now, reason);
    push_event(
        &mut job.status.events,
        now,
        event,
        format!("attempt {attempt}: {reason}"),
    );
    job.status.attempt = attempt + 1;
    job.status.phase = JobPhase::Pending;
    job.status.tasks = pending_tasks(job);
    job.status.start_time_ms = None;
    job.status.message = Some(message);
    push_event(&mut job.status.events, now, "Requeued", queued);
}
