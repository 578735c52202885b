//! The run's status tree as `gpuctl describe workflow` shows it: a copy of
//! the nodes with their children nested, without the run's bookkeeping.

use serde::{Deserialize, Serialize};

use super::node::{NodeOutputs, NodePhase, NodeType, WorkflowPhase};
use super::state::Run;

impl Run {
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
            suspended: self.suspended,
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
    /// Suspended (`gpuctl suspend`): no step starts until `gpuctl resume`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
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
