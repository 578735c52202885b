//! Clean-up of finished work: jobs whose `spec.ttlSecondsAfterFinished` and
//! workflows whose `spec.ttlStrategy` say they are due are deleted by the
//! leader, with the same `DeleteJob` / `DeleteWorkflow` commands that
//! `gpuctl delete` proposes, so every replica (and a restart) agrees.
//! Objects without a time to live are kept until deleted by hand.

use crate::state::{Command, State};

/// The deletions due at `now_ms`, jobs first, each in name order.
pub fn due(st: &State, now_ms: u64) -> Vec<Command> {
    let mut cmds = Vec::new();
    for (name, j) in &st.jobs {
        let Some(ttl) = j.spec.ttl_seconds_after_finished else {
            continue;
        };
        // Running jobs wait; steps go with their workflow, replicas with
        // their endpoint: what `gpuctl delete job` would refuse.
        if st.refuse_delete(j).is_some() {
            continue;
        }
        let Some(done) = j.status.completion_time_ms else {
            continue;
        };
        if done.saturating_add(ttl.saturating_mul(1000)) <= now_ms {
            cmds.push(Command::DeleteJob { name: name.clone() });
        }
    }
    for (name, w) in &st.workflows {
        if w.run.delete_at_ms().is_some_and(|t| t <= now_ms) {
            cmds.push(Command::DeleteWorkflow { name: name.clone() });
        }
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::testutil;
    use crate::state::{Envelope, LABEL_WORKFLOW};
    use std::collections::BTreeMap;

    fn apply(s: &mut State, index: u64, now: u64, cmd: Command) {
        s.apply(index, &Envelope::new(now, cmd)).unwrap();
    }

    #[test]
    fn finished_jobs_and_workflows_go_when_their_time_to_live_is_over() {
        let mut s = State::default();
        let mut keep = testutil::job("keep", None, 0, 1, 1.0);
        keep.spec.ttl_seconds_after_finished = None;
        let mut short = testutil::job("short", None, 0, 1, 1.0);
        short.spec.ttl_seconds_after_finished = Some(10);
        let mut running = testutil::job("running", None, 0, 1, 1.0);
        running.spec.ttl_seconds_after_finished = Some(0);
        for (i, j) in [keep, short, running].into_iter().enumerate() {
            apply(
                &mut s,
                i as u64 + 1,
                1_000,
                Command::SubmitJob { job: Box::new(j) },
            );
        }
        for (i, name) in ["keep", "short"].iter().enumerate() {
            let cmd = Command::CancelJob {
                name: name.to_string(),
            };
            apply(&mut s, 10 + i as u64, 5_000, cmd);
        }
        assert!(due(&s, 14_999).is_empty(), "not before 10 s after the end");
        let cmds = due(&s, 15_000);
        assert_eq!(cmds.len(), 1, "{cmds:?}");
        assert!(matches!(&cmds[0], Command::DeleteJob { name } if name == "short"));
        // Applied, it is gone and nothing else is due.
        apply(&mut s, 20, 15_000, cmds[0].clone());
        assert!(!s.jobs.contains_key("short"));
        assert!(due(&s, u64::MAX).is_empty(), "a running job stays");

        // A workflow with a TTL goes with its step jobs; its steps are not
        // deleted on their own even with a TTL of their own.
        let text = "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: main\n  ttlStrategy: {secondsAfterFailure: 60}\n  templates:\n  - name: main\n    container: {image: x, command: [\"true\"]}\n";
        let wf = gpuctl_pipelines::parse_workflow("wf.yaml", text).unwrap();
        let cmd = Command::SubmitWorkflow {
            name: "wf".into(),
            workflow: Box::new(wf),
            arguments: BTreeMap::new(),
            owner: None,
        };
        apply(&mut s, 30, 20_000, cmd);
        let step = s
            .jobs
            .values()
            .find(|j| j.metadata.labels.get(LABEL_WORKFLOW).map(String::as_str) == Some("wf"))
            .map(|j| j.metadata.name.clone())
            .expect("the workflow's step job");
        s.jobs
            .get_mut(&step)
            .unwrap()
            .spec
            .ttl_seconds_after_finished = Some(0);
        assert!(due(&s, u64::MAX).is_empty(), "running workflow");
        apply(
            &mut s,
            31,
            21_000,
            Command::CancelWorkflow { name: "wf".into() },
        );
        assert!(due(&s, 80_999).is_empty(), "{:?}", due(&s, 80_999));
        let cmds = due(&s, 81_000);
        assert_eq!(cmds.len(), 1, "{cmds:?}");
        assert!(matches!(&cmds[0], Command::DeleteWorkflow { name } if name == "wf"));
        apply(&mut s, 32, 81_000, cmds[0].clone());
        assert!(s.workflows.is_empty());
        assert!(!s.jobs.contains_key(&step), "its steps went with it");
        assert!(s.jobs.contains_key("keep"), "no TTL: kept");
    }
}
