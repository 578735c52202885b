//! A CronWorkflow's `stopStrategy` (Argo 3.6 and later): an expr-lang
//! `expression` over `cronworkflow.succeeded` and `cronworkflow.failed`
//! (how many of its workflows have succeeded and failed so far; a run that
//! could not be submitted counts as failed) and `cronworkflow.name`. Once
//! it holds, the CronWorkflow is `Stopped` and schedules nothing more.
//! Argo 3.6's release candidates called the field `condition`, with the
//! bare names `succeeded` and `failed`; 3.6.0 renamed both, and so the old
//! form is refused with the new one named.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::expr::{eval_ast, parse_expr, to_text};
use crate::spec::Unsupported;

/// `spec.stopStrategy`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StopStrategy {
    #[serde(default)]
    pub expression: String,
    /// Argo 3.6's pre-release name of `expression`; refused.
    #[serde(default, skip_serializing)]
    pub condition: Unsupported,
}

/// What the CronWorkflow's counters are when its expression is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub succeeded: u64,
    pub failed: u64,
}

impl StopStrategy {
    /// Whether the CronWorkflow `name` stops with these counts; an error
    /// says why the expression cannot be evaluated.
    pub fn holds(&self, name: &str, c: Counts) -> Result<bool, String> {
        let src = &self.expression;
        let ast = parse_expr(src).map_err(|e| format!("syntax error in expression {src:?} {e}"))?;
        let mut env = Map::new();
        env.insert(
            "cronworkflow".into(),
            json!({"name": name, "succeeded": c.succeeded, "failed": c.failed}),
        );
        match eval_ast(&ast, &env) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "expression {src:?} gave {}, not true or false",
                to_text(&other)
            )),
            Err(e) => Err(format!("expression {src:?}: {e}")),
        }
    }

    /// Problems as (field under `spec.stopStrategy`, reason).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if self.condition.is_some() {
            v.push((
                "condition",
                "`condition` is the name Argo 3.6's release candidates used; Argo 3.6.0 and later read `expression`, with `cronworkflow.succeeded` and `cronworkflow.failed` (e.g. `expression: \"cronworkflow.failed >= 3\"`)".to_string(),
            ));
            return v;
        }
        if self.expression.trim().is_empty() {
            v.push((
                "expression",
                "missing: e.g. `expression: \"cronworkflow.failed >= 3\"`".to_string(),
            ));
        } else if let Err(e) = self.holds("x", Counts::default()) {
            v.push((
                "expression",
                format!(
                    "{e} (known: cronworkflow.succeeded, cronworkflow.failed, cronworkflow.name)"
                ),
            ));
        }
        v
    }
}
