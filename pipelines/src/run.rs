//! The run state machine: one workflow run as plain data plus the rules that
//! move it forward. No I/O and no clock: the shell passes `now_ms` into every
//! call, launches what [`Run::ready_steps`] returns, reports what finished
//! with [`Run::on_step_finished`], calls [`Run::on_tick`] for deadlines and
//! retry backoff, and persists the whole [`Run`] (it is serde-serializable) so
//! that a new leader resumes where the old one stopped.
//!
//! Nodes follow Argo's status tree: a `DAG` node per DAG invocation, a
//! `TaskGroup` per fan-out task (children `A(0:foo)`, `A(1:bar)`), a `Retry`
//! node per leaf with a `retryStrategy` (children are attempts `A(0)`,
//! `A(1)`), `Pod` nodes for the steps that actually run, and `Skipped` nodes
//! for tasks whose `when` was false (phase Skipped) or whose `depends` can no
//! longer hold (phase Omitted). Node ids are Argo node names
//! (`wf.outer.inner(0:a)`), which makes them stable step ids.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use gpuctl_common::api::{Bytes, Cpu, FieldError};
use serde::{Deserialize, Serialize};

use crate::expr::{eval_when, Depends, TaskResults};
use crate::spec::{parse_duration_ms, RetryPolicy, Template, Workflow};
use crate::store::{ArtifactKey, MemoCache, MemoEntry};
use crate::validate::{ancestors_of, task_depends, validate_all, MAX_DAG_DEPTH, MAX_FAN_OUT};
use crate::vars::{sole_var, substitute, Scope};

/// The phase of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkflowPhase {
    Running,
    Succeeded,
    Failed,
    Error,
}

impl WorkflowPhase {
    pub fn is_terminal(self) -> bool {
        self != WorkflowPhase::Running
    }
}

impl fmt::Display for WorkflowPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Argo's node types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeType {
    #[serde(rename = "DAG")]
    Dag,
    TaskGroup,
    Retry,
    Pod,
    Skipped,
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeType::Dag => f.write_str("DAG"),
            other => fmt::Debug::fmt(other, f),
        }
    }
}

/// Argo's node phases. `Pending` here means "not launched yet".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodePhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Error,
    Skipped,
    Omitted,
}

impl NodePhase {
    /// Finished, one way or another.
    pub fn is_fulfilled(self) -> bool {
        !matches!(self, NodePhase::Pending | NodePhase::Running)
    }
    pub fn failed_or_error(self) -> bool {
        matches!(self, NodePhase::Failed | NodePhase::Error)
    }
    /// Ran to an end (not skipped or omitted).
    fn completed(self) -> bool {
        matches!(
            self,
            NodePhase::Succeeded | NodePhase::Failed | NodePhase::Error
        )
    }
}

impl fmt::Display for NodePhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Inputs of a node after argument resolution.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInputs {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub artifacts: BTreeMap<String, InputArtifact>,
}

/// An input artifact: where it comes from and (for a step) where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputArtifact {
    pub name: String,
    /// Where the step expects it; `None` for a DAG's input.
    pub path: Option<String>,
    pub from: ArtifactKey,
}

/// What a node produced.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeOutputs {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// Standard output of a script (or container), trimmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub artifacts: BTreeMap<String, ArtifactKey>,
}

/// One node of the status tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Argo's node name; for a `Pod`, the step id.
    pub id: String,
    pub display_name: String,
    pub node_type: NodeType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub phase: NodePhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Retry: retries so far. Pod: which attempt it is (0 first).
    #[serde(default)]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Completed from the memoization cache without running.
    #[serde(default)]
    pub memoized: bool,
    #[serde(default)]
    pub inputs: NodeInputs,
    #[serde(default)]
    pub outputs: NodeOutputs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,

    /// DAG: task name → the node created for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_nodes: BTreeMap<String, String>,
    /// Pending pod: not to be launched before this (retry backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
    /// Running pod or DAG: fails at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Pod: the memoization key it was launched with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo_key: Option<String>,
    /// DAG nesting depth.
    #[serde(default)]
    pub depth: usize,
    /// Part of the `onExit` handler.
    #[serde(default)]
    pub exit_handler: bool,
    /// Creation order: steps launch in the order they became ready.
    #[serde(default)]
    pub seq: u64,
}

impl Node {
    fn new(id: &str, display: &str, node_type: NodeType, phase: NodePhase) -> Node {
        Node {
            id: id.to_string(),
            display_name: display.to_string(),
            node_type,
            template: None,
            phase,
            started_ms: None,
            finished_ms: None,
            message: None,
            retries: 0,
            exit_code: None,
            memoized: false,
            inputs: NodeInputs::default(),
            outputs: NodeOutputs::default(),
            children: Vec::new(),
            task_nodes: BTreeMap::new(),
            not_before_ms: None,
            deadline_ms: None,
            memo_key: None,
            depth: 0,
            exit_handler: false,
            seq: 0,
        }
    }
}

/// What a step needs, from `resources` (requests, else limits).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepResources {
    /// From `nvidia.com/gpu`; may be a share such as 0.5.
    pub gpus: f64,
    pub cpu: Option<Cpu>,
    pub memory: Option<Bytes>,
}

/// An output parameter the shell reads from a file after the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputParameterSpec {
    pub name: String,
    pub path: String,
}

/// An output artifact the shell stores after the step, if present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputArtifactSpec {
    pub name: String,
    pub path: String,
    pub optional: bool,
    /// Where to `put` it in the [`crate::ArtifactStore`].
    pub key: ArtifactKey,
}

/// A step to run as a gpuctl job, fully substituted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepToLaunch {
    /// Stable id (the Argo node name); use it to name the job.
    pub id: String,
    pub workflow: String,
    pub display_name: String,
    pub template: String,
    /// Recorded only: the command runs in the node's environment.
    pub image: Option<String>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    /// For a `script` template: write this to a file and run
    /// `command + [file] + args`. Its standard output is `outputs.result`.
    pub script_source: Option<String>,
    pub resources: StepResources,
    /// 0 for the first attempt.
    pub attempt: u32,
    pub memoize_key: Option<String>,
    /// The step must be stopped after this many seconds.
    pub active_deadline_seconds: Option<u64>,
    /// `get` each from the artifact store and place it at `path` first.
    pub input_artifacts: Vec<InputArtifact>,
    pub output_parameters: Vec<OutputParameterSpec>,
    pub output_artifacts: Vec<OutputArtifactSpec>,
}

impl StepToLaunch {
    /// The full command line for a container step; for a script step, the
    /// caller inserts the script file after `command`.
    pub fn argv(&self, script_path: Option<&str>) -> Vec<String> {
        let mut v = self.command.clone();
        if let Some(p) = script_path {
            v.push(p.to_string());
        }
        v.extend(self.args.iter().cloned());
        v
    }
}

/// How a step ended, as the shell saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepPhase {
    Succeeded,
    /// The command ran and failed (non-zero exit).
    Failed,
    /// The platform could not run it (lost node, could not start).
    Errored,
}

/// What the shell reports when a step ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepOutcome {
    pub phase: StepPhase,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    /// Values read from the `output_parameters` files that existed.
    pub parameters: BTreeMap<String, String>,
    /// Standard output (for `outputs.result`).
    pub result: Option<String>,
    /// Names of the output artifacts that were found and stored.
    pub artifacts: BTreeSet<String>,
}

impl StepOutcome {
    pub fn succeeded() -> Self {
        StepOutcome {
            phase: StepPhase::Succeeded,
            exit_code: Some(0),
            message: None,
            parameters: BTreeMap::new(),
            result: None,
            artifacts: BTreeSet::new(),
        }
    }
    pub fn failed(exit_code: i32) -> Self {
        StepOutcome {
            phase: StepPhase::Failed,
            exit_code: Some(exit_code),
            message: Some(format!("exit code {exit_code}")),
            ..Self::succeeded()
        }
    }
    pub fn errored(message: &str) -> Self {
        StepOutcome {
            phase: StepPhase::Errored,
            exit_code: None,
            message: Some(message.to_string()),
            ..Self::succeeded()
        }
    }
    pub fn with_param(mut self, name: &str, value: &str) -> Self {
        self.parameters.insert(name.into(), value.into());
        self
    }
    pub fn with_result(mut self, result: &str) -> Self {
        self.result = Some(result.into());
        self
    }
    pub fn with_artifact(mut self, name: &str) -> Self {
        self.artifacts.insert(name.into());
        self
    }
}

/// What [`Run::on_tick`] asks of the shell.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tick {
    /// Launched steps to stop (deadline passed, run terminated).
    pub cancel: Vec<String>,
    /// Call again (or `ready_steps`) by this time: the next retry backoff
    /// or deadline. `None`: nothing is timed.
    pub next_wakeup_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error("invalid workflow: {0}")]
    Invalid(FieldError),
    #[error("argument {name:?}: {reason}")]
    Argument { name: String, reason: String },
    #[error("no step {0:?} in this run")]
    UnknownStep(String),
    #[error("{0:?} is not a step (only Pod nodes run)")]
    NotAStep(String),
    #[error("step {0:?} was reported finished but was never launched")]
    NotLaunched(String),
}

/// Per DAG template: its graph, derived once from the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DagInfo {
    /// Task indices, dependencies first.
    order: Vec<usize>,
    deps: Vec<Vec<usize>>,
    ancestors: Vec<Vec<usize>>,
    depends: Vec<Option<Depends>>,
    /// Within `target`'s closure (all when there is no target).
    active: Vec<bool>,
    /// Tasks whose branch phase decides the DAG's phase.
    targets: Vec<usize>,
    /// A dependent's `depends` deals with this task failing, so its failure
    /// is part of the design and does not trigger failFast.
    handled: Vec<bool>,
    fail_fast: bool,
}

impl DagInfo {
    fn build(t: &Template) -> DagInfo {
        let d = t.dag.as_ref().expect("a DAG template");
        let n = d.tasks.len();
        let index: BTreeMap<&str, usize> = d
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let depends: Vec<Option<Depends>> = d
            .tasks
            .iter()
            .map(|t| task_depends(t).ok().flatten())
            .collect();
        let mut deps = vec![Vec::new(); n];
        let mut handled = vec![false; n];
        for (j, e) in depends.iter().enumerate() {
            if let Some(e) = e {
                for name in e.task_names() {
                    if let Some(&k) = index.get(name) {
                        deps[j].push(k);
                    }
                }
                mark_handled(e, false, &index, &mut handled);
            }
        }
        let ancestors: Vec<Vec<usize>> = (0..n)
            .map(|j| ancestors_of(j, &deps).into_iter().collect())
            .collect();
        // Topological order, stable by declaration.
        let mut order = Vec::with_capacity(n);
        let mut placed = vec![false; n];
        while order.len() < n {
            let before = order.len();
            for j in 0..n {
                if !placed[j] && deps[j].iter().all(|&k| placed[k]) {
                    placed[j] = true;
                    order.push(j);
                }
            }
            if order.len() == before {
                break; // a cycle; validation rejects these
            }
        }
        let (active, targets) = match d.target.as_deref() {
            Some(target) => {
                let mut active = vec![false; n];
                let mut targets = Vec::new();
                for name in target.split_whitespace() {
                    if let Some(&k) = index.get(name) {
                        targets.push(k);
                        active[k] = true;
                        for &a in &ancestors[k] {
                            active[a] = true;
                        }
                    }
                }
                (active, targets)
            }
            None => {
                let mut is_dep = vec![false; n];
                for ds in &deps {
                    for &k in ds {
                        is_dep[k] = true;
                    }
                }
                (vec![true; n], (0..n).filter(|&j| !is_dep[j]).collect())
            }
        };
        DagInfo {
            order,
            deps,
            ancestors,
            depends,
            active,
            targets,
            handled,
            fail_fast: d.fail_fast.unwrap_or(true),
        }
    }
}

fn mark_handled(e: &Depends, negated: bool, index: &BTreeMap<&str, usize>, out: &mut [bool]) {
    match e {
        Depends::Task { name, result } => {
            // Any explicit result (`A.Succeeded`, `A.Failed`, `!A`) means the
            // author wrote result-aware logic about A.
            let failure_aware = negated || result.is_some();
            if failure_aware {
                if let Some(&k) = index.get(name.as_str()) {
                    out[k] = true;
                }
            }
        }
        Depends::Not(x) => mark_handled(x, !negated, index, out),
        Depends::And(a, b) | Depends::Or(a, b) => {
            mark_handled(a, negated, index, out);
            mark_handled(b, negated, index, out);
        }
    }
}

/// Variables and artifacts in reach of a DAG task.
#[derive(Default)]
struct TaskScope {
    vars: Scope,
    artifacts: BTreeMap<String, ArtifactKey>,
}

/// One workflow run. Serialize it to persist; deserialize to resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    name: String,
    workflow: Workflow,
    /// `workflow.parameters.*` after arguments were applied.
    parameters: BTreeMap<String, String>,
    dags: BTreeMap<String, DagInfo>,
    nodes: BTreeMap<String, Node>,
    root: String,
    exit_node: Option<String>,
    phase: WorkflowPhase,
    started_ms: u64,
    finished_ms: Option<u64>,
    message: Option<String>,
    deadline_ms: Option<u64>,
    /// `{{workflow.status}}` for the exit handler: the main DAG's phase.
    exit_status: Option<String>,
    /// Terminated by the user: no exit handler.
    terminated: bool,
    /// Launched steps the shell should stop.
    to_cancel: Vec<String>,
    /// Next node's `seq`.
    next_seq: u64,
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
        let dags = workflow
            .spec
            .templates
            .iter()
            .filter(|t| t.dag.is_some())
            .map(|t| (t.name.clone(), DagInfo::build(t)))
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
    /// The node of a task of the top-level DAG, by task name.
    pub fn task_node(&self, task: &str) -> Option<&Node> {
        let root = self.nodes.get(&self.root)?;
        self.nodes.get(root.task_nodes.get(task)?)
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

    /// The launch spec of a step, e.g. to launch again a running step whose
    /// job was lost in a failover. Does not change the run.
    pub fn step_spec(&self, id: &str) -> Option<StepToLaunch> {
        let n = self.nodes.get(id)?;
        (n.node_type == NodeType::Pod)
            .then(|| self.build_step(id).ok())
            .flatten()
    }

    /// Steps whose turn has come. Marks them Running: each is returned once.
    /// Steps whose `memoize` key hits a fresh entry of `cache` complete from
    /// it here without being returned.
    pub fn ready_steps(&mut self, now_ms: u64, cache: &mut dyn MemoCache) -> Vec<StepToLaunch> {
        self.apply_deadlines(now_ms);
        self.reconcile(now_ms);
        let mut out = Vec::new();
        loop {
            if self.phase.is_terminal() {
                break;
            }
            let mut pending: Vec<(u64, String)> = self
                .nodes
                .values()
                .filter(|n| {
                    n.node_type == NodeType::Pod
                        && n.phase == NodePhase::Pending
                        && n.not_before_ms.is_none_or(|t| t <= now_ms)
                })
                .map(|n| (n.seq, n.id.clone()))
                .collect();
            pending.sort();
            let mut changed = false;
            for (_, id) in pending {
                match self.build_step(&id) {
                    Err(e) => {
                        self.finish_node(&id, NodePhase::Error, Some(e), now_ms);
                        changed = true;
                    }
                    Ok(step) => {
                        if let Some(key) = &step.memoize_key {
                            if let Some(entry) = self.memo_hit(&id, key, cache, now_ms) {
                                let n = self.nodes.get_mut(&id).expect("pending node");
                                n.outputs = entry.outputs;
                                n.memoized = true;
                                n.started_ms = Some(now_ms);
                                n.memo_key = Some(key.clone());
                                self.finish_node(
                                    &id,
                                    NodePhase::Succeeded,
                                    Some(format!("memoized: outputs of {}", entry.step)),
                                    now_ms,
                                );
                                changed = true;
                                continue;
                            }
                        }
                        let n = self.nodes.get_mut(&id).expect("pending node");
                        n.phase = NodePhase::Running;
                        n.started_ms = Some(now_ms);
                        n.not_before_ms = None;
                        n.memo_key = step.memoize_key.clone();
                        n.deadline_ms = step.active_deadline_seconds.map(|s| now_ms + s * 1000);
                        out.push(step);
                    }
                }
            }
            if !changed {
                break;
            }
            self.reconcile(now_ms);
        }
        out
    }

    fn memo_hit(
        &self,
        id: &str,
        key: &str,
        cache: &dyn MemoCache,
        now_ms: u64,
    ) -> Option<MemoEntry> {
        let n = self.nodes.get(id)?;
        if n.retries > 0 {
            return None; // only a first attempt is looked up
        }
        let tmpl = self.template(n.template.as_deref()?)?;
        let max_age = tmpl
            .memoize
            .as_ref()?
            .max_age
            .as_deref()
            .and_then(|a| parse_duration_ms(a).ok());
        let entry = cache.get(key)?;
        let age = now_ms.saturating_sub(entry.created_ms);
        match max_age {
            Some(max) if age > max => None,
            _ => Some(entry),
        }
    }

    /// Record how a launched step ended. Reports for steps already finished
    /// (say, failed by a deadline) are ignored, so repeating one is harmless.
    pub fn on_step_finished(
        &mut self,
        id: &str,
        outcome: StepOutcome,
        now_ms: u64,
        cache: &mut dyn MemoCache,
    ) -> Result<(), RunError> {
        let node = self
            .nodes
            .get(id)
            .ok_or_else(|| RunError::UnknownStep(id.to_string()))?;
        if node.node_type != NodeType::Pod {
            return Err(RunError::NotAStep(id.to_string()));
        }
        if node.phase.is_fulfilled() {
            return Ok(());
        }
        if node.phase == NodePhase::Pending {
            return Err(RunError::NotLaunched(id.to_string()));
        }
        let tmpl = node
            .template
            .as_deref()
            .and_then(|t| self.template(t))
            .cloned()
            .unwrap_or_default();
        let mut phase = match outcome.phase {
            StepPhase::Succeeded => NodePhase::Succeeded,
            StepPhase::Failed => NodePhase::Failed,
            StepPhase::Errored => NodePhase::Error,
        };
        let mut message = outcome.message.clone();
        let mut outputs = NodeOutputs {
            result: outcome.result.as_ref().map(|r| r.trim_end().to_string()),
            ..Default::default()
        };
        if phase == NodePhase::Succeeded {
            let scope = self.leaf_scope(node);
            for p in tmpl.output_parameters() {
                let vf = p.value_from.as_ref();
                let value = outcome
                    .parameters
                    .get(&p.name)
                    .cloned()
                    .or_else(|| vf.and_then(|v| v.default.as_ref()).map(|d| d.0.clone()))
                    .or_else(|| p.default.as_ref().map(|d| d.0.clone()))
                    .or_else(|| p.value.as_ref().and_then(|v| substitute(&v.0, &scope).ok()));
                match value {
                    Some(v) => {
                        outputs.parameters.insert(p.name.clone(), v);
                    }
                    None => {
                        phase = NodePhase::Error;
                        message = Some(format!(
                            "output parameter {:?} not found (the step did not write {})",
                            p.name,
                            vf.and_then(|v| v.path.as_deref()).unwrap_or("its file")
                        ));
                        break;
                    }
                }
            }
            for a in tmpl.output_artifacts() {
                if outcome.artifacts.contains(&a.name) {
                    outputs.artifacts.insert(
                        a.name.clone(),
                        ArtifactKey {
                            workflow: self.name.clone(),
                            step: id.to_string(),
                            name: a.name.clone(),
                        },
                    );
                } else if a.optional != Some(true) && phase == NodePhase::Succeeded {
                    phase = NodePhase::Error;
                    message = Some(format!(
                        "output artifact {:?} not found at {}",
                        a.name,
                        a.path.as_deref().unwrap_or("its path")
                    ));
                }
            }
        }
        let memo_key = node.memo_key.clone();
        let n = self.nodes.get_mut(id).expect("checked above");
        n.exit_code = outcome.exit_code;
        n.outputs = outputs;
        if phase == NodePhase::Succeeded {
            if let Some(key) = memo_key {
                cache.put(
                    &key,
                    MemoEntry {
                        created_ms: now_ms,
                        outputs: n.outputs.clone(),
                        step: id.to_string(),
                    },
                );
            }
        }
        self.finish_node(id, phase, message, now_ms);
        self.reconcile(now_ms);
        Ok(())
    }

    /// Launched steps to stop, collected since the last call (also
    /// returned by [`Run::on_tick`] and [`Run::terminate`]).
    pub fn take_cancellations(&mut self) -> Vec<String> {
        std::mem::take(&mut self.to_cancel)
    }

    /// Apply deadlines and backoff timers. Returns the steps to stop and
    /// when to call again.
    pub fn on_tick(&mut self, now_ms: u64) -> Tick {
        self.apply_deadlines(now_ms);
        self.reconcile(now_ms);
        Tick {
            cancel: std::mem::take(&mut self.to_cancel),
            next_wakeup_ms: self.next_wakeup_ms(now_ms),
        }
    }

    /// Stop the run now: running steps are to be stopped, nothing new
    /// starts, the exit handler does not run. Returns the steps to stop.
    pub fn terminate(&mut self, now_ms: u64, reason: &str) -> Vec<String> {
        if !self.phase.is_terminal() {
            self.terminated = true;
            let root = self.root.clone();
            self.fail_subtree(&root, reason, now_ms);
            if let Some(e) = self.exit_node.clone() {
                self.fail_subtree(&e, reason, now_ms);
            }
            self.reconcile(now_ms);
            self.message = Some(reason.to_string());
        }
        std::mem::take(&mut self.to_cancel)
    }

    /// The earliest time something timed happens: a retry becomes due or a
    /// deadline passes.
    pub fn next_wakeup_ms(&self, now_ms: u64) -> Option<u64> {
        if self.phase.is_terminal() {
            return None;
        }
        let mut t: Option<u64> = None;
        let mut consider = |x: u64| {
            if x > now_ms {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        let main_done = self
            .nodes
            .get(&self.root)
            .is_some_and(|n| n.phase.is_fulfilled());
        if let (Some(d), false) = (self.deadline_ms, main_done) {
            consider(d);
        }
        for n in self.nodes.values() {
            if n.phase == NodePhase::Pending {
                if let Some(nb) = n.not_before_ms {
                    consider(nb);
                }
            }
            if n.phase == NodePhase::Running {
                if let Some(d) = n.deadline_ms {
                    consider(d);
                }
            }
        }
        t
    }

    /// The status tree for `gpuctl describe workflow`.
    pub fn status(&self) -> WorkflowStatus {
        WorkflowStatus {
            name: self.name.clone(),
            phase: self.phase,
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            message: self.message.clone(),
            root: self.view(&self.root),
            on_exit: self.exit_node.as_ref().and_then(|e| self.view(e)),
        }
    }

    fn view(&self, id: &str) -> Option<NodeView> {
        let n = self.nodes.get(id)?;
        Some(NodeView {
            id: n.id.clone(),
            display_name: n.display_name.clone(),
            node_type: n.node_type,
            template: n.template.clone(),
            phase: n.phase,
            started_ms: n.started_ms,
            finished_ms: n.finished_ms,
            retries: n.retries,
            exit_code: n.exit_code,
            memoized: n.memoized,
            message: n.message.clone(),
            outputs: n.outputs.clone(),
            children: n.children.iter().filter_map(|c| self.view(c)).collect(),
        })
    }

    // ------------------------------------------------------------ internals

    fn template(&self, name: &str) -> Option<&Template> {
        self.workflow.template(name).map(|(_, t)| t)
    }

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
        for (k, v) in &self.parameters {
            s.insert(format!("workflow.parameters.{k}"), v.clone());
        }
        s
    }

    /// Variables in reach of a leaf's fields.
    fn leaf_scope(&self, n: &Node) -> Scope {
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

    /// Inputs of the entrypoint or exit handler, from workflow parameters.
    fn start_top_level(&mut self, id: &str, template: &str, exit_handler: bool, now_ms: u64) {
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
        if let Some(a) = t
            .input_artifacts()
            .iter()
            .find(|a| a.optional != Some(true))
        {
            problem = Some(format!(
                "input artifact {:?} of {template:?} cannot be supplied to a top-level template",
                a.name
            ));
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
    fn instantiate(
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
        if t.dag.is_some() {
            let mut n = Node::new(id, display, NodeType::Dag, NodePhase::Running);
            if depth > MAX_DAG_DEPTH {
                n.phase = NodePhase::Error;
                n.message = Some(format!(
                    "DAGs nested more than {MAX_DAG_DEPTH} deep; does a recursion miss its base case?"
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

    fn insert_node(&mut self, mut n: Node) {
        n.seq = self.next_seq;
        self.next_seq += 1;
        self.nodes.insert(n.id.clone(), n);
    }

    fn finish_node(&mut self, id: &str, phase: NodePhase, message: Option<String>, now_ms: u64) {
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
    fn fail_subtree(&mut self, id: &str, reason: &str, now_ms: u64) {
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

    fn apply_deadlines(&mut self, now_ms: u64) {
        if self.phase.is_terminal() {
            return;
        }
        let root_done = self
            .nodes
            .get(&self.root)
            .is_none_or(|n| n.phase.is_fulfilled());
        if let (Some(d), false) = (self.deadline_ms, root_done) {
            if now_ms >= d {
                let root = self.root.clone();
                let secs = (d - self.started_ms) / 1000;
                self.fail_subtree(
                    &root,
                    &format!("Workflow exceeded its deadline (activeDeadlineSeconds: {secs})"),
                    now_ms,
                );
                self.message = Some(format!(
                    "Workflow exceeded its deadline (activeDeadlineSeconds: {secs})"
                ));
            }
        }
        let expired: Vec<(String, NodeType)> = self
            .nodes
            .values()
            .filter(|n| n.phase == NodePhase::Running && n.deadline_ms.is_some_and(|d| now_ms >= d))
            .map(|n| (n.id.clone(), n.node_type))
            .collect();
        for (id, ty) in expired {
            let why = if ty == NodeType::Pod {
                "Step exceeded its deadline (activeDeadlineSeconds)"
            } else {
                "DAG exceeded its deadline (activeDeadlineSeconds)"
            };
            self.fail_subtree(&id, why, now_ms);
        }
    }

    /// Move everything forward as far as it can go without the shell.
    fn reconcile(&mut self, now_ms: u64) {
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

    fn advance(&mut self, id: &str, now_ms: u64) {
        let Some(n) = self.nodes.get(id) else { return };
        if n.phase.is_fulfilled() {
            return;
        }
        match n.node_type {
            NodeType::Dag => self.advance_dag(id, now_ms),
            NodeType::TaskGroup => {
                for c in n.children.clone() {
                    self.advance(&c, now_ms);
                }
                let n = &self.nodes[id];
                let phases: Vec<NodePhase> =
                    n.children.iter().map(|c| self.nodes[c].phase).collect();
                if phases.iter().all(|p| p.is_fulfilled()) {
                    let failed = phases.iter().rev().find(|p| p.failed_or_error()).copied();
                    let msg = failed.map(|_| "one or more items failed".to_string());
                    self.finish_node(id, failed.unwrap_or(NodePhase::Succeeded), msg, now_ms);
                }
            }
            NodeType::Retry => self.advance_retry(id, now_ms),
            NodeType::Pod | NodeType::Skipped => {}
        }
    }

    fn advance_retry(&mut self, id: &str, now_ms: u64) {
        let n = &self.nodes[id];
        let Some(last_id) = n.children.last().cloned() else {
            return;
        };
        let last = &self.nodes[&last_id];
        if !last.phase.is_fulfilled() {
            return;
        }
        let attempts = n.children.len() as u32;
        let last_phase = last.phase;
        let (last_msg, last_out, last_exit) =
            (last.message.clone(), last.outputs.clone(), last.exit_code);
        let started = n.started_ms.unwrap_or(now_ms);
        let tmpl = n
            .template
            .as_deref()
            .and_then(|t| self.template(t))
            .cloned();
        let strategy = tmpl
            .as_ref()
            .and_then(|t| t.retry_strategy.clone())
            .unwrap_or_default();
        let conclude = |run: &mut Run, phase: NodePhase, msg: Option<String>| {
            let n = run.nodes.get_mut(id).expect("retry node");
            n.outputs = last_out.clone();
            n.exit_code = last_exit;
            run.finish_node(id, phase, msg, now_ms);
        };
        if last_phase == NodePhase::Succeeded {
            conclude(self, NodePhase::Succeeded, None);
            return;
        }
        let policy = strategy.retry_policy.unwrap_or_default();
        let retryable = match policy {
            RetryPolicy::Always => true,
            RetryPolicy::OnFailure => last_phase == NodePhase::Failed,
            RetryPolicy::OnError => last_phase == NodePhase::Error,
        };
        let limit = strategy
            .limit
            .as_ref()
            .and_then(|l| l.as_int())
            .unwrap_or(0)
            .max(0) as u32;
        let retries_done = attempts - 1;
        if !retryable || retries_done >= limit {
            let msg = match (retryable, last_msg) {
                (true, Some(m)) if limit > 0 => {
                    Some(format!("{m} (no more retries: limit {limit})"))
                }
                (_, m) => m,
            };
            conclude(self, last_phase, msg);
            return;
        }
        let backoff = strategy.backoff.as_ref();
        let base = backoff
            .and_then(|b| b.duration.as_ref())
            .and_then(|d| parse_duration_ms(&d.0).ok())
            .unwrap_or(0);
        let factor = backoff
            .and_then(|b| b.factor.as_ref())
            .and_then(|f| f.as_int())
            .unwrap_or(1)
            .max(1) as u64;
        let delay = base.saturating_mul(factor.saturating_pow(retries_done));
        if let Some(max) = backoff
            .and_then(|b| b.max_duration.as_ref())
            .and_then(|d| parse_duration_ms(&d.0).ok())
        {
            if now_ms + delay > started + max {
                let m = last_msg.unwrap_or_else(|| "failed".into());
                conclude(
                    self,
                    last_phase,
                    Some(format!(
                        "{m} (no more retries: backoff.maxDuration reached)"
                    )),
                );
                return;
            }
        }
        let n = &self.nodes[id];
        let child_id = format!("{id}({attempts})");
        let mut p = Node::new(
            &child_id,
            &format!("{}({attempts})", n.display_name),
            NodeType::Pod,
            NodePhase::Pending,
        );
        p.template = n.template.clone();
        p.inputs = n.inputs.clone();
        p.depth = n.depth;
        p.exit_handler = n.exit_handler;
        p.retries = attempts;
        p.not_before_ms = Some(now_ms + delay);
        self.insert_node(p);
        let n = self.nodes.get_mut(id).expect("retry node");
        n.children.push(child_id);
        n.retries = attempts;
    }

    /// Whether the DAG has stopped starting new tasks (failFast).
    fn fail_fast_tripped(
        &self,
        dag: &Node,
        info: &DagInfo,
        tasks: &[crate::spec::DagTask],
    ) -> bool {
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

    fn task_results(&self, dag: &Node, task: &crate::spec::DagTask) -> TaskResults {
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

    /// Variables a task of DAG node `dag` may use; `tasks` limits which
    /// tasks' outputs are included.
    fn dag_scope(&self, dag: &Node, tasks: &[crate::spec::DagTask], which: &[usize]) -> TaskScope {
        let mut s = TaskScope {
            vars: self.workflow_scope(dag.exit_handler),
            ..Default::default()
        };
        for (k, v) in &dag.inputs.parameters {
            s.vars.insert(format!("inputs.parameters.{k}"), v.clone());
        }
        for (k, a) in &dag.inputs.artifacts {
            s.artifacts
                .insert(format!("inputs.artifacts.{k}"), a.from.clone());
        }
        for &j in which {
            let name = &tasks[j].name;
            let Some(n) = dag.task_nodes.get(name).and_then(|id| self.nodes.get(id)) else {
                continue;
            };
            let pre = format!("tasks.{name}");
            s.vars.insert(format!("{pre}.status"), n.phase.to_string());
            if let Some(c) = n.exit_code {
                s.vars.insert(format!("{pre}.exitCode"), c.to_string());
            }
            if n.node_type == NodeType::TaskGroup {
                let mut results = Vec::new();
                let mut params = Vec::new();
                let mut by_name: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
                for c in &n.children {
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
                s.vars.insert(
                    format!("{pre}.outputs.result"),
                    serde_json::Value::Array(results).to_string(),
                );
                s.vars.insert(
                    format!("{pre}.outputs.parameters"),
                    serde_json::Value::Array(params).to_string(),
                );
                for (k, vs) in by_name {
                    s.vars.insert(
                        format!("{pre}.outputs.parameters.{k}"),
                        serde_json::Value::Array(vs).to_string(),
                    );
                }
            } else {
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
        }
        s
    }

    fn advance_dag(&mut self, id: &str, now_ms: u64) {
        let dag_node = &self.nodes[id];
        let Some(tname) = dag_node.template.clone() else {
            return;
        };
        let Some(info) = self.dags.get(&tname).cloned() else {
            return;
        };
        let Some(tmpl) = self.template(&tname).cloned() else {
            return;
        };
        let tasks = tmpl
            .dag
            .as_ref()
            .map(|d| d.tasks.clone())
            .unwrap_or_default();
        for &j in &info.order {
            if !info.active[j] {
                continue;
            }
            let task = &tasks[j];
            let dag_node = &self.nodes[id];
            if let Some(child) = dag_node.task_nodes.get(&task.name).cloned() {
                self.advance(&child, now_ms);
                continue;
            }
            if self.fail_fast_tripped(dag_node, &info, &tasks) {
                continue;
            }
            let ready = info.deps[j].iter().all(|&k| {
                dag_node
                    .task_nodes
                    .get(&tasks[k].name)
                    .is_some_and(|c| self.nodes[c].phase.is_fulfilled())
            });
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
            let scope = self.dag_scope(dag_node, &tasks, &info.ancestors[j]);
            let (depth, exit_handler) = (dag_node.depth, dag_node.exit_handler);
            self.start_task(id, &task_id, task, &scope, depth, exit_handler, now_ms);
        }
        // Assess.
        let dag_node = &self.nodes[id];
        let all_done = dag_node
            .task_nodes
            .values()
            .all(|c| self.nodes[c].phase.is_fulfilled());
        if !all_done {
            return;
        }
        let stopped = self.fail_fast_tripped(dag_node, &info, &tasks);
        // Branch phase: a completed node's own phase; a skipped or omitted
        // node inherits its parents' (failures win).
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
            // A DAG's outputs come from its tasks.
            let all: Vec<usize> = (0..tasks.len()).collect();
            let scope = self.dag_scope(dag_node, &tasks, &all);
            let mut outputs = NodeOutputs::default();
            for p in tmpl.output_parameters() {
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
                            result = NodePhase::Error;
                            message = Some(format!("output parameter {:?}: {e}", p.name));
                        }
                    },
                }
            }
            for a in tmpl.output_artifacts() {
                let key = a
                    .from
                    .as_deref()
                    .and_then(sole_var)
                    .and_then(|v| scope.artifacts.get(v));
                match key {
                    Some(k) => {
                        outputs.artifacts.insert(a.name.clone(), k.clone());
                    }
                    None if a.optional == Some(true) => {}
                    None => {
                        result = NodePhase::Error;
                        message = Some(format!(
                            "output artifact {:?}: unable to resolve {}",
                            a.name,
                            a.from.as_deref().unwrap_or("")
                        ));
                    }
                }
            }
            self.nodes.get_mut(id).expect("dag node").outputs = outputs;
        }
        self.finish_node(id, result, message, now_ms);
    }

    fn add_task_node(&mut self, dag_id: &str, task: &str, n: Node) {
        let nid = n.id.clone();
        self.insert_node(n);
        let d = self.nodes.get_mut(dag_id).expect("dag node");
        d.task_nodes.insert(task.to_string(), nid.clone());
        d.children.push(nid);
    }

    /// Start task `task` of DAG `dag_id`: expand, check `when`, resolve
    /// arguments, and create its nodes.
    #[allow(clippy::too_many_arguments)]
    fn start_task(
        &mut self,
        dag_id: &str,
        task_id: &str,
        task: &crate::spec::DagTask,
        scope: &TaskScope,
        depth: usize,
        exit_handler: bool,
        now_ms: u64,
    ) {
        let error_node = |msg: String| {
            let mut n = Node::new(task_id, &task.name, NodeType::Skipped, NodePhase::Error);
            n.template = task.template.clone();
            n.message = Some(msg);
            n.started_ms = Some(now_ms);
            n.finished_ms = Some(now_ms);
            n.exit_handler = exit_handler;
            n
        };
        let items: Option<Vec<serde_json::Value>> = if let Some(items) = &task.with_items {
            Some(items.clone())
        } else if let Some(wp) = &task.with_param {
            let text = match substitute(wp, &scope.vars) {
                Ok(t) => t,
                Err(e) => {
                    let n = error_node(format!("withParam: {e}"));
                    self.add_task_node(dag_id, &task.name, n);
                    return;
                }
            };
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Array(v)) if v.len() <= MAX_FAN_OUT => Some(v),
                Ok(serde_json::Value::Array(v)) => {
                    let n = error_node(format!(
                        "withParam expanded to {} items, more than the limit of {MAX_FAN_OUT}",
                        v.len()
                    ));
                    self.add_task_node(dag_id, &task.name, n);
                    return;
                }
                _ => {
                    let n = error_node(format!(
                        "withParam value could not be parsed as a JSON list: {}",
                        text.trim()
                    ));
                    self.add_task_node(dag_id, &task.name, n);
                    return;
                }
            }
        } else {
            None
        };
        let Some(items) = items else {
            let n = self.make_task_instance(
                task_id,
                &task.name,
                task,
                &scope.vars,
                scope,
                depth,
                exit_handler,
                now_ms,
            );
            if let Some(n) = n {
                self.add_task_node(dag_id, &task.name, n);
            } else {
                let d = self.nodes.get_mut(dag_id).expect("dag node");
                d.task_nodes.insert(task.name.clone(), task_id.to_string());
                d.children.push(task_id.to_string());
            }
            return;
        };
        let mut group = Node::new(task_id, &task.name, NodeType::TaskGroup, NodePhase::Running);
        group.template = task.template.clone();
        group.started_ms = Some(now_ms);
        group.exit_handler = exit_handler;
        if items.is_empty() {
            group.phase = NodePhase::Skipped;
            group.message = Some("withItems/withParam expanded to no items".into());
            group.finished_ms = Some(now_ms);
        }
        self.add_task_node(dag_id, &task.name, group);
        for (i, item) in items.iter().enumerate() {
            let label = format!("{}({i}:{})", task.name, item_label(item));
            let child_id = format!("{task_id}({i}:{})", item_label(item));
            let mut vars = scope.vars.clone();
            vars.insert("item".into(), value_text(item));
            if let serde_json::Value::Object(m) = item {
                for (k, v) in m {
                    vars.insert(format!("item.{k}"), value_text(v));
                }
            }
            let n = self.make_task_instance(
                &child_id,
                &label,
                task,
                &vars,
                scope,
                depth,
                exit_handler,
                now_ms,
            );
            if let Some(n) = n {
                self.insert_node(n);
            }
            self.nodes
                .get_mut(task_id)
                .expect("group")
                .children
                .push(child_id);
        }
    }

    /// One instance of a task (the task itself or one fan-out item): a
    /// Skipped/Error node returned for the caller to insert, or `None` when
    /// the template's nodes were created under `id`.
    #[allow(clippy::too_many_arguments)]
    fn make_task_instance(
        &mut self,
        id: &str,
        display: &str,
        task: &crate::spec::DagTask,
        vars: &Scope,
        scope: &TaskScope,
        depth: usize,
        exit_handler: bool,
        now_ms: u64,
    ) -> Option<Node> {
        let done = |phase: NodePhase, msg: String| {
            let mut n = Node::new(id, display, NodeType::Skipped, phase);
            n.template = task.template.clone();
            n.message = Some(msg);
            n.started_ms = Some(now_ms);
            n.finished_ms = Some(now_ms);
            n.exit_handler = exit_handler;
            Some(n)
        };
        if let Some(w) = &task.when {
            let text = match substitute(w, vars) {
                Ok(t) => t,
                Err(e) => {
                    return done(
                        NodePhase::Error,
                        format!("when {w:?} of task {:?}: {e}", task.name),
                    )
                }
            };
            match eval_when(&text) {
                Ok(true) => {}
                Ok(false) => {
                    return done(NodePhase::Skipped, format!("when '{text}' evaluated false"))
                }
                Err(e) => {
                    return done(
                        NodePhase::Error,
                        format!(
                            "when {w:?} of task {:?} (after substitution: {text:?}): {e}",
                            task.name
                        ),
                    )
                }
            }
        }
        let Some(callee) = task
            .template
            .as_deref()
            .and_then(|t| self.template(t))
            .cloned()
        else {
            return done(NodePhase::Error, "template not found".into());
        };
        let mut inputs = NodeInputs::default();
        for ip in callee.input_parameters() {
            let arg = task.parameters().iter().find(|a| a.name == ip.name);
            let v = match arg {
                Some(a) => {
                    let raw = a.value.as_ref().map(|v| v.0.clone()).unwrap_or_default();
                    match substitute(&raw, vars) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            return done(
                                NodePhase::Error,
                                format!("argument {:?} of task {:?}: {e}", ip.name, task.name),
                            )
                        }
                    }
                }
                None => ip
                    .value
                    .as_ref()
                    .or(ip.default.as_ref())
                    .map(|v| v.0.clone()),
            };
            match v {
                Some(v) => {
                    inputs.parameters.insert(ip.name.clone(), v);
                }
                None => {
                    return done(
                        NodePhase::Error,
                        format!("inputs.parameters.{} was not supplied", ip.name),
                    )
                }
            }
        }
        for ia in callee.input_artifacts() {
            let arg = task.artifacts().iter().find(|a| a.name == ia.name);
            let key = arg
                .and_then(|a| a.from.as_deref())
                .and_then(sole_var)
                .and_then(|v| scope.artifacts.get(v));
            match key {
                Some(k) => {
                    inputs.artifacts.insert(
                        ia.name.clone(),
                        InputArtifact {
                            name: ia.name.clone(),
                            path: ia.path.clone(),
                            from: k.clone(),
                        },
                    );
                }
                None if ia.optional == Some(true)
                    || arg.is_some_and(|a| a.optional == Some(true)) => {}
                None => {
                    return done(
                        NodePhase::Error,
                        format!(
                            "input artifact {:?} of task {:?}: unable to resolve {}",
                            ia.name,
                            task.name,
                            arg.and_then(|a| a.from.as_deref()).unwrap_or("(no from)")
                        ),
                    )
                }
            }
        }
        let depth = if callee.dag.is_some() {
            depth + 1
        } else {
            depth
        };
        self.instantiate(id, display, &callee, inputs, depth, exit_handler, now_ms);
        None
    }

    /// The launch spec of pod `id`, with every `{{...}}` substituted.
    fn build_step(&self, id: &str) -> Result<StepToLaunch, String> {
        let n = self.nodes.get(id).ok_or("no such node")?;
        let tname = n.template.clone().unwrap_or_default();
        let t = self.template(&tname).ok_or("template not found")?;
        let scope = self.leaf_scope(n);
        let sub = |s: &str| substitute(s, &scope);
        let subs = |v: &[String]| v.iter().map(|s| sub(s)).collect::<Result<Vec<_>, _>>();
        let (image, command, args, env, working_dir, resources, source) =
            match (&t.container, &t.script) {
                (Some(c), _) => (
                    &c.image,
                    &c.command,
                    &c.args,
                    &c.env,
                    &c.working_dir,
                    &c.resources,
                    None,
                ),
                (None, Some(s)) => (
                    &s.image,
                    &s.command,
                    &s.args,
                    &s.env,
                    &s.working_dir,
                    &s.resources,
                    Some(&s.source),
                ),
                _ => return Err(format!("template {tname:?} is not a container or script")),
            };
        let mut env_out = BTreeMap::new();
        for e in env {
            let v = e.value.as_ref().map(|v| v.0.as_str()).unwrap_or("");
            env_out.insert(e.name.clone(), sub(v)?);
        }
        let mut res = StepResources::default();
        if let Some(r) = resources {
            let pick = |f: &dyn Fn(&crate::spec::ResourceList) -> bool| {
                r.requests
                    .as_ref()
                    .filter(|l| f(l))
                    .or(r.limits.as_ref().filter(|l| f(l)))
            };
            if let Some(l) = r
                .limits
                .as_ref()
                .filter(|l| l.gpu.is_some())
                .or(r.requests.as_ref().filter(|l| l.gpu.is_some()))
            {
                res.gpus = crate::validate::parse_gpus(
                    &l.gpu.as_ref().map(|g| g.0.clone()).unwrap_or_default(),
                )?;
            }
            res.cpu = pick(&|l| l.cpu.is_some()).and_then(|l| l.cpu);
            res.memory = pick(&|l| l.memory.is_some()).and_then(|l| l.memory);
        }
        let memoize_key = t.memoize.as_ref().map(|m| sub(&m.key)).transpose()?;
        let mut output_parameters = Vec::new();
        for p in t.output_parameters() {
            if let Some(path) = p.value_from.as_ref().and_then(|v| v.path.as_deref()) {
                output_parameters.push(OutputParameterSpec {
                    name: p.name.clone(),
                    path: sub(path)?,
                });
            }
        }
        let mut output_artifacts = Vec::new();
        for a in t.output_artifacts() {
            output_artifacts.push(OutputArtifactSpec {
                name: a.name.clone(),
                path: sub(a.path.as_deref().unwrap_or_default())?,
                optional: a.optional == Some(true),
                key: ArtifactKey {
                    workflow: self.name.clone(),
                    step: id.to_string(),
                    name: a.name.clone(),
                },
            });
        }
        Ok(StepToLaunch {
            id: id.to_string(),
            workflow: self.name.clone(),
            display_name: n.display_name.clone(),
            template: tname.clone(),
            image: image.as_deref().map(sub).transpose()?,
            command: subs(command)?,
            args: subs(args)?,
            env: env_out,
            working_dir: working_dir.as_deref().map(sub).transpose()?,
            script_source: source.map(|s| sub(s)).transpose()?,
            resources: res,
            attempt: n.retries,
            memoize_key,
            active_deadline_seconds: t
                .active_deadline_seconds
                .as_ref()
                .and_then(|d| d.as_int())
                .map(|s| s as u64),
            input_artifacts: n.inputs.artifacts.values().cloned().collect(),
            output_parameters,
            output_artifacts,
        })
    }
}

/// `{{item}}` text: strings as they are, everything else as JSON.
fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The part of a fan-out child's name after the index, as Argo writes it:
/// `foo` for a scalar, `a:1,b:2` (keys sorted) for a map.
fn item_label(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let mut parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}:{}", value_text(v)))
                .collect();
            parts.sort();
            parts.join(",")
        }
        other => value_text(other),
    }
}

/// A run's status for `gpuctl describe workflow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStatus {
    pub name: String,
    pub phase: WorkflowPhase,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    pub message: Option<String>,
    pub root: Option<NodeView>,
    pub on_exit: Option<NodeView>,
}

/// One node of [`WorkflowStatus`], with its children nested.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub id: String,
    pub display_name: String,
    pub node_type: NodeType,
    pub template: Option<String>,
    pub phase: NodePhase,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub retries: u32,
    pub exit_code: Option<i32>,
    pub memoized: bool,
    pub message: Option<String>,
    pub outputs: NodeOutputs,
    pub children: Vec<NodeView>,
}

impl NodeView {
    /// Depth-first search by display name.
    pub fn find(&self, display_name: &str) -> Option<&NodeView> {
        if self.display_name == display_name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(display_name))
    }
}
