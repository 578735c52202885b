//! The [`Run`] record itself: its fields, the two forms a shell stores it
//! in, starting a run from a workflow and its arguments, read access, and
//! the bookkeeping every other part uses to add and finish nodes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::graph::DagInfo;
use super::node::{Node, NodePhase, NodeType, WorkflowPhase};
use super::step::RunError;
use crate::spec::{Template, Workflow};
use crate::validate::validate_all;
use crate::vars::Scope;

/// One workflow run. Serialize it to persist; deserialize to resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub(super) name: String,
    pub(super) workflow: Workflow,
    /// `workflow.parameters.*` after arguments were applied.
    pub(super) parameters: BTreeMap<String, String>,
    pub(super) dags: BTreeMap<String, DagInfo>,
    pub(super) nodes: BTreeMap<String, Node>,
    pub(super) root: String,
    pub(super) exit_node: Option<String>,
    pub(super) phase: WorkflowPhase,
    pub(super) started_ms: u64,
    pub(super) finished_ms: Option<u64>,
    pub(super) message: Option<String>,
    pub(super) deadline_ms: Option<u64>,
    /// `{{workflow.status}}` for the exit handler: the main DAG's phase.
    pub(super) exit_status: Option<String>,
    /// Terminated by the user: no exit handler.
    pub(super) terminated: bool,
    /// Launched steps the shell should stop.
    pub(super) to_cancel: Vec<String>,
    /// Next node's `seq`.
    pub(super) next_seq: u64,
    /// Something in the workflow reads an `outputs.result`: container
    /// steps keep their standard output too.
    #[serde(default)]
    pub(super) reads_results: bool,
}

/// A run without its nodes, borrowed, for storing: a shell that keeps a
/// big run as one record plus one per node rewrites only the nodes that
/// changed (see [`Run::without_nodes`] and [`RunHeader::into_run`]).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunWithoutNodes<'a> {
    name: &'a String,
    workflow: &'a Workflow,
    parameters: &'a BTreeMap<String, String>,
    dags: &'a BTreeMap<String, DagInfo>,
    root: &'a String,
    exit_node: &'a Option<String>,
    phase: WorkflowPhase,
    started_ms: u64,
    finished_ms: Option<u64>,
    message: &'a Option<String>,
    deadline_ms: Option<u64>,
    exit_status: &'a Option<String>,
    terminated: bool,
    to_cancel: &'a Vec<String>,
    next_seq: u64,
    reads_results: bool,
}

/// What [`RunWithoutNodes`] stored; with the nodes, a [`Run`] again.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunHeader {
    name: String,
    workflow: Workflow,
    parameters: BTreeMap<String, String>,
    dags: BTreeMap<String, DagInfo>,
    root: String,
    exit_node: Option<String>,
    phase: WorkflowPhase,
    started_ms: u64,
    finished_ms: Option<u64>,
    message: Option<String>,
    deadline_ms: Option<u64>,
    exit_status: Option<String>,
    terminated: bool,
    to_cancel: Vec<String>,
    next_seq: u64,
    #[serde(default)]
    reads_results: bool,
}

impl RunHeader {
    /// The run again, from its header and every node.
    pub fn into_run(self, nodes: impl IntoIterator<Item = Node>) -> Run {
        Run {
            name: self.name,
            workflow: self.workflow,
            parameters: self.parameters,
            dags: self.dags,
            nodes: nodes.into_iter().map(|n| (n.id.clone(), n)).collect(),
            root: self.root,
            exit_node: self.exit_node,
            phase: self.phase,
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            message: self.message,
            deadline_ms: self.deadline_ms,
            exit_status: self.exit_status,
            terminated: self.terminated,
            to_cancel: self.to_cancel,
            next_seq: self.next_seq,
            reads_results: self.reads_results,
        }
    }
}

impl Run {
    /// Start a run of `workflow` named `name` (see [`Workflow::run_name`])
    /// with `arguments` overriding `spec.arguments.parameters`.
    pub fn new(
        workflow: &Workflow,
        name: &str,
        arguments: &BTreeMap<String, String>,
        now_ms: u64,
    ) -> Result<Run, RunError> {
        if let Some(e) = validate_all(workflow).into_iter().next() {
            return Err(RunError::Invalid(e));
        }
        let parameters = resolve_arguments(workflow, arguments)?;
        let workflow_vars: Scope = parameters
            .iter()
            .map(|(k, v)| (format!("workflow.parameters.{k}"), v.clone()))
            .collect();
        let dags = workflow
            .spec
            .templates
            .iter()
            .filter(|t| t.dag.is_some())
            .map(|t| (t.name.clone(), DagInfo::build(t, &workflow_vars)))
            .collect();
        let deadline_ms = workflow
            .spec
            .active_deadline_seconds
            .as_ref()
            .and_then(|d| d.as_int())
            .map(|s| now_ms + s as u64 * 1000);
        let mut run = Run {
            name: name.to_string(),
            workflow: workflow.clone(),
            parameters,
            dags,
            nodes: BTreeMap::new(),
            root: name.to_string(),
            exit_node: None,
            phase: WorkflowPhase::Running,
            started_ms: now_ms,
            finished_ms: None,
            message: None,
            deadline_ms,
            exit_status: None,
            terminated: false,
            to_cancel: Vec::new(),
            next_seq: 0,
            reads_results: serde_json::to_string(workflow)
                .is_ok_and(|s| s.contains("outputs.result")),
        };
        let entry = workflow.spec.entrypoint.clone().unwrap_or_default();
        let root = run.name.clone();
        run.start_top_level(&root, &entry, false, now_ms);
        run.reconcile(now_ms);
        Ok(run)
    }

    /// Everything but the nodes, to store with each node on its own.
    pub fn without_nodes(&self) -> RunWithoutNodes<'_> {
        RunWithoutNodes {
            name: &self.name,
            workflow: &self.workflow,
            parameters: &self.parameters,
            dags: &self.dags,
            root: &self.root,
            exit_node: &self.exit_node,
            phase: self.phase,
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            message: &self.message,
            deadline_ms: self.deadline_ms,
            exit_status: &self.exit_status,
            terminated: self.terminated,
            to_cancel: &self.to_cancel,
            next_seq: self.next_seq,
            reads_results: self.reads_results,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn phase(&self) -> WorkflowPhase {
        self.phase
    }

    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    pub fn workflow(&self) -> &Workflow {
        &self.workflow
    }

    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// When a finished run is due for deletion under its `ttlStrategy`
    /// (ms since the epoch); `None` while it runs or without a TTL.
    pub fn delete_at_ms(&self) -> Option<u64> {
        let ttl = self.workflow.spec.ttl_strategy?;
        let finished = self.finished_ms?;
        let secs = match self.phase {
            WorkflowPhase::Running => return None,
            WorkflowPhase::Succeeded => ttl.seconds_after_success,
            WorkflowPhase::Failed | WorkflowPhase::Error => ttl.seconds_after_failure,
        }
        .or(ttl.seconds_after_completion)?;
        Some(finished.saturating_add(secs.saturating_mul(1000)))
    }

    pub fn finished_ms(&self) -> Option<u64> {
        self.finished_ms
    }

    /// Every node by id.
    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// The node of a task of the top-level DAG (or of a step of the
    /// top-level steps template), by name.
    pub fn task_node(&self, task: &str) -> Option<&Node> {
        let root = self.nodes.get(&self.root)?;
        if let Some(id) = root.task_nodes.get(task) {
            return self.nodes.get(id);
        }
        root.children
            .iter()
            .filter_map(|g| self.nodes.get(g))
            .filter(|g| g.node_type == NodeType::StepGroup)
            .find_map(|g| self.nodes.get(g.task_nodes.get(task)?))
    }

    /// Steps launched and not yet reported finished (for a new leader to
    /// match against the jobs that exist).
    pub fn running_steps(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.node_type == NodeType::Pod && n.phase == NodePhase::Running)
            .map(|n| n.id.clone())
            .collect()
    }
}

/// Node bookkeeping the other parts share.
impl Run {
    pub(super) fn template(&self, name: &str) -> Option<&Template> {
        self.workflow.template(name).map(|(_, t)| t)
    }

    /// Add `n`, numbered so that steps launch in the order they were created.
    pub(super) fn insert_node(&mut self, mut n: Node) {
        n.seq = self.next_seq;
        self.next_seq += 1;
        self.nodes.insert(n.id.clone(), n);
    }

    /// End node `id` in `phase`; `message` replaces the node's only when given.
    pub(super) fn finish_node(
        &mut self,
        id: &str,
        phase: NodePhase,
        message: Option<String>,
        now_ms: u64,
    ) {
        if let Some(n) = self.nodes.get_mut(id) {
            n.phase = phase;
            if message.is_some() {
                n.message = message;
            }
            n.finished_ms = Some(now_ms);
            if n.started_ms.is_none() {
                n.started_ms = Some(now_ms);
            }
            n.not_before_ms = None;
        }
    }

    /// Fail every unfinished node under `id` (deadline, termination).
    pub(super) fn fail_subtree(&mut self, id: &str, reason: &str, now_ms: u64) {
        let Some(n) = self.nodes.get(id) else { return };
        if n.phase.is_fulfilled() {
            return;
        }
        let children = n.children.clone();
        if n.node_type == NodeType::Pod && n.phase == NodePhase::Running {
            self.to_cancel.push(id.to_string());
        }
        for c in children {
            self.fail_subtree(&c, reason, now_ms);
        }
        self.finish_node(id, NodePhase::Failed, Some(reason.to_string()), now_ms);
    }
}

/// `workflow.parameters.*`: each declared parameter's argument, else its
/// `value`, else its `default`. An argument the workflow does not declare,
/// or one outside its `enum`, is refused.
fn resolve_arguments(
    workflow: &Workflow,
    arguments: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, RunError> {
    let declared = workflow
        .spec
        .arguments
        .as_ref()
        .map_or(&[][..], |a| &a.parameters[..]);
    let mut parameters = BTreeMap::new();
    for (k, v) in arguments {
        let Some(p) = declared.iter().find(|p| &p.name == k) else {
            return Err(RunError::Argument {
                name: k.clone(),
                reason: format!(
                    "not a parameter of this workflow (declared: {})",
                    declared
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        if let Some(allowed) = &p.enum_values {
            if !allowed.iter().any(|a| &a.0 == v) {
                return Err(RunError::Argument {
                    name: k.clone(),
                    reason: format!("{v:?} is not one of the allowed values"),
                });
            }
        }
    }
    for p in declared {
        let v = arguments
            .get(&p.name)
            .cloned()
            .or_else(|| p.value.as_ref().map(|v| v.0.clone()))
            .or_else(|| p.default.as_ref().map(|v| v.0.clone()));
        match v {
            Some(v) => {
                parameters.insert(p.name.clone(), v);
            }
            None => {
                return Err(RunError::Argument {
                    name: p.name.clone(),
                    reason: "no value: pass one (e.g. -p name=value)".into(),
                })
            }
        }
    }
    Ok(parameters)
}
