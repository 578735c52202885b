//! A task's or step's exit handler (`onExit`, `hooks.exit`): once the
//! task's node has run to an end (Succeeded, Failed or Error; not Skipped
//! or Omitted), its handler `NODE.onExit` starts, with the task's own
//! `status`, `exitCode` and outputs in reach of its arguments.
//!
//! A fan-out task or step (`withItems`, `withParam`, `withSequence`) has
//! one handler per item, as in Argo: item `X(0:a)` that ran to an end gets
//! `X(0:a).onExit` as soon as it ends, with that item's `{{item}}` and, as
//! `tasks.X.*` (or `steps.X.*`), that item's status, exit code and
//! outputs. (Argo substitutes `{{item}}` in a fan-out step's handler; in a
//! DAG it resolves the unexpanded task's handler, which leaves `{{item}}`
//! as written: gpuctl gives both the item.)
//!
//! As in Argo, the task counts as done for what depends on it (the next
//! DAG task, the end of a step group) only once its handlers have ended
//! too, and a handler's own phase does not change the task's or the
//! template's: Argo decides a step group's phase from its steps alone, and
//! a DAG's from its tasks.
//!
//! A handler's node is kept in the DAG's (or step group's) task table as
//! `TASK.onExit` (or `TASK(0:a).onExit` for an item; task names have no
//! dot), so that waiting for every task of the table waits for handlers
//! too.

use super::node::{Node, NodeType};
use super::scope::TaskScope;
use super::state::Run;
use super::task::{fan_out_items, insert_item};
use crate::spec::{DagTask, LifecycleHook};

/// The task table key of the exit handler of the task (or fan-out item)
/// shown as `display`.
pub(super) fn exit_key(display: &str) -> String {
    format!("{display}.onExit")
}

impl Run {
    /// Whether `task` of container `cid` (a DAG node or a step group) is
    /// done, its exit handlers included.
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
        if task.exit_hook().is_none() {
            return true;
        }
        let handled = |n: &Node| {
            !n.phase.completed()
                || c.task_nodes
                    .get(&exit_key(&n.display_name))
                    .and_then(|id| self.nodes.get(id))
                    .is_some_and(|h| h.phase.is_fulfilled())
        };
        if n.node_type == NodeType::TaskGroup {
            return n
                .children
                .iter()
                .filter_map(|k| self.nodes.get(k))
                .all(handled);
        }
        handled(n)
    }

    /// Start `task`'s exit handler once its node has run to an end (each
    /// item's, for a fan-out), or advance the handlers already started.
    /// `scope` is what the handler's arguments may use (the task itself
    /// included, as `PREFIX.TASK.*`: `tasks` in a DAG, `steps` in a steps
    /// template).
    pub(super) fn run_exit_hook(
        &mut self,
        cid: &str,
        task: &DagTask,
        prefix: &str,
        scope: impl Fn(&Run) -> TaskScope,
        now_ms: u64,
    ) {
        let Some(hook) = task.exit_hook() else {
            return;
        };
        let Some(tid) = self.nodes[cid].task_nodes.get(&task.name).cloned() else {
            return;
        };
        if self.nodes[&tid].node_type == NodeType::TaskGroup {
            self.run_item_exit_hooks(cid, task, &tid, &hook, prefix, scope, now_ms);
            return;
        }
        if self.start_or_advance_hook(cid, &tid, now_ms) {
            let scope = scope(self);
            self.start_hook(cid, &tid, &hook, &scope, now_ms);
        }
    }

    /// One handler per item of fan-out `group`, each started once its item
    /// has run to an end.
    #[allow(clippy::too_many_arguments)]
    fn run_item_exit_hooks(
        &mut self,
        cid: &str,
        task: &DagTask,
        group: &str,
        hook: &LifecycleHook,
        prefix: &str,
        scope: impl Fn(&Run) -> TaskScope,
        now_ms: u64,
    ) {
        let kids = self.nodes[group].children.clone();
        let mut items: Option<Vec<serde_json::Value>> = None;
        for (i, kid) in kids.iter().enumerate() {
            if !self.start_or_advance_hook(cid, kid, now_ms) {
                continue;
            }
            let mut s = scope(self);
            // The items as the group expanded them (the scope it started
            // with is in this one).
            let items = items.get_or_insert_with(|| match fan_out_items(task, &s.vars) {
                Ok(Some(v)) => v,
                _ => Vec::new(),
            });
            if let Some(item) = items.get(i) {
                insert_item(&mut s.vars, item);
            }
            // The task's own variables are this item's.
            let pre = format!("{prefix}.{}", task.name);
            let mine = |k: &String| k.starts_with(&format!("{pre}."));
            s.vars.retain(|k, _| !mine(k));
            s.artifacts.retain(|k, _| !mine(k));
            self.add_node_vars(&mut s, &pre, &self.nodes[kid]);
            self.start_hook(cid, kid, hook, &s, now_ms);
        }
    }

    /// Advance the handler of node `of` if it has one; `true` when it has
    /// none yet and should start (`of` ran to an end).
    fn start_or_advance_hook(&mut self, cid: &str, of: &str, now_ms: u64) -> bool {
        let Some(n) = self.nodes.get(of) else {
            return false;
        };
        let key = exit_key(&n.display_name);
        if let Some(h) = self.nodes[cid].task_nodes.get(&key).cloned() {
            self.advance(&h, now_ms);
            return false;
        }
        n.phase.completed()
    }

    /// Start the handler `OF.onExit` of node `of` in container `cid`.
    fn start_hook(
        &mut self,
        cid: &str,
        of: &str,
        hook: &LifecycleHook,
        scope: &TaskScope,
        now_ms: u64,
    ) {
        let key = exit_key(&self.nodes[of].display_name);
        let as_task = DagTask {
            name: key,
            template: hook.template.clone(),
            arguments: hook.arguments.clone(),
            ..Default::default()
        };
        let c = &self.nodes[cid];
        let (depth, exit_handler) = (c.depth, c.exit_handler);
        let id = format!("{of}.onExit");
        self.start_task(cid, &id, &as_task, scope, depth, exit_handler, now_ms);
    }
}
