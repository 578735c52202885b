//! The `{{...}}` variables and artifacts in reach of a node: the
//! workflow's, a leaf's inputs, in a DAG the inputs plus the outputs of the
//! tasks a task depends on, and in a steps template the outputs of the
//! steps of earlier groups (a fan-out's outputs as JSON lists).

use std::collections::BTreeMap;

use gpuctl_common::artifact::ArtifactKey;

use super::node::{Node, NodeType};
use super::state::Run;
use crate::spec::DagTask;
use crate::vars::Scope;

/// Variables and artifacts in reach of a DAG task.
#[derive(Default)]
pub(super) struct TaskScope {
    pub(super) vars: Scope,
    pub(super) artifacts: BTreeMap<String, ArtifactKey>,
}

impl Run {
    /// `workflow.*`; `workflow.status` is the main DAG's phase only in the
    /// exit handler.
    fn workflow_scope(&self, exit_handler: bool) -> Scope {
        let mut s = Scope::new();
        s.insert("workflow.name".into(), self.name.clone());
        s.insert("workflow.uid".into(), self.name.clone());
        s.insert("workflow.namespace".into(), "default".into());
        let status = if exit_handler {
            self.exit_status.clone().unwrap_or_else(|| "Running".into())
        } else {
            "Running".into()
        };
        s.insert("workflow.status".into(), status);
        // Seconds the main template ran (so far: 0 before it ends), and in
        // the exit handler the nodes that failed, as Argo gives them.
        let root = self.nodes.get(&self.root);
        let ran_ms = root
            .and_then(|r| r.finished_ms)
            .map_or(0, |f| f.saturating_sub(self.started_ms));
        s.insert(
            "workflow.duration".into(),
            format!("{:.3}", ran_ms as f64 / 1000.0),
        );
        let failures: Vec<serde_json::Value> = self
            .nodes
            .values()
            .filter(|n| exit_handler && !n.exit_handler && n.phase.failed_or_error())
            .filter(|n| n.node_type == NodeType::Pod)
            .map(|n| {
                serde_json::json!({
                    "displayName": n.display_name,
                    "message": n.message.clone().unwrap_or_default(),
                    "templateName": n.template.clone().unwrap_or_default(),
                    "phase": n.phase.to_string(),
                    "podName": n.id,
                })
            })
            .collect();
        s.insert(
            "workflow.failures".into(),
            serde_json::Value::Array(failures).to_string(),
        );
        for (k, v) in &self.parameters {
            s.insert(format!("workflow.parameters.{k}"), v.clone());
        }
        // The time a CronWorkflow scheduled this run for (RFC 3339).
        if let Some(t) = self
            .workflow
            .metadata
            .annotations
            .get(crate::cron::ANNOTATION_SCHEDULED_TIME)
        {
            s.insert("workflow.scheduledTime".into(), t.clone());
        }
        s
    }

    /// Variables in reach of a leaf's fields.
    pub(super) fn leaf_scope(&self, n: &Node) -> Scope {
        let mut s = self.workflow_scope(n.exit_handler);
        for (k, v) in &n.inputs.parameters {
            s.insert(format!("inputs.parameters.{k}"), v.clone());
        }
        for (k, a) in &n.inputs.artifacts {
            if let Some(p) = &a.path {
                s.insert(format!("inputs.artifacts.{k}.path"), p.clone());
            }
        }
        s.insert("pod.name".into(), n.id.clone());
        s.insert("retries".into(), n.retries.to_string());
        s
    }

    /// Variables a task of DAG node `dag` may use; `tasks` limits which
    /// tasks' outputs are included.
    pub(super) fn dag_scope(&self, dag: &Node, tasks: &[DagTask], which: &[usize]) -> TaskScope {
        let done: Vec<(&str, &Node)> = which
            .iter()
            .filter_map(|&j| {
                let name = tasks[j].name.as_str();
                let n = dag.task_nodes.get(name).and_then(|id| self.nodes.get(id))?;
                Some((name, n))
            })
            .collect();
        self.composite_scope(dag, "tasks", &done)
    }

    /// Variables a step of steps node `steps` may use: the outputs of the
    /// steps of every group before the last one started (`steps.NAME.*`).
    pub(super) fn steps_scope(&self, steps: &Node, groups_done: usize) -> TaskScope {
        let mut done: Vec<(&str, &Node)> = Vec::new();
        for g in steps.children.iter().take(groups_done) {
            let Some(g) = self.nodes.get(g) else { continue };
            for (name, id) in &g.task_nodes {
                if let Some(n) = self.nodes.get(id) {
                    done.push((name.as_str(), n));
                }
            }
        }
        self.composite_scope(steps, "steps", &done)
    }

    /// The scope inside a DAG or steps node `node`: the workflow's
    /// variables, the node's inputs, and each finished child in `done` as
    /// `PREFIX.NAME.*` (`tasks` or `steps`).
    fn composite_scope(&self, node: &Node, prefix: &str, done: &[(&str, &Node)]) -> TaskScope {
        let mut s = TaskScope {
            vars: self.workflow_scope(node.exit_handler),
            ..Default::default()
        };
        for (k, v) in &node.inputs.parameters {
            s.vars.insert(format!("inputs.parameters.{k}"), v.clone());
        }
        for (k, a) in &node.inputs.artifacts {
            s.artifacts
                .insert(format!("inputs.artifacts.{k}"), a.from.clone());
        }
        for (name, n) in done {
            let pre = format!("{prefix}.{name}");
            self.add_node_vars(&mut s, &pre, n);
        }
        s
    }

    /// Node `n` as `PRE.status`, `PRE.id`, `PRE.exitCode` and
    /// `PRE.outputs.*` (a fan-out's outputs as lists over its items).
    pub(super) fn add_node_vars(&self, s: &mut TaskScope, pre: &str, n: &Node) {
        s.vars.insert(format!("{pre}.status"), n.phase.to_string());
        s.vars.insert(format!("{pre}.id"), n.id.clone());
        if let Some(c) = n.exit_code {
            s.vars.insert(format!("{pre}.exitCode"), c.to_string());
        }
        if n.node_type == NodeType::TaskGroup {
            self.add_group_outputs(&mut s.vars, pre, n);
            return;
        }
        for (k, v) in &n.outputs.parameters {
            s.vars
                .insert(format!("{pre}.outputs.parameters.{k}"), v.clone());
        }
        s.vars.insert(
            format!("{pre}.outputs.parameters"),
            serde_json::to_string(&n.outputs.parameters).unwrap_or_default(),
        );
        if let Some(r) = &n.outputs.result {
            s.vars.insert(format!("{pre}.outputs.result"), r.clone());
        }
        for (k, a) in &n.outputs.artifacts {
            s.artifacts
                .insert(format!("{pre}.outputs.artifacts.{k}"), a.clone());
        }
    }

    /// A fan-out task's outputs as JSON lists over its instances, in
    /// instance order: `outputs.result` (each parsed as JSON when it is),
    /// `outputs.parameters` (one map per instance that has any) and
    /// `outputs.parameters.NAME`.
    fn add_group_outputs(&self, vars: &mut Scope, pre: &str, group: &Node) {
        let mut results = Vec::new();
        let mut params = Vec::new();
        let mut by_name: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        for c in &group.children {
            let o = &self.nodes[c].outputs;
            if let Some(r) = &o.result {
                results.push(
                    serde_json::from_str(r)
                        .unwrap_or_else(|_| serde_json::Value::String(r.clone())),
                );
            }
            if !o.parameters.is_empty() {
                params.push(serde_json::to_value(&o.parameters).unwrap_or_default());
                for (k, v) in &o.parameters {
                    by_name
                        .entry(k.clone())
                        .or_default()
                        .push(serde_json::Value::String(v.clone()));
                }
            }
        }
        vars.insert(
            format!("{pre}.outputs.result"),
            serde_json::Value::Array(results).to_string(),
        );
        vars.insert(
            format!("{pre}.outputs.parameters"),
            serde_json::Value::Array(params).to_string(),
        );
        for (k, vs) in by_name {
            vars.insert(
                format!("{pre}.outputs.parameters.{k}"),
                serde_json::Value::Array(vs).to_string(),
            );
        }
    }
}
