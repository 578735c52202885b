//! What crosses between the run and its shell: the launch spec of a step,
//! how a step ended, what a tick asks for, and the run's errors.

use std::collections::{BTreeMap, BTreeSet};

use gpuctl_common::api::{Bytes, Cpu, FieldError};
use gpuctl_common::artifact::ArtifactKey;
use serde::{Deserialize, Serialize};

use super::node::InputArtifact;

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
    /// The container image: the step's job runs in it on nodes with a
    /// container runtime (`gpu-node --runtime podman`).
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
    /// Keep the step's standard output as `outputs.result`: always for a
    /// script, and for a container when the workflow refers to a result
    /// (Argo captures a container's standard output too).
    #[serde(default)]
    pub capture_result: bool,
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
    /// Standard output (for `outputs.result`): the run trims one final
    /// newline and keeps the last 256 KiB, as Argo does.
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

/// What [`Run::on_tick`](crate::Run::on_tick) asks of the shell.
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
