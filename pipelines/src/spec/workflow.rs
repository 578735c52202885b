//! The top of the document: the `Workflow` object, its metadata and its
//! `spec`, with the lookups every later stage uses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::io::Parameter;
use super::scalar::{Ignored, IntOrString, Unsupported};
use super::template::Template;

/// An Argo `Workflow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workflow {
    pub api_version: String,
    pub kind: String,
    pub metadata: WorkflowMeta,
    pub spec: WorkflowSpec,
    /// Read-only in Argo; a saved workflow may carry one. Ignored.
    #[serde(default, skip_serializing)]
    pub status: Ignored,
}

impl Workflow {
    /// The template called `name` and its index.
    pub fn template(&self, name: &str) -> Option<(usize, &Template)> {
        self.spec
            .templates
            .iter()
            .enumerate()
            .find(|(_, t)| t.name == name)
    }

    /// The run's name: `metadata.name`, or `metadata.generateName` followed
    /// by `suffix` (the caller's randomness, e.g. five random letters).
    pub fn run_name(&self, suffix: &str) -> String {
        match (&self.metadata.name, &self.metadata.generate_name) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, Some(g)) => format!("{g}{suffix}"),
            _ => suffix.to_string(),
        }
    }
}

/// Argo's `spec.ttlStrategy`: seconds after the run ends before it is
/// deleted; the outcome's own field wins over `secondsAfterCompletion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TtlStrategy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_after_completion: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_after_success: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_after_failure: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkflowMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Prefix; the run's name is this plus a suffix the caller chooses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing)]
    pub namespace: Ignored,
    #[serde(default, skip_serializing)]
    pub uid: Ignored,
    #[serde(default, skip_serializing)]
    pub resource_version: Ignored,
    #[serde(default, skip_serializing)]
    pub creation_timestamp: Ignored,
    #[serde(default, skip_serializing)]
    pub generation: Ignored,
    #[serde(default, skip_serializing)]
    pub managed_fields: Ignored,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkflowSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<WorkflowArguments>,
    #[serde(default)]
    pub templates: Vec<Template>,
    /// Template run after the main DAG, whatever its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_exit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<IntOrString>,

    #[serde(default, skip_serializing)]
    pub service_account_name: Ignored,
    #[serde(default, skip_serializing, rename = "podGC")]
    pub pod_gc: Ignored,
    /// When a finished run is deleted (with its step jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_strategy: Option<TtlStrategy>,
    #[serde(default, skip_serializing)]
    pub volumes: Ignored,
    #[serde(default, skip_serializing)]
    pub node_selector: Ignored,
    #[serde(default, skip_serializing)]
    pub tolerations: Ignored,
    #[serde(default, skip_serializing)]
    pub affinity: Ignored,
    #[serde(default, skip_serializing)]
    pub image_pull_secrets: Ignored,
    #[serde(default, skip_serializing)]
    pub security_context: Ignored,
    #[serde(default, skip_serializing)]
    pub pod_metadata: Ignored,
    #[serde(default, skip_serializing)]
    pub priority_class_name: Ignored,
    #[serde(default, skip_serializing)]
    pub archive_logs: Ignored,

    /// At most this many steps of the run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<IntOrString>,
    #[serde(default, skip_serializing)]
    pub workflow_template_ref: Unsupported,
    #[serde(default, skip_serializing)]
    pub volume_claim_templates: Unsupported,
    #[serde(default, skip_serializing)]
    pub hooks: Unsupported,
    #[serde(default, skip_serializing)]
    pub synchronization: Unsupported,
    #[serde(default, skip_serializing)]
    pub template_defaults: Unsupported,
    /// `suspend: true`: the run starts suspended (no step starts until
    /// `gpuctl resume`), as `argo suspend` leaves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    #[serde(default, skip_serializing)]
    pub shutdown: Unsupported,
    #[serde(default, skip_serializing)]
    pub retry_strategy: Unsupported,
    #[serde(default, skip_serializing)]
    pub pod_priority: Unsupported,
    #[serde(default, skip_serializing)]
    pub pod_priority_class_name: Unsupported,
    #[serde(default, skip_serializing)]
    pub host_network: Unsupported,
    #[serde(default, skip_serializing)]
    pub dns_policy: Unsupported,
    #[serde(default, skip_serializing)]
    pub dns_config: Unsupported,
    #[serde(default, skip_serializing)]
    pub host_aliases: Unsupported,
    #[serde(default, skip_serializing)]
    pub scheduler_name: Unsupported,
    #[serde(default, skip_serializing)]
    pub pod_disruption_budget: Unsupported,
    #[serde(default, skip_serializing)]
    pub automount_service_account_token: Unsupported,
    #[serde(default, skip_serializing)]
    pub executor: Unsupported,
    #[serde(default, skip_serializing)]
    pub pod_spec_patch: Unsupported,
    #[serde(default, skip_serializing, rename = "volumeClaimGC")]
    pub volume_claim_gc: Unsupported,
    #[serde(default, skip_serializing)]
    pub metrics: Unsupported,
    #[serde(default, skip_serializing)]
    pub artifact_repository_ref: Unsupported,
    #[serde(default, skip_serializing, rename = "artifactGC")]
    pub artifact_gc: Unsupported,
    #[serde(default, skip_serializing)]
    pub workflow_metadata: Unsupported,
}

/// `spec.arguments`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkflowArguments {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    #[serde(default, skip_serializing)]
    pub artifacts: Unsupported,
}
