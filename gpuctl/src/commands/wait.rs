//! `gpuctl wait`: block until a job or workflow ends, in bounded `Wait`
//! calls so that a failover or a lost answer costs one call, not the wait.

use std::time::Duration;

use gpuctl_common::api::{Job, JobPhase};
use gpuctl_proto::v1::{RunPhase, WaitRequest};

use crate::commands::ctx::{job_target, Ctx};
use crate::duration::HumanDuration;
use crate::error::{Result, EXIT_FAILURE, EXIT_TIMEOUT};
use crate::stdout::out;
use crate::workflows;

/// Longest single `Wait` call; the client loops until its own deadline.
const WAIT_CHUNK: Duration = Duration::from_secs(30);
/// Slack for a server that overruns the timeout it was given.
const WAIT_SLACK: Duration = Duration::from_secs(10);

pub(crate) async fn cmd_wait(cx: &mut Ctx, target: &str, timeout: &HumanDuration) -> Result<u8> {
    // `workflow/NAME` and `job/NAME` go to the server as they are; the
    // messages name the object once.
    let name = target.split_once('/').map_or(target, |(_, n)| n);
    let start = tokio::time::Instant::now();
    let deadline = (!timeout.duration.is_zero()).then(|| start + timeout.duration);
    let mut phase = String::from("Pending");
    loop {
        let chunk = match deadline {
            Some(d) => d
                .saturating_duration_since(tokio::time::Instant::now())
                .min(WAIT_CHUNK),
            None => WAIT_CHUNK,
        };
        // timeout_ms 0 would mean "for ever" to the server.
        let req = WaitRequest {
            name: target.into(),
            timeout_ms: (chunk.as_millis() as u64).max(1),
        };
        let call = cx.call(job_target(name), |mut c| {
            let req = req.clone();
            async move { c.wait(req).await }
        });
        match tokio::time::timeout(chunk + WAIT_SLACK, call).await {
            Err(_) => {}
            Ok(Err(e)) => return Err(e),
            Ok(Ok(resp)) => {
                let r = resp.into_inner();
                if let Some(name) = phase_name(r.phase()) {
                    phase = name.to_string();
                }
                let job: Option<Job> = serde_json::from_str(&r.object_json).ok();
                let job_phase = job.as_ref().map(|j| j.status.phase);
                let wf: Option<workflows::WorkflowDoc> = if job.is_none() {
                    serde_json::from_str(&r.object_json).ok()
                } else {
                    None
                };
                let kind = if wf.is_some() { "workflow" } else { "job" };
                if r.finished || job_phase.is_some_and(JobPhase::is_terminal) {
                    let message = job
                        .as_ref()
                        .and_then(|j| j.status.message.clone())
                        .or_else(|| wf.as_ref().and_then(|w| w.status.run.message.clone()))
                        .unwrap_or_else(|| "no message".into());
                    return if job_phase == Some(JobPhase::Succeeded)
                        || r.phase() == RunPhase::Succeeded
                    {
                        out(&format!("{kind}/{name} Succeeded\n"))?;
                        Ok(0)
                    } else {
                        eprintln!("{kind}/{name} {phase}: {message}");
                        Ok(EXIT_FAILURE)
                    };
                }
            }
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            eprintln!("error: timed out after {timeout} waiting for job/{name} (phase {phase})");
            return Ok(EXIT_TIMEOUT);
        }
    }
}

/// A phase as `Wait` reports it, by the name users see in `gpuctl get`;
/// `None` when the server named none (or one this client does not know).
fn phase_name(p: RunPhase) -> Option<&'static str> {
    match p {
        RunPhase::Unspecified => None,
        RunPhase::Pending => Some("Pending"),
        RunPhase::Running => Some("Running"),
        RunPhase::Succeeded => Some("Succeeded"),
        RunPhase::Failed => Some("Failed"),
        RunPhase::Cancelled => Some("Cancelled"),
        RunPhase::Error => Some("Error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_are_the_ones_get_shows() {
        let jobs = [
            (RunPhase::Pending, JobPhase::Pending),
            (RunPhase::Running, JobPhase::Running),
            (RunPhase::Succeeded, JobPhase::Succeeded),
            (RunPhase::Failed, JobPhase::Failed),
            (RunPhase::Cancelled, JobPhase::Cancelled),
        ];
        for (sent, shown) in jobs {
            assert_eq!(phase_name(sent), Some(shown.to_string().as_str()));
        }
        let error = gpuctl_pipelines::WorkflowPhase::Error.to_string();
        assert_eq!(phase_name(RunPhase::Error), Some(error.as_str()));
        assert_eq!(phase_name(RunPhase::Unspecified), None);
    }
}
