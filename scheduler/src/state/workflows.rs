//! Workflows (Argo `Workflow` DAGs) in the replicated state.
//!
//! A workflow is stored with its [`Run`] (the pure state machine of the
//! `pipelines` crate). The run advances inside [`State::apply`], so every
//! replica computes the same thing from the same log:
//!
//! ```text
//!  SubmitWorkflow ──► Run::new ──► ready_steps ──► one Job per step (labels
//!                                      ▲            gpuctl.io/workflow, /step)
//!  TaskReport (a step's job ends) ─────┤ on_step_finished(outputs from the
//!                                      │   node daemon), in the same apply
//!  WorkflowTick (leader's clock) ──────┤ on_tick: deadlines, retry backoff
//!  CancelWorkflow ─────────────────────┤ terminate: step jobs cancelled
//!  Suspend/ResumeWorkflow ─────────────┘ (workflow_suspend.rs)
//! ```
//!
//! Step jobs are created in the same apply that finished their dependencies:
//! no controller round trip between steps, and after a failover the new
//! leader finds finished steps in the state and never runs them again. The
//! memoization cache is replicated state too. The only clock-driven part is
//! [`WorkflowObject::wake_at_ms`]: the leader's controller proposes a
//! `WorkflowTick` once it has passed. The workflow object and its stored
//! records are in `workflow_object.rs`; this file is the apply side.

use std::collections::{BTreeMap, BTreeSet};

use gpuctl_common::api::{
    validate_name, Job, JobPhase, JobSpec, ObjectMeta, Resources, TaskPhase, TaskSpec,
};
use gpuctl_pipelines::{MemoCache, MemoEntry, Run, StepOutcome, StepToLaunch, Workflow};

use super::command::{Applied, ApplyError, StepOutputs};
use super::objects::ObjKey;
use super::workflow_object::{MemoRecord, WorkflowObject, LABEL_STEP, LABEL_WORKFLOW};
use super::State;

/// The replicated memo cache, recording which keys were written.
struct Recording<'a> {
    map: &'a mut BTreeMap<String, MemoEntry>,
    written: &'a mut Vec<String>,
}

impl MemoCache for Recording<'_> {
    fn get(&self, key: &str) -> Option<MemoEntry> {
        self.map.get(key).cloned()
    }
    fn put(&mut self, key: &str, entry: MemoEntry) {
        self.map.insert(key.to_string(), entry);
        self.written.push(key.to_string());
    }
}

/// A job name (DNS label) for a step: the step id with every other
/// character turned into `-`, e.g. `diamond.b(0:x)` → `diamond-b-0-x`.
pub fn sanitize_job_name(step_id: &str) -> String {
    let mut out = String::with_capacity(step_id.len());
    for c in step_id.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let t = out.trim_matches('-');
    if t.is_empty() {
        "step".to_string()
    } else {
        t.to_string()
    }
}

/// FNV-1a: a stable hash (the same on every replica and every build).
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The outcome the run is told for a step job that ended.
fn outcome_of(job: &Job, outputs: Option<StepOutputs>) -> StepOutcome {
    let outputs = outputs.unwrap_or_default();
    let task = job.status.tasks.first();
    let code = task.and_then(|t| t.exit_code);
    let job_msg = job.status.message.clone();
    let mut o = match (job.status.phase, code) {
        (JobPhase::Succeeded, _) => StepOutcome::succeeded(),
        (JobPhase::Failed, Some(c)) if c >= 0 && c != 127 => {
            let mut o = StepOutcome::failed(c);
            if let Some(m) = task
                .and_then(|t| t.message.clone())
                .filter(|m| !m.is_empty())
            {
                o.message = Some(m);
            }
            o
        }
        (JobPhase::Failed, _) => {
            StepOutcome::errored(job_msg.as_deref().unwrap_or("the step's job failed"))
        }
        _ => StepOutcome::errored(job_msg.as_deref().unwrap_or("the step's job was cancelled")),
    };
    if let Some(e) = outputs.error {
        let mut e = StepOutcome::errored(&e);
        e.exit_code = o.exit_code;
        return e;
    }
    o.parameters = outputs.parameters;
    o.result = outputs.result;
    o.artifacts = outputs.artifacts;
    o
}

/// The job that runs one step.
fn step_job(name: &str, workflow: &str, step: &StepToLaunch) -> Job {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_WORKFLOW.to_string(), workflow.to_string());
    labels.insert(LABEL_STEP.to_string(), step.id.clone());
    let mut job = Job::new(
        name,
        JobSpec {
            tasks: vec![TaskSpec {
                name: "main".into(),
                replicas: 1,
                // A script's file is inserted after `command` by the daemon.
                command: step.argv(None),
                env: step.env.clone(),
                env_from: Vec::new(),
                secret_files: Vec::new(),
                working_dir: step.working_dir.clone(),
                resources: Resources {
                    gpus: step.resources.gpus,
                    cpu: step.resources.cpu,
                    memory: step.resources.memory,
                    ..Default::default()
                },
                // The step's `image`, run in under a node's container runtime.
                image: step.image.clone(),
            }],
            min_available: None,
            priority: 0,
            topology: Default::default(),
            // Retries are the workflow's (retryStrategy): each is a new step.
            max_retries: 0,
            timeout_seconds: None,
            ttl_seconds_after_finished: None,
        },
    );
    job.metadata.labels = labels;
    job
}
impl State {
    /// Store a workflow and start its run. `name` was chosen by the
    /// proposer (a `generateName` suffix is random, so it cannot be chosen
    /// here).
    pub(super) fn submit_workflow(
        &mut self,
        index: u64,
        now: u64,
        name: &str,
        workflow: &Workflow,
        arguments: &BTreeMap<String, String>,
        owner: Option<&str>,
    ) -> Result<Applied, ApplyError> {
        if self.workflows.contains_key(name) {
            return Err(ApplyError::AlreadyExists {
                kind: "workflow",
                name: name.to_string(),
            });
        }
        validate_name("metadata.name", name).map_err(|e| ApplyError::Invalid(e.to_string()))?;
        let run = Run::new(workflow, name, arguments, now)
            .map_err(|e| ApplyError::Invalid(e.to_string()))?;
        let obj = WorkflowObject {
            metadata: ObjectMeta {
                name: name.to_string(),
                labels: workflow.metadata.labels.clone(),
                uid: Some(index),
                resource_version: Some(index),
                creation_timestamp_ms: Some(now),
                owner: owner.map(str::to_string),
                ..Default::default()
            },
            run,
            wake_at_ms: None,
            jobs: BTreeMap::new(),
            running: BTreeMap::new(),
        };
        self.workflows.insert(name.to_string(), obj);
        self.dirty.insert(ObjKey::WorkflowSpec(name.to_string()));
        self.advance_workflow(index, now, name);
        Ok(self.workflow_applied(name))
    }

    /// Deadlines and retry backoff whose time has come.
    pub(super) fn workflow_tick(
        &mut self,
        index: u64,
        now: u64,
        name: &str,
    ) -> Result<Applied, ApplyError> {
        let Some(w) = self.workflows.get_mut(name) else {
            return Ok(Applied::Nothing);
        };
        if w.run.phase().is_terminal() {
            return Ok(Applied::Nothing);
        }
        let tick = w.run.on_tick(now);
        self.cancel_steps(index, now, name, &tick.cancel);
        self.advance_workflow(index, now, name);
        Ok(Applied::Nothing)
    }

    /// Workflow `name`, to change; NotFound when there is none.
    pub(super) fn workflow_mut(&mut self, name: &str) -> Result<&mut WorkflowObject, ApplyError> {
        self.workflows
            .get_mut(name)
            .ok_or_else(|| ApplyError::NotFound {
                kind: "workflow",
                name: name.to_string(),
            })
    }

    /// Stop a workflow: running steps are cancelled, nothing new starts.
    pub(super) fn cancel_workflow(
        &mut self,
        index: u64,
        now: u64,
        name: &str,
    ) -> Result<Applied, ApplyError> {
        let w = self.workflow_mut(name)?;
        if w.run.phase().is_terminal() {
            return Err(ApplyError::FailedPrecondition(format!(
                "workflow {name:?} already {}; nothing to cancel",
                w.run.phase()
            )));
        }
        let mut cancel = w.run.terminate(now, "cancelled by user");
        // Steps still running that the run does not list (defensive).
        cancel.extend(w.running.values().map(|s| s.id.clone()));
        self.cancel_steps(index, now, name, &cancel);
        self.advance_workflow(index, now, name);
        Ok(self.workflow_applied(name))
    }

    pub(super) fn workflow_applied(&self, name: &str) -> Applied {
        self.workflows
            .get(name)
            .map(|w| Applied::Workflow(Box::new(w.view())))
            .unwrap_or(Applied::Nothing)
    }

    /// After any command: step jobs that this command ended are reported
    /// to their runs, which then launch what became ready. `touched` are the
    /// jobs the command changed.
    pub(super) fn workflow_jobs_changed(
        &mut self,
        index: u64,
        now: u64,
        touched: &[String],
        report: Option<(&str, &StepOutputs)>,
    ) {
        let mut advance = BTreeSet::new();
        for job in touched {
            let Some(j) = self.jobs.get(job) else {
                continue;
            };
            if !j.status.phase.is_terminal() {
                continue;
            }
            let (Some(wf), Some(step)) = (
                j.metadata.labels.get(LABEL_WORKFLOW),
                j.metadata.labels.get(LABEL_STEP),
            ) else {
                continue;
            };
            let Some(w) = self.workflows.get_mut(wf) else {
                continue;
            };
            if w.running.remove(job).is_none() {
                continue; // already reported
            }
            let outputs = report
                .filter(|(name, _)| *name == job.as_str())
                .map(|(_, o)| o.clone());
            let outcome = outcome_of(j, outputs);
            let mut written = Vec::new();
            let mut cache = Recording {
                map: &mut self.memo,
                written: &mut written,
            };
            // An error means the run no longer waits for this step (it was
            // stopped by a deadline or a cancel): nothing to record.
            let _ = w.run.on_step_finished(step, outcome, now, &mut cache);
            for k in written {
                self.dirty.insert(ObjKey::Memo(k));
            }
            advance.insert(wf.clone());
        }
        for wf in advance {
            self.advance_workflow(index, now, &wf);
        }
    }

    /// Launch the steps whose turn has come, stop those the run gave up on,
    /// and note when the run next needs the clock.
    pub(super) fn advance_workflow(&mut self, index: u64, now: u64, name: &str) {
        // Bounded: each round either launches steps or errors some (which
        // may make others ready); a run has finitely many steps.
        for _ in 0..10_000 {
            let Some(w) = self.workflows.get_mut(name) else {
                return;
            };
            let mut written = Vec::new();
            let mut cache = Recording {
                map: &mut self.memo,
                written: &mut written,
            };
            let steps = w.run.ready_steps(now, &mut cache);
            let cancel = w.run.take_cancellations();
            for k in written {
                self.dirty.insert(ObjKey::Memo(k));
            }
            self.cancel_steps(index, now, name, &cancel);
            if steps.is_empty() {
                break;
            }
            let mut refused = Vec::new();
            for step in steps {
                let job_name = self.step_job_name(&step.id);
                let mut job = step_job(&job_name, name, &step);
                job.metadata.owner = self
                    .workflows
                    .get(name)
                    .and_then(|w| w.metadata.owner.clone());
                match self.submit(index, now, &job) {
                    Ok(_) => {
                        let w = self.workflows.get_mut(name).expect("present");
                        w.jobs.insert(step.id.clone(), job_name.clone());
                        w.running.insert(job_name, step);
                    }
                    Err(e) => refused.push((step.id.clone(), e.to_string())),
                }
            }
            if refused.is_empty() {
                break;
            }
            let w = self.workflows.get_mut(name).expect("present");
            for (id, why) in refused {
                let mut written = Vec::new();
                let mut cache = Recording {
                    map: &mut self.memo,
                    written: &mut written,
                };
                let outcome = StepOutcome::errored(&format!("cannot create its job: {why}"));
                let _ = w.run.on_step_finished(&id, outcome, now, &mut cache);
            }
        }
        if let Some(w) = self.workflows.get_mut(name) {
            w.wake_at_ms = w.run.next_wakeup_ms(now);
            w.metadata.resource_version = Some(index);
        }
        self.dirty.insert(ObjKey::Workflow(name.to_string()));
        self.cron_child_changed(name);
    }

    /// Cancel the jobs of these steps (those not already over).
    pub(super) fn cancel_steps(&mut self, index: u64, now: u64, workflow: &str, steps: &[String]) {
        for id in steps {
            let Some(job) = self
                .workflows
                .get(workflow)
                .and_then(|w| w.jobs.get(id))
                .cloned()
            else {
                continue;
            };
            if let Some(w) = self.workflows.get_mut(workflow) {
                w.running.remove(&job);
            }
            if self
                .jobs
                .get(&job)
                .is_some_and(|j| !j.status.phase.is_terminal())
            {
                let _ = self.cancel(index, now, &job);
            }
        }
    }

    /// A job name for a step: the sanitized step id, or, when that is too
    /// long or taken, a prefix of it plus a hash of the id.
    fn step_job_name(&self, step_id: &str) -> String {
        let base = sanitize_job_name(step_id);
        if base.len() <= 63 && !self.jobs.contains_key(&base) {
            return base;
        }
        let h = fnv1a(step_id);
        for salt in 0u64..1000 {
            let suffix = format!("-{:08x}", (h.wrapping_add(salt)) as u32);
            let keep = base.len().min(63 - suffix.len());
            let name = format!("{}{suffix}", base[..keep].trim_end_matches('-'));
            if !self.jobs.contains_key(&name) {
                return name;
            }
        }
        format!("step-{h:016x}")
    }

    /// The launch spec of the step a job runs, if it is a running step.
    pub fn step_of_job(&self, job: &Job) -> Option<&StepToLaunch> {
        let wf = job.metadata.labels.get(LABEL_WORKFLOW)?;
        self.workflows.get(wf)?.running.get(&job.metadata.name)
    }

    /// Restore workflows and the memo cache (after a restart or snapshot).
    pub fn with_workflows(mut self, workflows: Vec<WorkflowObject>, memo: Vec<MemoRecord>) -> Self {
        self.workflows = workflows
            .into_iter()
            .map(|w| (w.metadata.name.clone(), w))
            .collect();
        #[cfg(test)]
        {
            self.persisted_nodes = self
                .workflows
                .iter()
                .map(|(name, w)| (name.clone(), w.run.nodes().clone()))
                .collect();
        }
        self.memo = memo.into_iter().map(|r| (r.key, r.entry)).collect();
        self
    }

    /// After an apply: mark the nodes of `workflow` that its run added or
    /// changed ([`Run::take_touched`]), so only they are written; a step's
    /// end costs the nodes it changed, not a look at every node of a
    /// 10,000-way fan-out.
    pub(super) fn note_changed_nodes(&mut self, workflow: &str) {
        let Some(w) = self.workflows.get_mut(workflow) else {
            return;
        };
        let touched = w.run.take_touched();
        #[cfg(test)]
        self.check_touched(workflow, &touched);
        for id in touched {
            self.dirty
                .insert(ObjKey::WorkflowNode(workflow.to_string(), id));
        }
    }

    /// Tests only: every node that differs from its last marked copy was
    /// reported touched (a change the run did not note would not be
    /// stored, and a restarted replica would lose it).
    /// Runs of more than 2,000 nodes (the fan-out timing aid) are not
    /// checked: the check compares every node on every apply.
    #[cfg(test)]
    fn check_touched(&mut self, workflow: &str, touched: &BTreeSet<String>) {
        let Some(w) = self.workflows.get(workflow) else {
            return;
        };
        if w.run.nodes().len() > 2000 {
            return;
        }
        let shadow = self
            .persisted_nodes
            .entry(workflow.to_string())
            .or_default();
        for (id, n) in w.run.nodes() {
            if shadow.get(id) != Some(n) {
                assert!(
                    touched.contains(id),
                    "workflow {workflow}: node {id} changed but was not noted"
                );
                shadow.insert(id.clone(), n.clone());
            }
        }
    }

    /// Workflows whose timer has passed at `now_ms` (for the controller).
    pub fn workflows_due(&self, now_ms: u64) -> Vec<String> {
        self.workflows
            .values()
            .filter(|w| !w.run.phase().is_terminal())
            .filter(|w| w.wake_at_ms.is_some_and(|t| t <= now_ms))
            .map(|w| w.metadata.name.clone())
            .collect()
    }

    /// Remove a workflow that has ended, with its step jobs (its memoized
    /// outputs stay: they are a cache shared by workflows).
    pub(super) fn delete_workflow(&mut self, name: &str) -> Result<Applied, ApplyError> {
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
        Ok(self.remove_workflow(name))
    }

    /// Remove workflow `name`, its step jobs (any task still holding
    /// resources stopped) and its records, whatever its phase.
    pub(super) fn remove_workflow(&mut self, name: &str) -> Applied {
        let Some(w) = self.workflows.get(name) else {
            return Applied::Nothing;
        };
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
        #[cfg(test)]
        self.persisted_nodes.remove(name);
        for id in nodes {
            self.dirty
                .insert(ObjKey::WorkflowNode(name.to_string(), id));
        }
        self.dirty.insert(ObjKey::Workflow(name.to_string()));
        self.dirty.insert(ObjKey::WorkflowSpec(name.to_string()));
        Applied::Workflow(Box::new(view))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fanout_timing;
