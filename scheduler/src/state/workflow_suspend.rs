//! Suspending and resuming a workflow (`gpuctl suspend`, `gpuctl resume`,
//! as `argo suspend` and `argo resume`): the run's own rules
//! ([`gpuctl_pipelines::Run::suspend`], [`gpuctl_pipelines::Run::resume`])
//! applied in the replicated state, so every replica agrees and a new
//! leader keeps a suspended run suspended.

use super::command::{Applied, ApplyError};
use super::State;

impl State {
    /// No new step of workflow `name` starts; running steps finish.
    pub(super) fn suspend_workflow(
        &mut self,
        index: u64,
        now: u64,
        name: &str,
    ) -> Result<Applied, ApplyError> {
        let w = self
            .workflows
            .get_mut(name)
            .ok_or_else(|| ApplyError::NotFound {
                kind: "workflow",
                name: name.to_string(),
            })?;
        w.run
            .suspend()
            .map_err(|e| ApplyError::FailedPrecondition(format!("workflow {name:?} {e}")))?;
        self.advance_workflow(index, now, name);
        Ok(self.workflow_applied(name))
    }

    /// Steps of workflow `name` start again, and its waiting `suspend`
    /// steps end Succeeded.
    pub(super) fn resume_workflow(
        &mut self,
        index: u64,
        now: u64,
        name: &str,
    ) -> Result<Applied, ApplyError> {
        let w = self
            .workflows
            .get_mut(name)
            .ok_or_else(|| ApplyError::NotFound {
                kind: "workflow",
                name: name.to_string(),
            })?;
        w.run
            .resume(now)
            .map_err(|e| ApplyError::FailedPrecondition(format!("workflow {name:?} {e}")))?;
        let cancel = w.run.take_cancellations();
        self.cancel_steps(index, now, name, &cancel);
        self.advance_workflow(index, now, name);
        Ok(self.workflow_applied(name))
    }
}
