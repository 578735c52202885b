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

/// Argo fields that only mean something to Kubernetes (pods, volumes,
/// probes, the cluster's scheduler and API objects).
const KUBERNETES_ONLY: &[&str] = &[
    "resource",
    "sidecars",
    "initContainers",
    "daemon",
    "podSpecPatch",
    "volumeClaimTemplates",
    "volumeClaimGC",
    "envFrom",
    "valueFrom",
    "configMapKeyRef",
    "lifecycle",
    "stdin",
    "stdinOnce",
    "tty",
    "affinity",
    "schedulerName",
    "hostNetwork",
    "dnsPolicy",
    "dnsConfig",
    "hostAliases",
    "podDisruptionBudget",
    "automountServiceAccountToken",
    "executor",
    "priority",
    "priorityClassName",
    "podPriority",
    "podPriorityClassName",
    "readinessProbe",
    "livenessProbe",
    "startupProbe",
    "volumeDevices",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "restartPolicy",
    "resizePolicy",
];

/// One error for each of `fields` that is set. A Kubernetes-only field
/// says so; any other valid Argo field gpuctl lacks is "not supported
/// yet", and `why` may say what to use instead.
pub(super) fn unsupported(
    errors: &mut Vec<FieldError>,
    path: &str,
    fields: &[(&str, &Unsupported)],
    why: &str,
) {
    for (name, f) in fields {
        if f.is_some() {
            let sep = if path.is_empty() { "" } else { "." };
            let at = format!("{path}{sep}{name}");
            let reason = if KUBERNETES_ONLY.contains(name) {
                format!("Kubernetes-only Argo feature {name:?} at {at}: gpuctl runs steps as tasks; see README")
            } else {
                format!("`{name}` is not supported yet by gpuctl{why}; see README")
            };
            errors.push(FieldError::new(at, reason));
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
