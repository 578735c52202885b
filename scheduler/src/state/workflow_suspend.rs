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
        self.workflow_mut(name)?
            .run
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
        let w = self.workflow_mut(name)?;
        w.run
            .resume(now)
            .map_err(|e| ApplyError::FailedPrecondition(format!("workflow {name:?} {e}")))?;
        let cancel = w.run.take_cancellations();
        self.cancel_steps(index, now, name, &cancel);
        self.advance_workflow(index, now, name);
        Ok(self.workflow_applied(name))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{Command, Envelope};
    use super::*;

    const WF: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: wf}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: approve, template: approve}
    - - {name: b, template: echo}
  - name: approve
    suspend: {}
  - name: echo
    container: {image: x, command: [echo, hi]}
"#;

    fn apply(s: &mut State, index: u64, cmd: Command) -> Result<Applied, ApplyError> {
        let r = s.apply(index, &Envelope::new(1000 * index, cmd));
        s.check_index();
        r
    }

    fn submit(s: &mut State, yaml: &str) {
        let wf = gpuctl_pipelines::parse_workflow("wf.yaml", yaml).unwrap();
        apply(
            s,
            1,
            Command::SubmitWorkflow {
                name: "wf".into(),
                workflow: Box::new(wf),
                arguments: BTreeMap::new(),
                owner: None,
            },
        )
        .unwrap();
    }

    fn name(name: &str) -> String {
        name.to_string()
    }

    #[test]
    fn resume_ends_a_suspend_step_and_starts_the_next_step_s_job() {
        let mut s = State::default();
        submit(&mut s, WF);
        assert!(s.jobs.is_empty());
        assert_eq!(s.workflows["wf"].run.suspended_nodes(), ["wf[0].approve"]);
        apply(&mut s, 2, Command::ResumeWorkflow { name: name("wf") }).unwrap();
        assert_eq!(s.jobs.keys().collect::<Vec<_>>(), ["wf-1-b"]);
    }

    #[test]
    fn a_suspended_workflow_starts_no_job_until_resumed() {
        let mut s = State::default();
        submit(
            &mut s,
            &WF.replace(
                "{name: approve, template: approve}",
                "{name: approve, template: echo}",
            )
            .replace("  entrypoint: main", "  entrypoint: main\n  suspend: true"),
        );
        assert!(s.jobs.is_empty());
        assert!(s.workflows["wf"].run.is_suspended());
        apply(&mut s, 2, Command::SuspendWorkflow { name: name("wf") }).unwrap();
        apply(&mut s, 3, Command::ResumeWorkflow { name: name("wf") }).unwrap();
        assert_eq!(s.jobs.keys().collect::<Vec<_>>(), ["wf-0-approve"]);
        assert!(!s.workflows["wf"].run.is_suspended());
    }

    #[test]
    fn unknown_and_finished_workflows_are_refused_by_name() {
        let mut s = State::default();
        let e = apply(&mut s, 1, Command::SuspendWorkflow { name: name("zz") }).unwrap_err();
        assert!(matches!(e, ApplyError::NotFound { .. }), "{e}");
        submit(&mut s, WF);
        apply(&mut s, 2, Command::CancelWorkflow { name: name("wf") }).unwrap();
        let e = apply(&mut s, 3, Command::ResumeWorkflow { name: name("wf") }).unwrap_err();
        assert!(
            e.to_string()
                .contains("workflow \"wf\" already Failed; nothing to resume"),
            "{e}"
        );
    }
}
