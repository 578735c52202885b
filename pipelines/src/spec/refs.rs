//! References to templates stored apart from the workflow: a task's
//! `templateRef` (one template of a `WorkflowTemplate` or
//! `ClusterWorkflowTemplate`) and a workflow's `workflowTemplateRef` (the
//! whole spec of one). [`crate::resolve`] replaces them with copies.

use serde::{Deserialize, Serialize};

/// A task's or step's `templateRef`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TemplateRef {
    /// The `WorkflowTemplate` (or, with `clusterScope`, the
    /// `ClusterWorkflowTemplate`).
    #[serde(default)]
    pub name: String,
    /// The template inside it.
    #[serde(default)]
    pub template: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_scope: bool,
}

/// A workflow's `workflowTemplateRef`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkflowTemplateRef {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_scope: bool,
}

impl TemplateRef {
    /// `WorkflowTemplate` or `ClusterWorkflowTemplate`.
    pub fn kind(&self) -> &'static str {
        kind_name(self.cluster_scope)
    }
}

impl WorkflowTemplateRef {
    /// `WorkflowTemplate` or `ClusterWorkflowTemplate`.
    pub fn kind(&self) -> &'static str {
        kind_name(self.cluster_scope)
    }
}

/// The kind a reference names.
pub fn kind_name(cluster_scope: bool) -> &'static str {
    if cluster_scope {
        "ClusterWorkflowTemplate"
    } else {
        "WorkflowTemplate"
    }
}
