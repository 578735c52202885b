//! A `dag` template: its tasks, their dependencies, fan-out, conditions and
//! the arguments they pass to the templates they call.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::io::{Artifact, Parameter};
use super::scalar::AnyString;

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
    /// A template run after the task ends, whatever its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_exit: Option<String>,
    /// `hooks.exit`: the same with arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
    /// The template written in place instead of naming one, kept as
    /// written: read as a template when it is hoisted into
    /// `spec.templates` before validation (`spec/inline.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<serde_json::Value>,
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

/// One lifecycle hook: the template it runs and its arguments.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LifecycleHook {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Arguments>,
    /// The handler's template in a `WorkflowTemplate` (resolved at
    /// submit, as a task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<super::refs::TemplateRef>,
    /// When the hook runs (hooks other than `exit`); not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// `hooks:` by name (`exit`, or a name of the user's with an expression).
pub type Hooks = BTreeMap<String, LifecycleHook>;

impl DagTask {
    /// The exit handler: `hooks.exit`, else `onExit` (Argo's older form of
    /// the same hook, without arguments).
    pub fn exit_hook(&self) -> Option<LifecycleHook> {
        if let Some(h) = self.hooks.as_ref().and_then(|h| h.get("exit")) {
            return Some(h.clone());
        }
        self.on_exit.as_ref().map(|t| LifecycleHook {
            template: Some(t.clone()),
            ..Default::default()
        })
    }
}
