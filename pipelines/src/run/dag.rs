//! A `DAG` node: start each task whose dependencies have finished (or mark
//! it Omitted when its `depends` can no longer hold), honour failFast, and
//! once every started task is done, decide the DAG's phase and outputs.

use super::artifact_sources::artifact_from_expression;
use super::graph::DagInfo;
use super::node::{Node, NodeOutputs, NodePhase, NodeType};
use super::scope::TaskScope;
use super::state::Run;
use crate::expr::{eval_expr, to_text, TaskResults};
use crate::spec::{DagTask, Template};
use crate::vars::{sole_var, substitute};

impl Run {
    /// Advance DAG node `id`: its tasks, then its own phase.
    pub(super) fn advance_dag(&mut self, id: &str, now_ms: u64) {
        let dag_node = &self.nodes[id];
        let Some(tname) = dag_node.template.clone() else {
            return;
        };
        let Some(info) = self.dags.get(&tname).cloned() else {
            return;
        };
        let workflow = self.workflow.clone();
        let Some((_, tmpl)) = workflow.template(&tname) else {
            return;
        };
        let tasks = tmpl.dag.as_ref().map_or(&[][..], |d| &d.tasks[..]);
        self.start_ready_tasks(id, &info, tasks, now_ms);
        self.assess_dag(id, &info, tmpl, tasks, now_ms);
    }

    /// Advance the tasks already started, and start (or omit) each task in
    /// reach of `target` whose dependencies have all finished, unless
    /// failFast has stopped the DAG.
    fn start_ready_tasks(&mut self, id: &str, info: &DagInfo, tasks: &[DagTask], now_ms: u64) {
        for &j in &info.order {
            if !info.active[j] {
                continue;
            }
            let task = &tasks[j];
            let dag_node = &self.nodes[id];
            if let Some(child) = dag_node.task_nodes.get(&task.name).cloned() {
                self.advance(&child, now_ms);
                // A fan-out's items each have a handler, started as each
                // item ends.
                let c = &self.nodes[&child];
                let started = c.phase.is_fulfilled() || c.node_type == NodeType::TaskGroup;
                if started && task.exit_hook().is_some() {
                    let mut which = info.ancestors[j].clone();
                    which.push(j);
                    let scope = |r: &Run| r.dag_scope(&r.nodes[id], tasks, &which);
                    self.run_exit_hook(id, task, "tasks", scope, now_ms);
                }
                continue;
            }
            if self.fail_fast_tripped(dag_node, info, tasks) {
                continue;
            }
            // A dependency is done once its exit handler, if any, is too.
            let ready = info.deps[j].iter().all(|&k| self.task_done(id, &tasks[k]));
            if !ready {
                continue;
            }
            let task_id = format!("{id}.{}", task.name);
            if let Some(expr) = &info.depends[j] {
                let lookup = |name: &str| {
                    tasks
                        .iter()
                        .find(|t| t.name == name)
                        .map(|t| self.task_results(dag_node, t))
                        .unwrap_or_default()
                };
                if !expr.eval(&lookup) {
                    let mut n =
                        Node::new(&task_id, &task.name, NodeType::Skipped, NodePhase::Omitted);
                    n.template = task.template.clone();
                    n.message = Some(format!("omitted: depends condition not met ({expr})"));
                    n.started_ms = Some(now_ms);
                    n.finished_ms = Some(now_ms);
                    self.add_task_node(id, &task.name, n);
                    continue;
                }
            }
            let scope = self.dag_scope(dag_node, tasks, &info.ancestors[j]);
            let (depth, exit_handler) = (dag_node.depth, dag_node.exit_handler);
            self.start_task(id, &task_id, task, &scope, depth, exit_handler, now_ms);
        }
    }

    /// Once every started task has finished and every target has been
    /// reached (or failFast stopped the DAG), finish the DAG node with its
    /// phase, message and outputs.
    fn assess_dag(
        &mut self,
        id: &str,
        info: &DagInfo,
        tmpl: &Template,
        tasks: &[DagTask],
        now_ms: u64,
    ) {
        let dag_node = &self.nodes[id];
        let all_done = dag_node
            .task_nodes
            .values()
            .all(|c| self.nodes[c].phase.is_fulfilled());
        if !all_done {
            return;
        }
        let stopped = self.fail_fast_tripped(dag_node, info, tasks);
        if stopped {
            self.omit_unstarted(id, info, tasks, now_ms);
        }
        let dag_node = &self.nodes[id];
        let branch = self.branch_phases(dag_node, info, tasks);
        let mut result = NodePhase::Succeeded;
        let mut message = None;
        for &t in &info.targets {
            match branch[t] {
                None => {
                    if !stopped {
                        return; // still to be started
                    }
                }
                Some(p) if p.failed_or_error() => {
                    let task = &tasks[t];
                    let covered = (p == NodePhase::Failed && task.continues_on_failed())
                        || (p == NodePhase::Error && task.continues_on_error());
                    if !covered && !result.failed_or_error() {
                        result = p;
                        message = Some(format!(
                            "task {:?} {}",
                            task.name,
                            p.to_string().to_lowercase()
                        ));
                    }
                }
                Some(_) => {}
            }
        }
        if stopped && !result.failed_or_error() {
            result = NodePhase::Failed;
        }
        if stopped {
            let failed: Vec<&str> = tasks
                .iter()
                .filter(|t| {
                    dag_node
                        .task_nodes
                        .get(&t.name)
                        .is_some_and(|c| self.nodes[c].phase.failed_or_error())
                })
                .map(|t| t.name.as_str())
                .collect();
            message = Some(format!(
                "failFast: stopped after {} failed",
                failed.join(", ")
            ));
        }
        if result == NodePhase::Succeeded {
            let (outputs, problem) = self.dag_outputs(dag_node, tmpl, tasks);
            if let Some(problem) = problem {
                result = NodePhase::Error;
                message = Some(problem);
            }
            self.node_mut(id).expect("dag node").outputs = outputs;
        }
        self.finish_node(id, result, message, now_ms);
    }

    /// failFast stopped the DAG: record each task in reach that never
    /// started as Omitted, as Argo shows them.
    fn omit_unstarted(&mut self, id: &str, info: &DagInfo, tasks: &[DagTask], now_ms: u64) {
        for &j in &info.order {
            let task = &tasks[j];
            if !info.active[j] || self.nodes[id].task_nodes.contains_key(&task.name) {
                continue;
            }
            let mut n = Node::new(
                &format!("{id}.{}", task.name),
                &task.name,
                NodeType::Skipped,
                NodePhase::Omitted,
            );
            n.template = task.template.clone();
            n.message = Some("omitted: failFast stopped the DAG after a task failed".into());
            n.started_ms = Some(now_ms);
            n.finished_ms = Some(now_ms);
            n.exit_handler = self.nodes[id].exit_handler;
            self.add_task_node(id, &task.name, n);
        }
    }

    /// Each task's branch phase, by task index: a completed node's own
    /// phase; a skipped or omitted node inherits its parents' (failures
    /// win); `None` for a task not started.
    fn branch_phases(
        &self,
        dag_node: &Node,
        info: &DagInfo,
        tasks: &[DagTask],
    ) -> Vec<Option<NodePhase>> {
        let mut branch: Vec<Option<NodePhase>> = vec![None; tasks.len()];
        for &j in &info.order {
            let Some(n) = dag_node
                .task_nodes
                .get(&tasks[j].name)
                .map(|c| &self.nodes[c])
            else {
                continue;
            };
            branch[j] = Some(if n.phase.completed() {
                n.phase
            } else {
                let mut b = NodePhase::Succeeded;
                for &k in &info.deps[j] {
                    match branch[k] {
                        Some(NodePhase::Error) => b = NodePhase::Error,
                        Some(NodePhase::Failed) if b != NodePhase::Error => b = NodePhase::Failed,
                        _ => {}
                    }
                }
                b
            });
        }
        branch
    }

    /// A succeeded DAG's outputs, which come from its tasks. The second
    /// value is why the DAG is an Error instead (the last output that could
    /// not be resolved), if any.
    fn dag_outputs(
        &self,
        dag_node: &Node,
        tmpl: &Template,
        tasks: &[DagTask],
    ) -> (NodeOutputs, Option<String>) {
        let all: Vec<usize> = (0..tasks.len()).collect();
        let scope = self.dag_scope(dag_node, tasks, &all);
        self.composite_outputs(tmpl, &scope)
    }

    /// The outputs of a succeeded DAG or steps template, from `scope` (its
    /// children's outputs); the second value is why the node is an Error
    /// instead (the last output that could not be resolved), if any.
    pub(super) fn composite_outputs(
        &self,
        tmpl: &Template,
        scope: &TaskScope,
    ) -> (NodeOutputs, Option<String>) {
        let mut outputs = NodeOutputs::default();
        let mut problem = None;
        for p in tmpl.output_parameters() {
            if let Some(e) = p.value_from.as_ref().and_then(|v| v.expression.as_deref()) {
                match eval_expr(e, &scope.vars) {
                    Ok(v) => {
                        outputs.parameters.insert(p.name.clone(), to_text(&v));
                    }
                    Err(e) => problem = Some(format!("output parameter {:?}: {e}", p.name)),
                }
                continue;
            }
            let src = p
                .value_from
                .as_ref()
                .and_then(|v| v.parameter.clone())
                .or_else(|| p.value.as_ref().map(|v| v.0.clone()))
                .unwrap_or_default();
            match substitute(&src, &scope.vars) {
                Ok(v) => {
                    outputs.parameters.insert(p.name.clone(), v);
                }
                Err(e) => match p.value_from.as_ref().and_then(|v| v.default.as_ref()) {
                    Some(d) => {
                        outputs.parameters.insert(p.name.clone(), d.0.clone());
                    }
                    None => {
                        problem = Some(format!("output parameter {:?}: {e}", p.name));
                    }
                },
            }
        }
        for a in tmpl.output_artifacts() {
            let key = match &a.from_expression {
                Some(e) => match artifact_from_expression(e, &scope.vars, &scope.artifacts) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        problem = Some(format!("output artifact {:?}: {e}", a.name));
                        continue;
                    }
                },
                None => a
                    .from
                    .as_deref()
                    .and_then(sole_var)
                    .and_then(|v| scope.artifacts.get(v))
                    .cloned(),
            };
            match key {
                Some(k) => {
                    outputs.artifacts.insert(a.name.clone(), k);
                }
                None if a.optional == Some(true) => {}
                None => {
                    problem = Some(format!(
                        "output artifact {:?}: unable to resolve {}",
                        a.name,
                        a.from.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        (outputs, problem)
    }

    /// Whether the DAG has stopped starting new tasks (failFast).
    fn fail_fast_tripped(&self, dag: &Node, info: &DagInfo, tasks: &[DagTask]) -> bool {
        if !info.fail_fast {
            return false;
        }
        tasks.iter().enumerate().any(|(j, task)| {
            dag.task_nodes
                .get(&task.name)
                .and_then(|id| self.nodes.get(id))
                .is_some_and(|n| {
                    let covered = match n.phase {
                        NodePhase::Failed => task.continues_on_failed(),
                        NodePhase::Error => task.continues_on_error(),
                        _ => true,
                    };
                    !covered && !info.handled[j]
                })
        })
    }

    /// How `task` of DAG node `dag` ended, as `depends` reads it.
    fn task_results(&self, dag: &Node, task: &DagTask) -> TaskResults {
        let Some(n) = dag
            .task_nodes
            .get(&task.name)
            .and_then(|id| self.nodes.get(id))
        else {
            return TaskResults::default();
        };
        let mut r = TaskResults {
            succeeded: n.phase == NodePhase::Succeeded,
            failed: n.phase == NodePhase::Failed,
            errored: n.phase == NodePhase::Error,
            skipped: n.phase == NodePhase::Skipped,
            omitted: n.phase == NodePhase::Omitted,
            continue_on_failed: task.continues_on_failed(),
            continue_on_error: task.continues_on_error(),
            ..Default::default()
        };
        if n.node_type == NodeType::TaskGroup {
            let kids: Vec<NodePhase> = n.children.iter().map(|c| self.nodes[c].phase).collect();
            r.any_succeeded = kids.contains(&NodePhase::Succeeded);
            r.all_failed = !kids.is_empty() && kids.iter().all(|p| *p == NodePhase::Failed);
        }
        r
    }

    /// Add `n` as the node of `task` under DAG node `dag_id`.
    pub(super) fn add_task_node(&mut self, dag_id: &str, task: &str, n: Node) {
        let nid = n.id.clone();
        self.insert_node(n);
        let d = self.node_mut(dag_id).expect("dag node");
        d.task_nodes.insert(task.to_string(), nid.clone());
        d.children.push(nid);
    }
}
