//! A `Steps` node: Argo's `steps` template, a list of groups run one after
//! another while the steps of one group run in parallel. It is a DAG whose
//! group `i` depends on group `i-1`, and it reuses the DAG's task start
//! (fan-out, `when`, arguments), but keeps Argo's node names: group `i` is
//! the `StepGroup` node `NAME[i]` and its steps are `NAME[i].STEP`.
//!
//! As in Argo, a group ends once every step in it has ended; a step that
//! failed (and whose `continueOn` does not cover it) fails the group and
//! the steps template, and no later group starts. Skipped steps (a false
//! `when`) do not stop anything.

use super::node::{Node, NodePhase, NodeType};
use super::state::Run;
use crate::spec::{Template, WorkflowStep};

impl Run {
    /// Advance steps node `id`: its running group, then the next group or
    /// its own end.
    pub(super) fn advance_steps(&mut self, id: &str, now_ms: u64) {
        let Some(tmpl) = self.nodes[id]
            .template
            .as_deref()
            .and_then(|t| self.template(t))
            .cloned()
        else {
            return;
        };
        let groups = tmpl.steps.clone().unwrap_or_default();
        // Each pass concludes a group or starts one; a group whose steps
        // all end at once (all skipped) lets the loop go on.
        for _ in 0..=groups.len() * 2 + 1 {
            let started = self.nodes[id].children.len();
            if started > 0 {
                let gid = self.nodes[id].children[started - 1].clone();
                if !self.nodes[&gid].phase.is_fulfilled() {
                    match self.conclude_group(&gid, &groups[started - 1], now_ms) {
                        None => return,
                        Some(NodePhase::Succeeded) => {}
                        Some(phase) => {
                            let msg = self.nodes[&gid].message.clone();
                            self.finish_node(id, phase, msg, now_ms);
                            return;
                        }
                    }
                }
            }
            if started == groups.len() {
                self.finish_steps(id, &tmpl, now_ms);
                return;
            }
            self.start_group(id, started, &groups[started], now_ms);
        }
    }

    /// Advance the steps of group `gid`; once all have ended, finish the
    /// group and return its phase (`None` while steps still run).
    fn conclude_group(
        &mut self,
        gid: &str,
        steps: &[WorkflowStep],
        now_ms: u64,
    ) -> Option<NodePhase> {
        let children = self.nodes[gid].children.clone();
        for c in &children {
            self.advance(c, now_ms);
        }
        // Exit handlers of the steps that ended; the group waits for them.
        if let Some((parent, i)) = group_of(gid) {
            for step in steps.iter().filter(|s| s.exit_hook().is_some()) {
                let scope = |r: &Run| r.steps_scope(&r.nodes[&parent], i + 1);
                self.run_exit_hook(gid, step, "steps", scope, now_ms);
            }
        }
        let children = &self.nodes[gid].children;
        if !children.iter().all(|c| self.nodes[c].phase.is_fulfilled()) {
            return None;
        }
        let g = &self.nodes[gid];
        let failed = steps.iter().find_map(|step| {
            let n = self.nodes.get(g.task_nodes.get(&step.name)?)?;
            let covered = match n.phase {
                NodePhase::Failed => step.continues_on_failed(),
                NodePhase::Error => step.continues_on_error(),
                _ => true,
            };
            (!covered).then(|| (n.id.clone(), n.phase))
        });
        let (phase, msg) = match failed {
            Some((child, phase)) => (phase, Some(format!("child {child:?} failed"))),
            None => (NodePhase::Succeeded, None),
        };
        self.finish_node(gid, phase, msg, now_ms);
        Some(phase)
    }

    /// Create group `i` (`ID[i]`) of steps node `id` and start its steps,
    /// each with the outputs of the earlier groups in reach.
    fn start_group(&mut self, id: &str, i: usize, steps: &[WorkflowStep], now_ms: u64) {
        let parent = &self.nodes[id];
        let scope = self.steps_scope(parent, i);
        let (depth, exit_handler) = (parent.depth, parent.exit_handler);
        let gid = format!("{id}[{i}]");
        let mut g = Node::new(
            &gid,
            &format!("[{i}]"),
            NodeType::StepGroup,
            NodePhase::Running,
        );
        g.started_ms = Some(now_ms);
        g.depth = depth;
        g.exit_handler = exit_handler;
        self.insert_node(g);
        // Through node_mut: the steps node changed, and a shell that stores
        // each node must write it again.
        self.node_mut(id)
            .expect("steps node")
            .children
            .push(gid.clone());
        for step in steps {
            let step_id = format!("{gid}.{}", step.name);
            self.start_task(&gid, &step_id, step, &scope, depth, exit_handler, now_ms);
        }
    }

    /// Every group succeeded: the template's outputs, from its steps.
    fn finish_steps(&mut self, id: &str, tmpl: &Template, now_ms: u64) {
        let groups = self.nodes[id].children.len();
        let scope = self.steps_scope(&self.nodes[id], groups);
        let (outputs, problem) = self.composite_outputs(tmpl, &scope);
        let phase = if problem.is_some() {
            NodePhase::Error
        } else {
            NodePhase::Succeeded
        };
        self.node_mut(id).expect("steps node").outputs = outputs;
        self.finish_node(id, phase, problem, now_ms);
    }
}

/// The steps node and index of step group `gid` (`ID[i]`).
fn group_of(gid: &str) -> Option<(String, usize)> {
    let (parent, rest) = gid.rsplit_once('[')?;
    let i = rest.strip_suffix(']')?.parse().ok()?;
    Some((parent.to_string(), i))
}
