//! The status tree's data: the run's and each node's phase, node types,
//! and what a node took in and produced. Argo's names, so `describe` reads
//! like `argo get`.

use std::collections::BTreeMap;
use std::fmt;

use gpuctl_common::artifact::ArtifactKey;
use serde::{Deserialize, Serialize};

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
    /// A `steps` template's node; its children are its `StepGroup`s.
    Steps,
    /// One group of a `steps` template (`wf[0]`); its children are steps.
    StepGroup,
    TaskGroup,
    Retry,
    Pod,
    Skipped,
    /// A `suspend` template's node: Running until resumed (or its
    /// duration passes), then Succeeded.
    Suspend,
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
    pub(super) fn completed(self) -> bool {
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
    /// A `raw` artifact's content (substituted): written at `path`
    /// instead of fetching `from`, which names nothing in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
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
    pub(super) fn new(id: &str, display: &str, node_type: NodeType, phase: NodePhase) -> Node {
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
