//! Parameters and artifacts as `arguments`, `inputs` and `outputs` declare
//! them.

use serde::{Deserialize, Serialize};

use super::scalar::{AnyString, Ignored, Unsupported};

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
    /// A DAG's or steps template's output as an expr-lang expression over
    /// its tasks (`tasks.A.outputs.result`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
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
    /// Inline content: the file a step finds at `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawArtifact>,
    /// An expression that picks the artifact
    /// (`cond ? tasks.a.outputs.artifacts.x : tasks.b.outputs.artifacts.y`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_expression: Option<String>,
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

/// `raw:` an artifact's content written in the document.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawArtifact {
    pub data: String,
}
