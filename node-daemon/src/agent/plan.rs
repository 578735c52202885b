//! The reconciler's decision, pure: the desired set from the scheduler and
//! the local task table in, the [`Action`]s that make them agree out. No
//! processes, no channels, no clock, so it is tested as a table.

use std::collections::{BTreeMap, HashSet};

use gpuctl_common::api::TaskPhase;

use crate::assignment::Assignment;
use crate::runtime::TaskKey;

/// The local state of a task, as [`plan`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalState {
    /// Its process is running.
    Running,
    /// Its process group was sent SIGTERM because it left the desired set.
    Stopping,
    /// Assigned, but a GPU it needs is still held by a stopping process of
    /// this node (a preempted or cancelled task within its grace period);
    /// started as soon as that process exits, so that a GPU is never used
    /// beyond its capacity.
    Waiting,
    /// Over (exited, failed to start, or reported lost); kept while the task
    /// is still desired so that a re-sent assignment never starts it twice.
    Done,
}

impl LocalState {
    /// Its process lives (running, or stopping within the kill grace): it
    /// holds its GPUs and its port.
    pub fn has_process(self) -> bool {
        matches!(self, LocalState::Running | LocalState::Stopping)
    }
}

/// One step of reconciliation.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A `Bound` task with no local record: start it.
    Start(Assignment),
    /// A `Running` task with no local record: its process is gone (the daemon
    /// restarted); report it failed, never start it again.
    ReportLost(Assignment),
    /// A running process whose task is no longer desired: stop its group.
    Stop(TaskKey),
    /// A finished task that is no longer desired: drop its record.
    Forget(TaskKey),
}

/// Compare the desired set with the local table. Pure and idempotent: the
/// same inputs give the same actions, and after carrying them out the next
/// call with the same desired set gives none.
pub fn plan(desired: &[Assignment], local: &BTreeMap<TaskKey, LocalState>) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut seen = HashSet::new();
    for a in desired {
        let key = a.key();
        if !seen.insert(key.clone()) || local.contains_key(&key) {
            continue;
        }
        match a.phase {
            TaskPhase::Bound => actions.push(Action::Start(a.clone())),
            TaskPhase::Running => actions.push(Action::ReportLost(a.clone())),
            // Any other phase is the scheduler's business, not a process.
            TaskPhase::Pending
            | TaskPhase::Succeeded
            | TaskPhase::Failed
            | TaskPhase::Cancelled => {}
        }
    }
    for (key, state) in local {
        if seen.contains(key) {
            continue;
        }
        match state {
            LocalState::Running => actions.push(Action::Stop(key.clone())),
            LocalState::Stopping => {}
            LocalState::Done | LocalState::Waiting => actions.push(Action::Forget(key.clone())),
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(job: &str, phase: TaskPhase) -> Assignment {
        Assignment {
            job: job.into(),
            task_index: 0,
            attempt: 1,
            phase,
            command: vec!["true".into()],
            job_tasks: 1,
            ..Default::default()
        }
    }

    fn key(job: &str) -> TaskKey {
        TaskKey {
            job: job.into(),
            task_index: 0,
            attempt: 1,
        }
    }

    #[test]
    fn plan_table() {
        use LocalState::*;
        type Local = &'static [(&'static str, LocalState)];
        let bound = || task("a", TaskPhase::Bound);
        let running = || task("a", TaskPhase::Running);
        #[rustfmt::skip]
        let cases: [(&str, Vec<Assignment>, Local, Vec<Action>); 12] = [
            ("bound and new: start", vec![bound()], &[], vec![Action::Start(bound())]),
            ("bound and running here: nothing", vec![bound()], &[("a", Running)], vec![]),
            ("running and running here: nothing", vec![running()], &[("a", Running)], vec![]),
            ("re-sent after exit: not again", vec![bound()], &[("a", Done)], vec![]),
            ("running, unknown here: lost", vec![running()], &[], vec![Action::ReportLost(running())]),
            ("gone while running: stop", vec![], &[("a", Running)], vec![Action::Stop(key("a"))]),
            ("gone while stopping: wait", vec![], &[("a", Stopping)], vec![]),
            ("gone after exit: forget", vec![], &[("a", Done)], vec![Action::Forget(key("a"))]),
            ("waiting for a GPU: nothing", vec![bound()], &[("a", Waiting)], vec![]),
            ("gone while waiting: forget", vec![], &[("a", Waiting)], vec![Action::Forget(key("a"))]),
            ("other phases: nothing", vec![task("a", TaskPhase::Pending)], &[], vec![]),
            ("duplicates: once", vec![bound(), bound()], &[], vec![Action::Start(bound())]),
        ];
        for (name, desired, local, want) in cases {
            let local: BTreeMap<TaskKey, LocalState> =
                local.iter().map(|(j, s)| (key(j), *s)).collect();
            assert_eq!(plan(&desired, &local), want, "{name}");
        }
    }

    #[test]
    fn new_attempt_replaces_old() {
        let mut retry = task("a", TaskPhase::Bound);
        retry.attempt = 2;
        let local: BTreeMap<TaskKey, LocalState> =
            [(key("a"), LocalState::Running)].into_iter().collect();
        assert_eq!(
            plan(&[retry.clone()], &local),
            vec![Action::Start(retry), Action::Stop(key("a"))]
        );
    }
}
