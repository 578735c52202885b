//! Where an input artifact comes from besides `from`: `raw` content written
//! in the document, and `fromExpression`, an expr-lang expression that
//! picks one of the artifacts in reach
//! (`cond ? tasks.a.outputs.artifacts.x : tasks.b.outputs.artifacts.y`).

use std::collections::BTreeMap;

use gpuctl_common::artifact::ArtifactKey;

use super::node::InputArtifact;
use crate::expr::{eval_expr, to_text};
use crate::spec::Artifact;
use crate::vars::{substitute, Scope};

/// Marks an artifact in an expression's variables: an expression's value
/// is an artifact when it is one of these texts.
const MARK: &str = "\u{1}artifact\u{1}";

/// The artifact `expr` picks among `artifacts`, with `vars` in reach.
pub(super) fn artifact_from_expression(
    expr: &str,
    vars: &Scope,
    artifacts: &BTreeMap<String, ArtifactKey>,
) -> Result<ArtifactKey, String> {
    let mut vars = vars.clone();
    for k in artifacts.keys() {
        vars.insert(k.clone(), format!("{MARK}{k}"));
    }
    let v = eval_expr(expr, &vars).map_err(|e| format!("fromExpression: {e}"))?;
    let text = to_text(&v);
    text.strip_prefix(MARK)
        .and_then(|k| artifacts.get(k))
        .cloned()
        .ok_or_else(|| format!("fromExpression {expr:?} gave {text:?}, not an artifact in reach"))
}

/// A `raw` input artifact `a` of node `node_id` (named `name`, placed at
/// the template's `path`), its content substituted with `vars`.
pub(super) fn raw_input(
    workflow: &str,
    node_id: &str,
    name: &str,
    path: Option<&String>,
    a: &Artifact,
    vars: &Scope,
) -> Option<Result<InputArtifact, String>> {
    let raw = a.raw.as_ref()?;
    Some(
        substitute(&raw.data, vars)
            .map_err(|e| format!("input artifact {name:?}: raw.data: {e}"))
            .map(|data| InputArtifact {
                name: name.to_string(),
                path: path.cloned(),
                from: ArtifactKey {
                    workflow: workflow.to_string(),
                    step: node_id.to_string(),
                    name: name.to_string(),
                },
                raw: Some(data),
            }),
    )
}

/// `vars` with a template's resolved input parameters as
/// `inputs.parameters.*`, for the template's own `raw` defaults.
pub(super) fn with_inputs(vars: &Scope, params: &BTreeMap<String, String>) -> Scope {
    let mut v = vars.clone();
    for (k, val) in params {
        v.insert(format!("inputs.parameters.{k}"), val.clone());
    }
    v
}
