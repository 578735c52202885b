//! A `dag` template: its tasks, their dependencies, fan-out, conditions and
//! the arguments they pass to the templates they call.

use serde::{Deserialize, Serialize};

use super::io::{Artifact, Parameter};
use super::scalar::{AnyString, Unsupported};

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

/// One step of a `steps` template. Argo's step has the fields of a DAG
/// task but `dependencies` and `depends` (its group decides when it runs);
/// validation refuses those two in a step with that reason.
pub type WorkflowStep = DagTask;

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

    /// A template of a `WorkflowTemplate`, copied in at submit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<super::refs::TemplateRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_sequence: Option<Sequence>,
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

/// `withSequence`: numbers from `start` (default 0), `count` of them or up
/// to `end` (inclusive, counting down when below `start`), each written
/// with `format` (printf-style, default `%d`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sequence {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<AnyString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<AnyString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<AnyString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
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
