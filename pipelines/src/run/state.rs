//! The [`Run`] record itself: its fields, the two forms a shell stores it
//! in, starting a run from a workflow and its arguments, read access, and
//! the bookkeeping every other part uses to add and finish nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::graph::DagInfo;
use super::node::{Node, NodePhase, NodeType, WorkflowPhase};
use super::step::RunError;
use crate::spec::{hoist_inline, Template, Workflow};
use crate::validate::validate_all;
use crate::vars::Scope;

/// One workflow run. Serialize it to persist; deserialize to resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub(super) name: String,
    /// Shared, so that walking a DAG borrows its template instead of
    /// copying it (a fan-out's items included) on every step.
    #[serde(with = "shared")]
    pub(super) workflow: Arc<Workflow>,
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
    /// Suspended (`gpuctl suspend`, or `spec.suspend: true`): no step
    /// starts until a resume; running steps finish.
    #[serde(default)]
    pub(super) suspended: bool,
    /// Nodes added or changed since the shell last took them (see
    /// [`Run::take_touched`]); not stored, and no part of equality.
    #[serde(skip)]
    pub(super) touched: Touched,
    /// Per fan-out group, how far its children are known done; not
    /// stored (worked out again after a restore), no part of equality.
    #[serde(skip)]
    pub(super) groups: Groups,
    /// The steps waiting to launch and the timed nodes, so that a step's
    /// end does not look at every node; not stored, no part of equality.
    #[serde(skip)]
    pub(super) open: Open,
}

/// Nodes the clock-driven and launching parts look at, kept from the nodes
/// each change touches ([`Run::node_mut`]). `stale` lists the nodes changed
/// since the sets were last brought up to date; until `built`, the sets
/// are worked out from every node.
#[derive(Debug, Clone, Default)]
pub(super) struct Open {
    pub built: bool,
    pub stale: BTreeSet<String>,
    /// Pending steps, by (seq, id).
    pub pending: BTreeSet<(u64, String)>,
    /// Pending nodes with a `not_before_ms`, running nodes with a deadline.
    pub timed: BTreeSet<String>,
}

impl PartialEq for Open {
    fn eq(&self, _: &Open) -> bool {
        true
    }
}

/// How far a `TaskGroup`'s children are known done: the first `done` are
/// all finished (finished nodes stay finished), the last failure among
/// them, and whether every child is a step (nothing under the children to
/// advance).
#[derive(Debug, Clone, Copy)]
pub(super) struct GroupProgress {
    pub done: usize,
    pub failed: Option<NodePhase>,
    pub leaves: bool,
}

/// [`GroupProgress`] by group node id; two runs that differ only here are
/// equal.
#[derive(Debug, Clone, Default)]
pub(super) struct Groups(pub BTreeMap<String, GroupProgress>);

impl PartialEq for Groups {
    fn eq(&self, _: &Groups) -> bool {
        true
    }
}

/// The workflow stored as itself (serde's `Arc` support is a feature not
/// turned on here).
mod shared {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::spec::Workflow;

    pub fn serialize<S: Serializer>(w: &Arc<Workflow>, s: S) -> Result<S::Ok, S::Error> {
        Workflow::serialize(w, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Workflow>, D::Error> {
        Workflow::deserialize(d).map(Arc::new)
    }
}

/// Ids of nodes added or changed: what a shell that stores one record per
/// node must write again. Two runs that differ only here are equal.
#[derive(Debug, Clone, Default)]
pub(super) struct Touched(BTreeSet<String>);

impl PartialEq for Touched {
    fn eq(&self, _: &Touched) -> bool {
        true
    }
}

/// A run without its nodes, borrowed, for storing: a shell that keeps a
/// big run as one record plus one per node rewrites only the nodes that
/// changed (see [`Run::without_nodes`] and [`RunHeader::into_run`]).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunWithoutNodes<'a> {
    name: &'a String,
    /// Left out by [`Run::without_nodes_or_workflow`], for a shell that
    /// stores the workflow once in a record of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow: Option<&'a Workflow>,
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
    suspended: bool,
}

/// What [`RunWithoutNodes`] stored; with the nodes, a [`Run`] again.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunHeader {
    name: String,
    #[serde(default)]
    workflow: Option<Workflow>,
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
    #[serde(default)]
    suspended: bool,
}

impl RunHeader {
    /// The run again, from its header (stored with its workflow) and every
    /// node; `None` when the header was stored without the workflow.
    pub fn into_run(self, nodes: impl IntoIterator<Item = Node>) -> Option<Run> {
        let workflow = self.workflow.clone()?;
        Some(self.into_run_with(workflow, nodes))
    }

    /// [`RunHeader::into_run`] for a header stored without its workflow
    /// ([`Run::without_nodes_or_workflow`]): `workflow` is used unless the
    /// header has its own.
    pub fn into_run_with(self, workflow: Workflow, nodes: impl IntoIterator<Item = Node>) -> Run {
        Run {
            name: self.name,
            workflow: Arc::new(self.workflow.unwrap_or(workflow)),
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
            suspended: self.suspended,
            touched: Touched::default(),
            groups: Groups::default(),
            open: Open::default(),
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
        // Inline templates become templates of their own (`PARENT/TASK`).
        let (hoisted, _, _) = hoist_inline(workflow);
        let workflow = &hoisted;
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
            workflow: Arc::new(workflow.clone()),
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
            suspended: workflow.spec.suspend == Some(true),
            touched: Touched::default(),
            groups: Groups::default(),
            open: Open::default(),
        };
        let entry = workflow.spec.entrypoint.clone().unwrap_or_default();
        let root = run.name.clone();
        run.start_top_level(&root, &entry, false, now_ms);
        run.reconcile(now_ms);
        run.refresh_open();
        Ok(run)
    }

    /// Everything but the nodes, to store with each node on its own.
    pub fn without_nodes(&self) -> RunWithoutNodes<'_> {
        RunWithoutNodes {
            workflow: Some(&self.workflow),
            ..self.without_nodes_or_workflow()
        }
    }

    /// Everything but the nodes and the workflow (which never changes
    /// during a run: a shell that stores it once, on its own, rewrites only
    /// this small header as the run moves; see [`RunHeader::into_run_with`]).
    pub fn without_nodes_or_workflow(&self) -> RunWithoutNodes<'_> {
        RunWithoutNodes {
            name: &self.name,
            workflow: None,
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
            suspended: self.suspended,
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
        self.touched.0.insert(n.id.clone());
        self.open.stale.insert(n.id.clone());
        self.nodes.insert(n.id.clone(), n);
    }

    /// Node `id` to change, noted as touched. Every change to a node goes
    /// through here or [`Run::insert_node`].
    pub(super) fn node_mut(&mut self, id: &str) -> Option<&mut Node> {
        let n = self.nodes.get_mut(id)?;
        if !self.touched.0.contains(id) {
            self.touched.0.insert(id.to_string());
        }
        if !self.open.stale.contains(id) {
            self.open.stale.insert(id.to_string());
        }
        Some(n)
    }

    /// Bring [`Open`] up to date with the nodes changed since the last call.
    pub(super) fn refresh_open(&mut self) {
        let ids: Vec<String> = if self.open.built {
            std::mem::take(&mut self.open.stale).into_iter().collect()
        } else {
            self.open = Open {
                built: true,
                ..Open::default()
            };
            self.nodes.keys().cloned().collect()
        };
        for id in ids {
            let Some(n) = self.nodes.get(&id) else {
                continue;
            };
            let pending = n.node_type == NodeType::Pod && n.phase == NodePhase::Pending;
            if pending {
                self.open.pending.insert((n.seq, id.clone()));
            } else {
                self.open.pending.remove(&(n.seq, id.clone()));
            }
            let timed = (n.phase == NodePhase::Pending && n.not_before_ms.is_some())
                || (n.phase == NodePhase::Running && n.deadline_ms.is_some());
            if timed {
                self.open.timed.insert(id);
            } else {
                self.open.timed.remove(&id);
            }
        }
    }

    /// Whether [`Open`] holds for the nodes as they are now.
    pub(super) fn open_is_current(&self) -> bool {
        self.open.built && self.open.stale.is_empty()
    }

    /// The ids of the nodes added or changed since the last call (a node
    /// may be listed that did not change in the end). A shell that stores
    /// each node as its own record writes these again, and no others.
    pub fn take_touched(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.touched.0)
    }

    /// End node `id` in `phase`; `message` replaces the node's only when given.
    pub(super) fn finish_node(
        &mut self,
        id: &str,
        phase: NodePhase,
        message: Option<String>,
        now_ms: u64,
    ) {
        if let Some(n) = self.node_mut(id) {
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
