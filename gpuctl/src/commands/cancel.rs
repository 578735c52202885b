//! `gpuctl cancel` and `gpuctl delete`: stopping a job or workflow, and
//! forgetting a finished one (or an endpoint).

use gpuctl_proto::v1::{CancelRequest, DeleteRequest};

use crate::cli::Kind;
use crate::client::Target;
use crate::commands::ctx::{job_target, Ctx};
use crate::error::{Error, Result};
use crate::stdout::out;

/// `Control.Cancel` on workflow `name` with `action`: "" cancels it,
/// "suspend" and "resume" do what they say.
pub(crate) async fn workflow_action(cx: &mut Ctx, name: &str, action: &str) -> Result<()> {
    let req = CancelRequest {
        kind: "workflows".into(),
        name: name.to_string(),
        action: action.to_string(),
    };
    let target = Some(Target {
        kind: "workflow",
        name,
    });
    cx.call(target, |mut c| {
        let req = req.clone();
        async move { c.cancel(req).await }
    })
    .await?;
    Ok(())
}

/// `cancel workflow NAME`: its running steps are stopped, nothing new starts.
pub(crate) async fn cmd_cancel_workflow(cx: &mut Ctx, name: &str) -> Result<u8> {
    workflow_action(cx, name, "").await?;
    out(&format!("workflow/{name} cancelled\n"))?;
    Ok(0)
}

/// `cancel JOB`: its tasks are stopped.
pub(crate) async fn cmd_cancel_job(cx: &mut Ctx, job: &str) -> Result<u8> {
    let req = CancelRequest {
        kind: "jobs".into(),
        name: job.to_string(),
        action: String::new(),
    };
    cx.call(job_target(job), |mut c| {
        let req = req.clone();
        async move { c.cancel(req).await }
    })
    .await?;
    out(&format!("job/{job} cancelled\n"))?;
    Ok(0)
}

pub(crate) async fn cmd_delete(cx: &mut Ctx, kind: Kind, name: &str) -> Result<u8> {
    if !matches!(
        kind,
        Kind::Jobs
            | Kind::Workflows
            | Kind::Endpoints
            | Kind::WorkflowTemplates
            | Kind::ClusterWorkflowTemplates
            | Kind::CronWorkflows
    ) {
        return Err(Error::Usage(format!(
            "{} cannot be deleted; jobs, workflows, endpoints, workflowtemplates, clusterworkflowtemplates and cronworkflows can",
            kind.api_name()
        )));
    }
    let req = DeleteRequest {
        kind: kind.api_name().into(),
        name: name.to_string(),
    };
    cx.call(
        Some(Target {
            kind: kind.singular(),
            name,
        }),
        |mut c| {
            let req = req.clone();
            async move { c.delete(req).await }
        },
    )
    .await?;
    out(&format!(
        "{}/{name} deleted
",
        kind.singular()
    ))?;
    Ok(0)
}
