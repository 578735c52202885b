//! The validator's shared state and helpers: the workflow being checked,
//! the errors found so far (in document order), where a `{{...}}` string
//! sits, and the "not supported" check every part uses.

use std::collections::BTreeSet;

use gpuctl_common::api::FieldError;

use crate::spec::{DagTask, Template, Unsupported, Workflow};

pub(super) struct Validator<'a> {
    pub(super) wf: &'a Workflow,
    pub(super) errors: Vec<FieldError>,
}

/// A DAG's tasks, which of them may be named (`None`: all), and the task
/// doing the naming.
pub(super) type DagRefs<'a> = (&'a [DagTask], Option<&'a BTreeSet<usize>>, Option<&'a str>);

/// Where a string with `{{...}}` sits, which decides what it may refer to.
#[derive(Clone, Copy)]
pub(super) struct VarCtx<'a> {
    /// Whose `inputs.*` are in reach.
    pub(super) tmpl: &'a Template,
    /// In a DAG task or DAG output: the DAG and which of its tasks may be
    /// named (`None`: any task of the DAG).
    pub(super) dag: Option<DagRefs<'a>>,
    pub(super) item: bool,
    pub(super) leaf: bool,
    /// An artifact `from`: `tasks.X.outputs.artifacts.Y`, `inputs.artifacts.Y`.
    pub(super) artifact: bool,
    /// `dag` holds the steps of a steps template: they are named
    /// `steps.X`, not `tasks.X`.
    pub(super) steps: bool,
}

/// One error for each of `fields` that is set: Argo has it, gpuctl does
/// not; `why` may say what to use instead.
pub(super) fn unsupported(
    errors: &mut Vec<FieldError>,
    path: &str,
    fields: &[(&str, &Unsupported)],
    why: &str,
) {
    for (name, f) in fields {
        if f.is_some() {
            let sep = if path.is_empty() { "" } else { "." };
            errors.push(FieldError::new(
                format!("{path}{sep}{name}"),
                format!("`{name}` is not supported by gpuctl{why}"),
            ));
        }
    }
}

impl Validator<'_> {
    pub(super) fn err(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError::new(path, reason));
    }

    /// `" (templates: a, b)"` for an error about a template name.
    pub(super) fn known_templates(&self) -> String {
        let names: Vec<&str> = self
            .wf
            .spec
            .templates
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        if names.is_empty() {
            String::new()
        } else {
            format!(" (templates: {})", names.join(", "))
        }
    }
}
