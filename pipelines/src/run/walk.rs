//! Reconciling: moving every node of the run forward as far as it can go
//! without the shell, deciding the run's phase, starting the `onExit`
//! handler, and creating the nodes that run a template.

use super::artifact_sources::{raw_input, with_inputs};
use super::node::{Node, NodeInputs, NodePhase, NodeType, WorkflowPhase};
use super::state::{GroupProgress, Run};
use crate::spec::Template;
use crate::validate::MAX_DAG_DEPTH;
use crate::vars::Scope;

impl Run {
    /// Move everything forward as far as it can go without the shell.
    pub(super) fn reconcile(&mut self, now_ms: u64) {
        if self.phase.is_terminal() {
            return;
        }
        let root = self.root.clone();
        self.advance(&root, now_ms);
        let main = match self.nodes.get(&root) {
            Some(n) if n.phase.is_fulfilled() => n.phase,
            _ => return,
        };
        if self.exit_node.is_none() && !self.terminated {
            if let Some(exit) = self.workflow.spec.on_exit.clone() {
                self.exit_status = Some(main.to_string());
                let id = format!("{}.onExit", self.name);
                self.exit_node = Some(id.clone());
                self.start_top_level(&id, &exit, true, now_ms);
            }
        }
        let exit_phase = match self.exit_node.clone() {
            Some(e) => {
                self.advance(&e, now_ms);
                match self.nodes.get(&e) {
                    Some(n) if !n.phase.is_fulfilled() => return,
                    Some(n) => Some(n.phase),
                    None => None,
                }
            }
            None => None,
        };
        let root_node = &self.nodes[&root];
        self.phase = match main {
            NodePhase::Succeeded | NodePhase::Skipped | NodePhase::Omitted => match exit_phase {
                Some(p) if p.failed_or_error() => WorkflowPhase::Failed,
                _ => WorkflowPhase::Succeeded,
            },
            NodePhase::Error => WorkflowPhase::Error,
            _ => WorkflowPhase::Failed,
        };
        if self.message.is_none() {
            self.message = match (self.phase, exit_phase) {
                (WorkflowPhase::Succeeded, _) => None,
                (_, Some(p)) if p.failed_or_error() && !main.failed_or_error() => {
                    Some("the onExit handler failed".into())
                }
                _ => root_node.message.clone(),
            };
        }
        self.finished_ms = Some(now_ms);
    }

    /// Advance node `id` and what is under it, by its type.
    pub(super) fn advance(&mut self, id: &str, now_ms: u64) {
        let Some(n) = self.nodes.get(id) else { return };
        if n.phase.is_fulfilled() {
            return;
        }
        match n.node_type {
            NodeType::Dag => self.advance_dag(id, now_ms),
            NodeType::TaskGroup => self.advance_group(id, now_ms),
            NodeType::Retry => self.advance_retry(id, now_ms),
            NodeType::Steps => self.advance_steps(id, now_ms),
            // A steps node advances its groups itself.
            NodeType::StepGroup | NodeType::Pod | NodeType::Skipped | NodeType::Suspend => {}
        }
    }

    /// Advance a fan-out's `TaskGroup`: its children that have nodes under
    /// them, then, once every child is done, the group. Children finish
    /// for good, so the walk resumes after those known done (the run's
    /// [`GroupProgress`](super::state::GroupProgress)); a group of steps
    /// alone (no retries, no DAGs under it) stops at its first child still
    /// to finish. A step's end thus costs about one look, not a look at
    /// each of thousands of items.
    fn advance_group(&mut self, id: &str, now_ms: u64) {
        let len = self.nodes[id].children.len();
        let p = match self.groups.0.get(id) {
            Some(p) => *p,
            None => {
                let kids = &self.nodes[id].children;
                let leaves = kids
                    .iter()
                    .all(|c| matches!(self.nodes[c].node_type, NodeType::Pod | NodeType::Skipped));
                GroupProgress {
                    done: 0,
                    failed: None,
                    leaves,
                }
            }
        };
        let (mut done, mut prefix_failed) = (p.done, p.failed);
        let (mut all_done, mut failed) = (true, p.failed);
        for k in p.done..len {
            let c = &self.nodes[id].children[k];
            let mut child = &self.nodes[c];
            if !child.phase.is_fulfilled()
                && !matches!(child.node_type, NodeType::Pod | NodeType::Skipped)
            {
                let c = c.clone();
                self.advance(&c, now_ms);
                child = &self.nodes[&c];
            }
            let phase = child.phase;
            if phase.failed_or_error() {
                failed = Some(phase);
            }
            if !phase.is_fulfilled() {
                all_done = false;
                if p.leaves {
                    break;
                }
            } else if all_done {
                done = k + 1;
                if phase.failed_or_error() {
                    prefix_failed = Some(phase);
                }
            }
        }
        self.groups.0.insert(
            id.to_string(),
            GroupProgress {
                done,
                failed: prefix_failed,
                leaves: p.leaves,
            },
        );
        if all_done {
            let msg = failed.map(|_| "one or more items failed".to_string());
            self.finish_node(id, failed.unwrap_or(NodePhase::Succeeded), msg, now_ms);
        }
    }

    /// Inputs of the entrypoint or exit handler, from workflow parameters.
    pub(super) fn start_top_level(
        &mut self,
        id: &str,
        template: &str,
        exit_handler: bool,
        now_ms: u64,
    ) {
        let Some(t) = self.template(template).cloned() else {
            return;
        };
        let mut inputs = NodeInputs::default();
        let mut problem = None;
        for p in t.input_parameters() {
            let v = self
                .parameters
                .get(&p.name)
                .cloned()
                .or_else(|| p.value.as_ref().map(|v| v.0.clone()))
                .or_else(|| p.default.as_ref().map(|v| v.0.clone()));
            match v {
                Some(v) => {
                    inputs.parameters.insert(p.name.clone(), v);
                }
                None => {
                    problem = Some(format!(
                        "input parameter {:?} of {template:?} was not supplied (add it to spec.arguments.parameters)",
                        p.name
                    ))
                }
            }
        }
        // A top-level template's artifacts can only be its own `raw` ones.
        let vars: Scope = self
            .parameters
            .iter()
            .map(|(k, v)| (format!("workflow.parameters.{k}"), v.clone()))
            .collect();
        let vars = with_inputs(&vars, &inputs.parameters);
        for a in t.input_artifacts() {
            match raw_input(&self.name, id, &a.name, a.path.as_ref(), a, &vars) {
                Some(Ok(r)) => {
                    inputs.artifacts.insert(a.name.clone(), r);
                }
                Some(Err(e)) => problem = Some(e),
                None if a.optional == Some(true) => {}
                None => {
                    problem = Some(format!(
                        "input artifact {:?} of {template:?} cannot be supplied to a top-level template",
                        a.name
                    ))
                }
            }
        }
        if let Some(msg) = problem {
            let mut n = Node::new(id, id, NodeType::Skipped, NodePhase::Error);
            n.template = Some(template.to_string());
            n.message = Some(msg);
            n.started_ms = Some(now_ms);
            n.finished_ms = Some(now_ms);
            n.exit_handler = exit_handler;
            self.insert_node(n);
            return;
        }
        self.instantiate(id, id, &t, inputs, 0, exit_handler, now_ms);
    }

    /// Create the node(s) that run template `t` with `inputs`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn instantiate(
        &mut self,
        id: &str,
        display: &str,
        t: &Template,
        inputs: NodeInputs,
        depth: usize,
        exit_handler: bool,
        now_ms: u64,
    ) {
        let deadline = t
            .active_deadline_seconds
            .as_ref()
            .and_then(|d| d.as_int())
            .map(|s| s as u64 * 1000);
        if t.suspend.is_some() {
            self.instantiate_suspend(id, display, t, inputs, depth, exit_handler, now_ms);
            return;
        }
        if t.is_composite() {
            let ty = if t.dag.is_some() {
                NodeType::Dag
            } else {
                NodeType::Steps
            };
            let mut n = Node::new(id, display, ty, NodePhase::Running);
            if depth > MAX_DAG_DEPTH {
                n.phase = NodePhase::Error;
                n.message = Some(format!(
                    "DAG and steps templates nested more than {MAX_DAG_DEPTH} deep; does a recursion miss its base case?"
                ));
                n.finished_ms = Some(now_ms);
            }
            n.template = Some(t.name.clone());
            n.inputs = inputs;
            n.started_ms = Some(now_ms);
            n.deadline_ms = deadline.map(|d| now_ms + d);
            n.depth = depth;
            n.exit_handler = exit_handler;
            self.insert_node(n);
            self.advance(id, now_ms);
            return;
        }
        let mut pod_id = id.to_string();
        if t.retry_strategy.is_some() {
            let mut r = Node::new(id, display, NodeType::Retry, NodePhase::Running);
            r.template = Some(t.name.clone());
            r.inputs = inputs.clone();
            r.started_ms = Some(now_ms);
            r.depth = depth;
            r.exit_handler = exit_handler;
            pod_id = format!("{id}(0)");
            r.children.push(pod_id.clone());
            self.insert_node(r);
        }
        let display = if pod_id == id {
            display.to_string()
        } else {
            format!("{display}(0)")
        };
        let mut p = Node::new(&pod_id, &display, NodeType::Pod, NodePhase::Pending);
        p.template = Some(t.name.clone());
        p.inputs = inputs;
        p.depth = depth;
        p.exit_handler = exit_handler;
        self.insert_node(p);
    }
}
