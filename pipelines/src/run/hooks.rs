//! A task's or step's exit handler (`onExit`, `hooks.exit`): once the
//! task's node has run to an end (Succeeded, Failed or Error; not Skipped
//! or Omitted), its handler `NODE.onExit` starts, with the task's own
//! `status`, `exitCode` and outputs in reach of its arguments.
//!
//! As in Argo, the task counts as done for what depends on it (the next
//! DAG task, the end of a step group) only once its handler has ended too,
//! and the handler's own phase does not change the task's or the
//! template's: Argo decides a step group's phase from its steps alone, and
//! a DAG's from its tasks.
//!
//! The handler's node is kept in the DAG's (or step group's) task table
//! as `TASK.onExit` (task names have no dot), so that waiting for every
//! task of the table waits for handlers too.

use super::scope::TaskScope;
use super::state::Run;
use crate::spec::DagTask;

/// The task table key of `task`'s exit handler.
pub(super) fn exit_key(task: &str) -> String {
    format!("{task}.onExit")
}

impl Run {
    /// Whether `task` of container `cid` (a DAG node or a step group) is
    /// done, its exit handler included.
    pub(super) fn task_done(&self, cid: &str, task: &DagTask) -> bool {
        let c = &self.nodes[cid];
        let Some(n) = c
            .task_nodes
            .get(&task.name)
            .and_then(|id| self.nodes.get(id))
        else {
            return false;
        };
        if !n.phase.is_fulfilled() {
            return false;
        }
        if task.exit_hook().is_none() || !n.phase.completed() {
            return true;
        }
        c.task_nodes
            .get(&exit_key(&task.name))
            .and_then(|id| self.nodes.get(id))
            .is_some_and(|h| h.phase.is_fulfilled())
    }

    /// Start `task`'s exit handler once its node has run to an end, or
    /// advance the handler already started. `scope` is what the handler's
    /// arguments may use (the task itself included).
    pub(super) fn run_exit_hook(
        &mut self,
        cid: &str,
        task: &DagTask,
        scope: impl FnOnce(&Run) -> TaskScope,
        now_ms: u64,
    ) {
        let Some(hook) = task.exit_hook() else {
            return;
        };
        let c = &self.nodes[cid];
        let key = exit_key(&task.name);
        if let Some(h) = c.task_nodes.get(&key).cloned() {
            self.advance(&h, now_ms);
            return;
        }
        let completed = c
            .task_nodes
            .get(&task.name)
            .and_then(|id| self.nodes.get(id))
            .is_some_and(|n| n.phase.completed());
        if !completed {
            return;
        }
        let as_task = DagTask {
            name: key.clone(),
            template: hook.template,
            arguments: hook.arguments,
            ..Default::default()
        };
        let scope = scope(self);
        let c = &self.nodes[cid];
        let (depth, exit_handler) = (c.depth, c.exit_handler);
        let id = format!("{cid}.{key}");
        self.start_task(cid, &id, &as_task, &scope, depth, exit_handler, now_ms);
    }
}
