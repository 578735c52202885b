//! Leaf templates: `container` and `script`, their environment and the
//! resources they ask for.

use gpuctl_common::api::{Bytes, Cpu};
use serde::{Deserialize, Serialize};

use super::scalar::{AnyString, Ignored, Unsupported};

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
    #[serde(default, skip_serializing)]
    pub readiness_probe: Unsupported,
    #[serde(default, skip_serializing)]
    pub liveness_probe: Unsupported,
    #[serde(default, skip_serializing)]
    pub startup_probe: Unsupported,
    #[serde(default, skip_serializing)]
    pub volume_devices: Unsupported,
    #[serde(default, skip_serializing)]
    pub termination_message_path: Unsupported,
    #[serde(default, skip_serializing)]
    pub termination_message_policy: Unsupported,
    #[serde(default, skip_serializing)]
    pub tty: Unsupported,
    #[serde(default, skip_serializing)]
    pub stdin_once: Unsupported,
    #[serde(default, skip_serializing)]
    pub restart_policy: Unsupported,
    #[serde(default, skip_serializing)]
    pub resize_policy: Unsupported,
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
    #[serde(default, skip_serializing)]
    pub readiness_probe: Unsupported,
    #[serde(default, skip_serializing)]
    pub liveness_probe: Unsupported,
    #[serde(default, skip_serializing)]
    pub startup_probe: Unsupported,
    #[serde(default, skip_serializing)]
    pub volume_devices: Unsupported,
    #[serde(default, skip_serializing)]
    pub termination_message_path: Unsupported,
    #[serde(default, skip_serializing)]
    pub termination_message_policy: Unsupported,
    #[serde(default, skip_serializing)]
    pub tty: Unsupported,
    #[serde(default, skip_serializing)]
    pub stdin_once: Unsupported,
    #[serde(default, skip_serializing)]
    pub restart_policy: Unsupported,
    #[serde(default, skip_serializing)]
    pub resize_policy: Unsupported,
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
