//! `gpuctl suspend` and `gpuctl resume`: a workflow stops starting steps
//! (running ones finish) and starts again, as `argo suspend` and
//! `argo resume`; resuming also ends the workflow's waiting `suspend` steps.

use crate::cli::is_workflow_word;
use crate::commands::ctx::Ctx;
use crate::error::{Error, Result};
use crate::stdout::out;

/// The workflow a `suspend`/`resume` names: `NAME`, `workflow/NAME` or
/// `workflow NAME`.
pub(crate) fn workflow_name(verb: &str, first: &str, second: Option<String>) -> Result<String> {
    let name = match second {
        Some(n) if is_workflow_word(first) => n,
        Some(n) => {
            return Err(Error::Usage(format!(
                "{verb} takes one workflow name (or `workflow NAME`); got {first:?} and {n:?}"
            )))
        }
        None => match first.split_once('/') {
            Some((k, n)) if is_workflow_word(k) => n.to_string(),
            Some(_) => {
                return Err(Error::Usage(format!(
                "{verb} works on workflows: `gpuctl {verb} NAME` or `workflow/NAME`; got {first:?}"
            )))
            }
            None => first.to_string(),
        },
    };
    if name.is_empty() {
        return Err(Error::Usage(format!(
            "{verb}: the workflow's name is empty"
        )));
    }
    Ok(name)
}

/// `action` is "suspend" or "resume".
pub(crate) async fn cmd_suspend(cx: &mut Ctx, name: &str, action: &str) -> Result<u8> {
    super::cancel::workflow_action(cx, name, action).await?;
    let done = if action == "suspend" {
        "suspended"
    } else {
        "resumed"
    };
    out(&format!("workflow/{name} {done}\n"))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workflow_is_named_as_argo_names_it_or_as_gpuctl_does() {
        assert_eq!(workflow_name("resume", "wf1", None).unwrap(), "wf1");
        assert_eq!(
            workflow_name("resume", "workflow/wf1", None).unwrap(),
            "wf1"
        );
        assert_eq!(
            workflow_name("resume", "workflow", Some("wf1".into())).unwrap(),
            "wf1"
        );
        assert!(workflow_name("resume", "job/x", None).is_err());
        assert!(workflow_name("resume", "a", Some("b".into())).is_err());
        assert!(workflow_name("resume", "workflow/", None).is_err());
    }
}
