//! One template and the settings every kind of template shares: inputs and
//! outputs, `retryStrategy`, `memoize` and the deadline.

use serde::{Deserialize, Serialize};

use super::container::{Container, Script};
use super::dag::{DagTemplate, WorkflowStep};
use super::io::{Artifact, Inputs, Outputs, Parameter};
use super::scalar::{AnyString, Ignored, IntOrString, Unsupported};
use super::suspend::SuspendTemplate;

/// One template: a `dag`, `steps`, a `container`, a `script` or `suspend`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Template {
    /// Required, except in an `inline` template.
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Inputs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Outputs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dag: Option<DagTemplate>,
    /// `steps:`: groups run one after another, the steps of a group in
    /// parallel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<Vec<WorkflowStep>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<Script>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_strategy: Option<RetryStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memoize: Option<Memoize>,

    #[serde(default, skip_serializing)]
    pub metadata: Ignored,
    #[serde(default, skip_serializing)]
    pub node_selector: Ignored,
    #[serde(default, skip_serializing)]
    pub tolerations: Ignored,
    #[serde(default, skip_serializing)]
    pub affinity: Ignored,
    #[serde(default, skip_serializing)]
    pub service_account_name: Ignored,
    #[serde(default, skip_serializing)]
    pub security_context: Ignored,
    #[serde(default, skip_serializing)]
    pub volumes: Ignored,
    #[serde(default, skip_serializing)]
    pub archive_location: Ignored,

    #[serde(default, skip_serializing)]
    pub resource: Unsupported,
    /// `suspend:`: wait for a resume, or for its `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<SuspendTemplate>,
    #[serde(default, skip_serializing)]
    pub container_set: Unsupported,
    #[serde(default, skip_serializing)]
    pub http: Unsupported,
    #[serde(default, skip_serializing)]
    pub data: Unsupported,
    #[serde(default, skip_serializing)]
    pub plugin: Unsupported,
    /// At most this many steps of this template's invocation run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<IntOrString>,
    #[serde(default, skip_serializing)]
    pub synchronization: Unsupported,
    #[serde(default, skip_serializing)]
    pub sidecars: Unsupported,
    #[serde(default, skip_serializing)]
    pub init_containers: Unsupported,
    #[serde(default, skip_serializing)]
    pub daemon: Unsupported,
    /// A leaf's longest run (`"30s"`, `"2m"`), like `activeDeadlineSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<AnyString>,
    #[serde(default, skip_serializing)]
    pub pod_spec_patch: Unsupported,
    #[serde(default, skip_serializing)]
    pub priority: Unsupported,
    #[serde(default, skip_serializing)]
    pub priority_class_name: Unsupported,
    #[serde(default, skip_serializing)]
    pub scheduler_name: Unsupported,
    #[serde(default, skip_serializing)]
    pub automount_service_account_token: Unsupported,
    #[serde(default, skip_serializing)]
    pub executor: Unsupported,
    #[serde(default, skip_serializing)]
    pub host_aliases: Unsupported,
    #[serde(default, skip_serializing)]
    pub fail_fast: Unsupported,
    #[serde(default, skip_serializing)]
    pub metrics: Unsupported,
}

impl Template {
    /// `dag`, `steps`, `container`, `script` or `suspend`.
    pub fn kind(&self) -> &'static str {
        if self.suspend.is_some() {
            "suspend"
        } else if self.dag.is_some() {
            "dag"
        } else if self.steps.is_some() {
            "steps"
        } else if self.script.is_some() {
            "script"
        } else {
            "container"
        }
    }

    /// A `dag` or `steps` template: one that calls other templates.
    pub fn is_composite(&self) -> bool {
        self.dag.is_some() || self.steps.is_some()
    }

    pub fn input_parameters(&self) -> &[Parameter] {
        self.inputs.as_ref().map_or(&[], |i| &i.parameters)
    }
    pub fn input_artifacts(&self) -> &[Artifact] {
        self.inputs.as_ref().map_or(&[], |i| &i.artifacts)
    }
    pub fn output_parameters(&self) -> &[Parameter] {
        self.outputs.as_ref().map_or(&[], |o| &o.parameters)
    }
    pub fn output_artifacts(&self) -> &[Artifact] {
        self.outputs.as_ref().map_or(&[], |o| &o.artifacts)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryStrategy {
    /// Retries after the first attempt; absent means no limit, as in Argo
    /// (a `backoff.maxDuration` or a deadline still ends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    #[serde(default, skip_serializing)]
    pub affinity: Unsupported,
    #[serde(default, skip_serializing)]
    pub expression: Unsupported,
}

/// Which failures a retry strategy retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RetryPolicy {
    /// Any failure or error.
    Always,
    /// The command failed (non-zero exit) — Argo's default.
    #[default]
    OnFailure,
    /// The platform failed to run the step (lost node, cannot start).
    OnError,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Backoff {
    /// `"30s"`, `"2m"`, `"10"` (seconds) or a number of seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<AnyString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<IntOrString>,
    /// No retry starts later than this after the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<AnyString>,
    /// The longest any one wait between attempts gets, however many
    /// times `factor` multiplied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<AnyString>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Memoize {
    pub key: String,
    /// Entries older than this are misses; absent: entries never expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// `cache.configMap.name`: where Argo stores entries. Ignored: the
    /// cache is whatever [`crate::MemoCache`] the shell passes in.
    #[serde(default, skip_serializing)]
    pub cache: Ignored,
}
