//! A CronWorkflow's scheduled time, as the leader's controller proposed it
//! (`Command::CronRun`): applied once per time (a repeat after a failover
//! changes nothing), it records the time as handled and then runs the
//! workflow, or records why not: suspended, noticed too late
//! (`startingDeadlineSeconds`), or a run still going under
//! `concurrencyPolicy: Forbid`. `Replace` stops the running ones first.
//! The workflow is named `NAME-<unix seconds>` (Argo's name), its
//! `workflowTemplateRef` resolved against the templates stored now.

use std::collections::{BTreeMap, BTreeSet};

use gpuctl_pipelines::cron::{rfc3339, ConcurrencyPolicy, Counts, LABEL_CRON_WORKFLOW};
use gpuctl_pipelines::resolve::{has_references, resolve};
use gpuctl_pipelines::WorkflowPhase;

use super::command::{Applied, ApplyError};
use super::objects::ObjKey;
use super::State;

/// A scheduled time noticed this late still runs, whatever
/// `startingDeadlineSeconds` says: the controller looks once a second and a
/// leader change takes seconds, which Argo's own timer never sees.
pub const MIN_GRACE_SECONDS: i64 = 60;

impl State {
    /// Remove a CronWorkflow and, as Argo's owner references have
    /// Kubernetes do, the workflows it made: running ones are stopped
    /// first (as `gpuctl cancel workflow`), then every one is deleted with
    /// its step jobs. The view returned lists them under
    /// `status.deletedWorkflows`.
    pub(super) fn delete_cron_workflow(
        &mut self,
        index: u64,
        now: u64,
        name: &str,
    ) -> Result<Applied, ApplyError> {
        let mut view = self.cron_view(name);
        if !self.cron_workflows.contains_key(name) {
            return Err(ApplyError::NotFound {
                kind: "cronworkflow",
                name: name.to_string(),
            });
        }
        let children: Vec<(String, bool)> = self
            .cron_children(name)
            .iter()
            .map(|w| (w.metadata.name.clone(), w.run.phase().is_terminal()))
            .collect();
        for (wf, done) in &children {
            if !done {
                // Its exit handler, if any, does not run: the workflow goes.
                let _ = self.cancel_workflow(index, now, wf);
            }
            self.remove_workflow(wf);
        }
        self.cron_workflows.remove(name);
        self.dirty.insert(ObjKey::CronWorkflow(name.to_string()));
        if let Some(status) = view.get_mut("status") {
            status["deletedWorkflows"] =
                serde_json::json!(children.iter().map(|(n, _)| n).collect::<Vec<_>>());
        }
        Ok(Applied::Object(Box::new(view)))
    }

    pub(super) fn cron_run(
        &mut self,
        index: u64,
        now: u64,
        name: &str,
        scheduled_s: i64,
    ) -> Result<Applied, ApplyError> {
        let c = self
            .cron_workflows
            .get_mut(name)
            .ok_or_else(|| ApplyError::NotFound {
                kind: "cronworkflow",
                name: name.to_string(),
            })?;
        if c.status.last_scheduled_s.is_some_and(|l| l >= scheduled_s) {
            // Decided already (a new leader proposing the same time again).
            return Ok(Applied::Nothing);
        }
        c.status.last_scheduled_s = Some(scheduled_s);
        // Argo checks its stopStrategy before each run too.
        self.cron_count(name);
        let Some(c) = self.cron_workflows.get_mut(name) else {
            return Ok(Applied::Nothing);
        };
        let cron = c.cron.clone();
        if c.status.stopped {
            let at = rfc3339(scheduled_s);
            c.status.message = Some(format!("{at}: not run: stopped by its stopStrategy"));
            self.dirty.insert(ObjKey::CronWorkflow(name.to_string()));
            return Ok(Applied::Nothing);
        }
        let owner = c.metadata.owner.clone();
        self.dirty.insert(ObjKey::CronWorkflow(name.to_string()));
        let at = rfc3339(scheduled_s);
        let message = self.cron_start(index, now, &cron, owner.as_deref(), scheduled_s, &at);
        if let Some(c) = self.cron_workflows.get_mut(name) {
            c.status.message = Some(message);
        }
        Ok(Applied::Nothing)
    }

    /// Start the run for `scheduled_s` if the CronWorkflow's settings allow:
    /// what happened, in words.
    fn cron_start(
        &mut self,
        index: u64,
        now: u64,
        cron: &gpuctl_pipelines::cron::CronWorkflow,
        owner: Option<&str>,
        scheduled_s: i64,
        at: &str,
    ) -> String {
        if cron.spec.suspend {
            return format!("{at}: not run: suspended");
        }
        let late = (now / 1000) as i64 - scheduled_s;
        let grace = cron
            .spec
            .starting_deadline_seconds
            .unwrap_or(0)
            .max(MIN_GRACE_SECONDS);
        if late > grace {
            return format!(
                "{at}: not run: noticed {late}s late, past startingDeadlineSeconds ({grace}s)"
            );
        }
        let active: Vec<String> = self
            .cron_children(cron.name())
            .iter()
            .filter(|w| !w.run.phase().is_terminal())
            .map(|w| w.metadata.name.clone())
            .collect();
        match cron.concurrency_policy() {
            ConcurrencyPolicy::Forbid if !active.is_empty() => {
                return format!(
                    "{at}: not run: {} still running (concurrencyPolicy Forbid)",
                    active.join(", ")
                );
            }
            ConcurrencyPolicy::Replace => {
                for w in &active {
                    // A run that ended meanwhile has nothing to stop.
                    let _ = self.cancel_workflow(index, now, w);
                }
            }
            _ => {}
        }
        let mut wf = cron.workflow_at(scheduled_s);
        let wf_name = wf.metadata.name.clone().unwrap_or_default();
        if has_references(&wf) {
            match resolve(&wf, self) {
                Ok(r) => wf = r,
                Err(e) => return format!("{at}: not run: spec.workflowSpec: {}", e.reason),
            }
        }
        if let Some(e) = gpuctl_pipelines::validate_all(&wf).into_iter().next() {
            return format!("{at}: not run: {}: {}", e.path, e.reason);
        }
        match self.submit_workflow(index, now, &wf_name, &wf, &BTreeMap::new(), owner) {
            Ok(_) => format!("{at}: started workflow {wf_name}"),
            Err(e) => {
                // Argo counts a run it could not submit as failed.
                if let Some(c) = self.cron_workflows.get_mut(cron.name()) {
                    c.status.failed += 1;
                }
                self.cron_check_stop(cron.name());
                format!("{at}: not run: {e}")
            }
        }
    }

    /// After workflow `wf` changed: if a CronWorkflow made it and it has
    /// just finished, count it.
    pub(super) fn cron_child_changed(&mut self, wf: &str) {
        let Some(w) = self.workflows.get(wf) else {
            return;
        };
        if !w.run.phase().is_terminal() {
            return;
        }
        let Some(cron) = w.metadata.labels.get(LABEL_CRON_WORKFLOW).cloned() else {
            return;
        };
        let counted = self
            .cron_workflows
            .get(&cron)
            .is_none_or(|c| c.status.counted.contains(wf));
        if !counted {
            self.cron_count(&cron);
        }
    }

    /// Count the finished workflows of CronWorkflow `name` not counted
    /// yet (Argo's `status.succeeded`/`failed`: Error and Failed are
    /// failures), forget the counted ones deleted since, then check its
    /// stopStrategy.
    fn cron_count(&mut self, name: &str) {
        let finished: Vec<(String, WorkflowPhase)> = self
            .cron_children(name)
            .iter()
            .filter(|w| w.run.phase().is_terminal())
            .map(|w| (w.metadata.name.clone(), w.run.phase()))
            .collect();
        let Some(c) = self.cron_workflows.get_mut(name) else {
            return;
        };
        let before = (c.status.succeeded, c.status.failed, c.status.counted.len());
        let kept: BTreeSet<&String> = finished.iter().map(|(n, _)| n).collect();
        c.status.counted.retain(|n| kept.contains(n));
        for (wf, phase) in &finished {
            if c.status.counted.insert(wf.clone()) {
                match phase {
                    WorkflowPhase::Succeeded => c.status.succeeded += 1,
                    _ => c.status.failed += 1,
                }
            }
        }
        if before != (c.status.succeeded, c.status.failed, c.status.counted.len()) {
            self.dirty.insert(ObjKey::CronWorkflow(name.to_string()));
        }
        self.cron_check_stop(name);
    }

    /// Stop CronWorkflow `name` if its stopStrategy holds now (once:
    /// `Stopped` stays, as in Argo, until it is deleted).
    fn cron_check_stop(&mut self, name: &str) {
        let Some(c) = self.cron_workflows.get_mut(name) else {
            return;
        };
        let Some(st) = c.cron.spec.stop_strategy.as_ref() else {
            return;
        };
        if c.status.stopped {
            return;
        }
        let counts = Counts {
            succeeded: c.status.succeeded,
            failed: c.status.failed,
        };
        match st.holds(name, counts) {
            Ok(true) => {
                c.status.stopped = true;
                c.status.message = Some(format!(
                    "stopped: stopStrategy {:?} held with {} succeeded, {} failed",
                    st.expression, counts.succeeded, counts.failed
                ));
            }
            Ok(false) => return,
            Err(e) => c.status.message = Some(format!("stopStrategy: {e}")),
        }
        self.dirty.insert(ObjKey::CronWorkflow(name.to_string()));
    }
}
