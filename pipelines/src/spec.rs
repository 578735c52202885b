//! The Argo `Workflow` document as serde types, and strict parsing.
//!
//! Every struct denies unknown fields, so a field that would change what a
//! DAG does and that we do not implement is an error rather than silently
//! ignored. Fields Argo has that we know about but do not implement are
//! declared here as [`Unsupported`] and rejected by [`crate::validate`] with a
//! reason that names them.
//!
//! Accepted and ignored (they only matter to Kubernetes, not to the DAG):
//! `metadata.namespace`, `metadata.uid` and other server-set metadata,
//! `spec.serviceAccountName`, `spec.podGC`,
//! `spec.volumes`, `spec.nodeSelector`, `spec.tolerations`, `spec.affinity`,
//! `spec.imagePullSecrets`, `spec.securityContext`, `spec.podMetadata`,
//! `spec.priorityClassName`, `spec.archiveLogs`, `status`; in a template:
//! `metadata`, `nodeSelector`, `tolerations`, `affinity`,
//! `serviceAccountName`, `securityContext`, `volumes`, `archiveLocation`;
//! in a container or script: `name`, `imagePullPolicy`, `volumeMounts`,
//! `securityContext`, `ports`; in an artifact: `archive`, `mode`;
//! `resources.*.ephemeral-storage`; `memoize.cache`. `metadata.labels` and
//! `metadata.annotations` are kept.

use std::collections::BTreeMap;
use std::fmt;

use gpuctl_common::api::{Bytes, Cpu, FieldError};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `apiVersion` of an Argo workflow.
pub const ARGO_API_VERSION: &str = "argoproj.io/v1alpha1";

/// A field we recognise but do not implement: accepted by the parser so that
/// validation can reject it with a precise reason.
pub type Unsupported = Option<IgnoredAny>;

/// A field accepted for compatibility and ignored.
pub type Ignored = Option<IgnoredAny>;

/// A scalar that Argo lets users write as a string, number or boolean
/// (`value: 3`, `value: "3"`, `value: true`); we keep its text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct AnyString(pub String);

impl AnyString {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AnyString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AnyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(AnyString(s)),
            serde_json::Value::Number(n) => Ok(AnyString(n.to_string())),
            serde_json::Value::Bool(b) => Ok(AnyString(b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected a string, number or boolean, got {other}"
            ))),
        }
    }
}

impl Serialize for AnyString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Kubernetes' `IntOrString`: `limit: 3` or `limit: "3"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrString {
    Int(i64),
    Str(String),
}

impl IntOrString {
    /// The integer, if the text is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            IntOrString::Int(i) => Some(*i),
            IntOrString::Str(s) => s.trim().parse().ok(),
        }
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(IntOrString::Str(s)),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(IntOrString::Int(i)),
                None => Err(serde::de::Error::custom(format!(
                    "expected a whole number, got {n}"
                ))),
            },
            other => Err(serde::de::Error::custom(format!(
                "expected a whole number, got {other}"
            ))),
        }
    }
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(i) => s.serialize_i64(*i),
            IntOrString::Str(v) => s.serialize_str(v),
        }
    }
}

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

    #[serde(default, skip_serializing)]
    pub parallelism: Unsupported,
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
    #[serde(default, skip_serializing)]
    pub suspend: Unsupported,
    #[serde(default, skip_serializing)]
    pub shutdown: Unsupported,
    #[serde(default, skip_serializing)]
    pub retry_strategy: Unsupported,
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

/// One template: a `dag`, a `container` or a `script`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Template {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Inputs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Outputs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dag: Option<DagTemplate>,
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
    pub steps: Unsupported,
    #[serde(default, skip_serializing)]
    pub resource: Unsupported,
    #[serde(default, skip_serializing)]
    pub suspend: Unsupported,
    #[serde(default, skip_serializing)]
    pub container_set: Unsupported,
    #[serde(default, skip_serializing)]
    pub http: Unsupported,
    #[serde(default, skip_serializing)]
    pub data: Unsupported,
    #[serde(default, skip_serializing)]
    pub plugin: Unsupported,
    #[serde(default, skip_serializing)]
    pub parallelism: Unsupported,
    #[serde(default, skip_serializing)]
    pub synchronization: Unsupported,
    #[serde(default, skip_serializing)]
    pub sidecars: Unsupported,
    #[serde(default, skip_serializing)]
    pub init_containers: Unsupported,
    #[serde(default, skip_serializing)]
    pub daemon: Unsupported,
    #[serde(default, skip_serializing)]
    pub timeout: Unsupported,
    #[serde(default, skip_serializing)]
    pub pod_spec_patch: Unsupported,
}

impl Template {
    /// `dag`, `container` or `script`.
    pub fn kind(&self) -> &'static str {
        if self.dag.is_some() {
            "dag"
        } else if self.script.is_some() {
            "script"
        } else {
            "container"
        }
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
pub struct Inputs {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Outputs {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    #[serde(default, skip_serializing)]
    pub result: Unsupported,
    #[serde(default, skip_serializing)]
    pub exit_code: Unsupported,
}

/// A parameter in `arguments`, `inputs` or `outputs`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Parameter {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<AnyString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<AnyString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Allowed values (workflow arguments only are checked).
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub enum_values: Option<Vec<AnyString>>,
    #[serde(default, skip_serializing)]
    pub global_name: Unsupported,
}

/// `outputs.parameters[].valueFrom`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ValueFrom {
    /// A leaf's output: the file the step writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A DAG's output: `{{tasks.A.outputs.parameters.x}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    /// Used when the file is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<AnyString>,
    #[serde(default, skip_serializing)]
    pub json_path: Unsupported,
    #[serde(default, skip_serializing)]
    pub jq_filter: Unsupported,
    #[serde(default, skip_serializing)]
    pub config_map_key_ref: Unsupported,
    #[serde(default, skip_serializing)]
    pub expression: Unsupported,
    #[serde(default, skip_serializing)]
    pub supplied: Unsupported,
    #[serde(default, skip_serializing)]
    pub event: Unsupported,
}

/// An artifact in `arguments`, `inputs` or `outputs`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Artifact {
    pub name: String,
    /// Where a leaf reads (inputs) or writes (outputs) it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `{{tasks.A.outputs.artifacts.model}}` or `{{inputs.artifacts.x}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    #[serde(default, skip_serializing)]
    pub archive: Ignored,
    #[serde(default, skip_serializing)]
    pub mode: Ignored,
    #[serde(default, skip_serializing)]
    pub s3: Unsupported,
    #[serde(default, skip_serializing)]
    pub gcs: Unsupported,
    #[serde(default, skip_serializing)]
    pub http: Unsupported,
    #[serde(default, skip_serializing)]
    pub git: Unsupported,
    #[serde(default, skip_serializing)]
    pub raw: Unsupported,
    #[serde(default, skip_serializing)]
    pub artifactory: Unsupported,
    #[serde(default, skip_serializing)]
    pub hdfs: Unsupported,
    #[serde(default, skip_serializing)]
    pub oss: Unsupported,
    #[serde(default, skip_serializing)]
    pub azure: Unsupported,
    #[serde(default, skip_serializing)]
    pub sub_path: Unsupported,
    #[serde(default, skip_serializing)]
    pub global_name: Unsupported,
}

/// `dag:`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DagTemplate {
    #[serde(default)]
    pub tasks: Vec<DagTask>,
    /// Default true: after an unhandled failure no new task starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_fast: Option<bool>,
    /// Space-separated task names: run only these and what they need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DagTask {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Arguments>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_items: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_param: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_on: Option<ContinueOn>,

    #[serde(default, skip_serializing)]
    pub template_ref: Unsupported,
    #[serde(default, skip_serializing)]
    pub with_sequence: Unsupported,
    #[serde(default, skip_serializing)]
    pub on_exit: Unsupported,
    #[serde(default, skip_serializing)]
    pub hooks: Unsupported,
    #[serde(default, skip_serializing)]
    pub inline: Unsupported,
}

impl DagTask {
    pub fn parameters(&self) -> &[Parameter] {
        self.arguments.as_ref().map_or(&[], |a| &a.parameters)
    }
    pub fn artifacts(&self) -> &[Artifact] {
        self.arguments.as_ref().map_or(&[], |a| &a.artifacts)
    }
    pub fn continues_on_failed(&self) -> bool {
        self.continue_on.as_ref().is_some_and(|c| c.failed)
    }
    pub fn continues_on_error(&self) -> bool {
        self.continue_on.as_ref().is_some_and(|c| c.error)
    }
}

/// A task's `arguments`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Arguments {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContinueOn {
    #[serde(default)]
    pub failed: bool,
    #[serde(default)]
    pub error: bool,
}

/// `container:`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Container {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    #[serde(default, skip_serializing)]
    pub name: Ignored,
    #[serde(default, skip_serializing)]
    pub image_pull_policy: Ignored,
    #[serde(default, skip_serializing)]
    pub volume_mounts: Ignored,
    #[serde(default, skip_serializing)]
    pub security_context: Ignored,
    #[serde(default, skip_serializing)]
    pub ports: Ignored,

    #[serde(default, skip_serializing)]
    pub env_from: Unsupported,
    #[serde(default, skip_serializing)]
    pub stdin: Unsupported,
    #[serde(default, skip_serializing)]
    pub lifecycle: Unsupported,
}

/// `script:`: a container whose `source` is written to a file and run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Script {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default)]
    pub source: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    #[serde(default, skip_serializing)]
    pub name: Ignored,
    #[serde(default, skip_serializing)]
    pub image_pull_policy: Ignored,
    #[serde(default, skip_serializing)]
    pub volume_mounts: Ignored,
    #[serde(default, skip_serializing)]
    pub security_context: Ignored,
    #[serde(default, skip_serializing)]
    pub ports: Ignored,

    #[serde(default, skip_serializing)]
    pub env_from: Unsupported,
    #[serde(default, skip_serializing)]
    pub stdin: Unsupported,
    #[serde(default, skip_serializing)]
    pub lifecycle: Unsupported,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<AnyString>,
    #[serde(default, skip_serializing)]
    pub value_from: Unsupported,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceList>,
}

/// `resources.limits` / `resources.requests`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceList {
    #[serde(
        default,
        rename = "nvidia.com/gpu",
        skip_serializing_if = "Option::is_none"
    )]
    pub gpu: Option<AnyString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
    #[serde(default, rename = "ephemeral-storage", skip_serializing)]
    pub ephemeral_storage: Ignored,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryStrategy {
    /// Retries after the first attempt; absent means unlimited in Argo, which
    /// we cap (see [`crate::validate::MAX_RETRY_LIMIT`]).
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
    #[serde(default, skip_serializing)]
    pub cap: Unsupported,
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

/// Parse a Go-style duration (`"1h30m"`, `"500ms"`, `"2d"`) or a bare number
/// of seconds (`"10"`) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || {
        format!("invalid duration {s:?} (use seconds such as \"30\" or units: \"500ms\", \"30s\", \"2m\", \"1h\", \"1d\")")
    };
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return Err(bad());
        }
        return Ok((secs * 1000.0).round() as u64);
    }
    let mut total = 0.0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            _ => return Err(bad()),
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Ok(total.round() as u64)
}

/// Parse without semantic validation: structure and unknown fields only.
pub fn parse_unvalidated(text: &str) -> Result<Workflow, FieldError> {
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        let value = serde_yaml_ng::Value::deserialize(de)
            .map_err(|e| FieldError::new("", format!("malformed YAML: {e}")))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    let value = match docs.len() {
        0 => return Err(FieldError::new("", "no workflow found (the file is empty)")),
        1 => docs.pop().unwrap_or_default(),
        n => {
            return Err(FieldError::new(
                "",
                format!("expected one Workflow, found {n} documents"),
            ))
        }
    };
    let map = value.as_mapping().ok_or_else(|| {
        FieldError::new(
            "",
            "expected a mapping with apiVersion, kind, metadata and spec",
        )
    })?;
    match map.get("apiVersion").map(|v| v.as_str()) {
        None => {
            return Err(FieldError::new(
                "apiVersion",
                format!("missing field (expected `apiVersion: {ARGO_API_VERSION}`)"),
            ))
        }
        Some(Some(ARGO_API_VERSION)) => {}
        Some(other) => {
            return Err(FieldError::new(
                "apiVersion",
                format!(
                    "unsupported version {:?} (expected `{ARGO_API_VERSION}`)",
                    other.unwrap_or("")
                ),
            ))
        }
    }
    match map.get("kind").map(|v| v.as_str()) {
        Some(Some("Workflow")) => {}
        Some(Some(k @ ("WorkflowTemplate" | "ClusterWorkflowTemplate" | "CronWorkflow"))) => {
            return Err(FieldError::new(
                "kind",
                format!("{k} is not supported; submit a `kind: Workflow`"),
            ))
        }
        None => {
            return Err(FieldError::new(
                "kind",
                "missing field (expected `kind: Workflow`)",
            ))
        }
        Some(other) => {
            return Err(FieldError::new(
                "kind",
                format!("expected `Workflow`, got {:?}", other.unwrap_or("")),
            ))
        }
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        FieldError::new(path, e.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("10").unwrap(), 10_000);
        assert_eq!(parse_duration_ms("1m30s").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("500ms").unwrap(), 500);
        assert_eq!(parse_duration_ms("2h").unwrap(), 7_200_000);
        assert_eq!(parse_duration_ms("1d").unwrap(), 86_400_000);
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("5x").is_err());
        assert!(parse_duration_ms("-3").is_err());
    }
}
