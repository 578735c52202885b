//! `gpuctl logs`: a task's log, streamed from its node through the
//! scheduler, or the logs of a workflow's steps one after another.

use gpuctl_proto::v1::LogsRequest;

use crate::client::status_error;
use crate::commands::ctx::{job_target, Ctx};
use crate::error::{Error, Result};
use crate::stdout::{finish_line, out, out_bytes};
use crate::workflows;

pub(crate) async fn cmd_logs(
    cx: &mut Ctx,
    job: &str,
    task: u32,
    follow: bool,
    attempt: u32,
) -> Result<u8> {
    let req = LogsRequest {
        job: job.into(),
        task_index: task,
        follow,
        attempt,
    };
    // Only opening the stream fails over; a stream that breaks ends the command.
    let mut stream = cx
        .call(job_target(job), |mut c| {
            let req = req.clone();
            async move { c.logs(req).await }
        })
        .await?
        .into_inner();
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => out_bytes(&chunk.data)?,
            Ok(None) => return Ok(0),
            Err(s) => return Err(status_error(s, job_target(job), cx.urls())),
        }
    }
}

pub(crate) async fn cmd_workflow_logs(
    cx: &mut Ctx,
    name: &str,
    step: Option<&str>,
    follow: bool,
) -> Result<u8> {
    let docs = cx.get_workflows(Some(name)).await?;
    let Some(w) = docs.first() else {
        return Err(Error::NotFound {
            kind: "workflow",
            name: name.to_string(),
        });
    };
    if let Some(places) = step.and_then(|s| workflows::ambiguous_step(w, s)) {
        return Err(Error::Other(format!(
            "step {:?} of workflow {name:?} is in more than one place: {}; give one of these paths to --step",
            step.unwrap_or_default(),
            places.join(", ")
        )));
    }
    let steps = workflows::step_jobs(w, step);
    if steps.is_empty() {
        return Err(Error::Other(match step {
            Some(s) => format!(
                "workflow {name:?} has no step {s:?} that ran; see gpuctl describe workflow {name}"
            ),
            None => format!("no step of workflow {name:?} has run yet"),
        }));
    }
    let many = steps.len() > 1;
    for (display, job) in steps {
        if many {
            finish_line()?;
            out(&format!("==> {display} ({job}) <==\n"))?;
        }
        // A step whose job was never placed has no log yet: say so, go on.
        if let Err(e) = cmd_logs(cx, &job, 0, follow && !many, 0).await {
            if !many {
                return Err(e);
            }
            out(&format!("({e})\n"))?;
        }
    }
    Ok(0)
}
