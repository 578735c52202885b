//! `gpuctl rollout status|history|undo|promote endpoint/NAME`, as kubectl's
//! `rollout` commands: `status` follows the endpoint until its rollout is
//! complete or failed; `undo` and `promote` are `Control.Rollout` calls.

use std::time::Duration;

use gpuctl_common::endpoint::{Endpoint, RolloutPhase};
use gpuctl_proto::v1::RolloutRequest;

use crate::cli::RolloutCommand;
use crate::client::Target;
use crate::commands::ctx::Ctx;
use crate::error::{Error, Result, EXIT_FAILURE, EXIT_TIMEOUT};
use crate::stdout::out;

/// How often `rollout status` looks again.
const POLL: Duration = Duration::from_millis(250);

/// `endpoint/NAME`, `endpoints/NAME`, `ep/NAME`, or `endpoint NAME`: the name.
fn endpoint_name(target: &str, name: Option<&str>) -> Result<String> {
    let (kind, n) = match (target.split_once('/'), name) {
        (Some((k, n)), None) => (k, n),
        (None, Some(n)) => (target, n),
        _ => {
            return Err(Error::Usage(format!(
                "name the endpoint as endpoint/NAME or endpoint NAME, got {target:?}{}",
                name.map(|n| format!(" {n:?}")).unwrap_or_default()
            )))
        }
    };
    if !matches!(kind, "endpoint" | "endpoints" | "ep") {
        return Err(Error::Usage(format!(
            "only endpoints have rollouts (endpoint/NAME), got {kind:?}"
        )));
    }
    if n.is_empty() {
        return Err(Error::Usage("the endpoint's name is empty".into()));
    }
    Ok(n.to_string())
}

pub(crate) async fn cmd_rollout(cx: &mut Ctx, command: RolloutCommand) -> Result<u8> {
    match command {
        RolloutCommand::Status {
            target,
            name,
            timeout,
            no_wait,
        } => {
            let name = endpoint_name(&target, name.as_deref())?;
            status(cx, &name, timeout.duration, no_wait).await
        }
        RolloutCommand::History {
            target,
            name,
            revision,
        } => {
            let name = endpoint_name(&target, name.as_deref())?;
            let ep = get(cx, &name).await?;
            out(&history(&ep, revision)?)?;
            Ok(0)
        }
        RolloutCommand::Undo {
            target,
            name,
            to_revision,
        } => {
            let name = endpoint_name(&target, name.as_deref())?;
            let ep = call(cx, &name, "undo", to_revision.unwrap_or(0)).await?;
            let from = ep
                .status
                .revisions
                .last()
                .map(|r| r.cause.clone())
                .unwrap_or_default();
            out(&format!(
                "endpoint/{name} rolled back: revision {} ({from})\n",
                ep.status.latest_revision
            ))?;
            Ok(0)
        }
        RolloutCommand::Promote { target, name } => {
            let name = endpoint_name(&target, name.as_deref())?;
            let ep = call(cx, &name, "promote", 0).await?;
            out(&format!(
                "endpoint/{name} promoted: revision {} gets all requests once its replicas are ready\n",
                ep.status.latest_revision
            ))?;
            Ok(0)
        }
    }
}

async fn get(cx: &mut Ctx, name: &str) -> Result<Endpoint> {
    cx.get_endpoints(Some(name))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::NotFound {
            kind: "endpoint",
            name: name.to_string(),
        })
}

async fn call(cx: &mut Ctx, name: &str, action: &str, to_revision: u64) -> Result<Endpoint> {
    let req = RolloutRequest {
        kind: "endpoint".into(),
        name: name.into(),
        action: action.into(),
        to_revision,
    };
    let target = Some(Target {
        kind: "endpoint",
        name,
    });
    let resp = cx
        .call(target, |mut c| {
            let req = req.clone();
            async move { c.rollout(req).await }
        })
        .await?;
    serde_json::from_str(&resp.into_inner().object_json)
        .map_err(|e| Error::Other(format!("the server's answer is not an endpoint: {e}")))
}

/// Where a rollout stands: `Some(Ok(line))` done, `Some(Err(why))` failed,
/// `None` still under way (with the line to print).
fn judge(ep: &Endpoint) -> (Option<std::result::Result<String, String>>, String) {
    let name = &ep.metadata.name;
    let latest = ep.status.latest_revision;
    let Some(r) = ep.status.rollout.as_ref().filter(|_| ep.rolling_out()) else {
        return (
            Some(Ok(format!(
                "endpoint \"{name}\" successfully rolled out (revision {latest})"
            ))),
            String::new(),
        );
    };
    match r.phase {
        RolloutPhase::Failed => (
            Some(Err(format!(
                "endpoint \"{name}\" rollout to revision {latest} failed: {}",
                r.message
            ))),
            String::new(),
        ),
        RolloutPhase::Canary
            if ep
                .revision_counts()
                .iter()
                .any(|c| c.revision == latest && c.ready > 0) =>
        {
            (
                Some(Ok(format!("endpoint \"{name}\" canary: {}", r.message))),
                String::new(),
            )
        }
        _ => (
            None,
            format!(
                "Waiting for endpoint \"{name}\" rollout to finish: {}",
                r.message
            ),
        ),
    }
}

async fn status(cx: &mut Ctx, name: &str, timeout: Duration, no_wait: bool) -> Result<u8> {
    let deadline = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout);
    let mut last = String::new();
    loop {
        let ep = get(cx, name).await?;
        let (done, line) = judge(&ep);
        match done {
            Some(Ok(msg)) => {
                out(&format!("{msg}\n"))?;
                return Ok(0);
            }
            Some(Err(why)) => return Err(Error::Other(why)),
            None => {
                if line != last {
                    out(&format!("{line}\n"))?;
                    last = line;
                }
            }
        }
        if no_wait {
            return Ok(EXIT_FAILURE);
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() + POLL > d) {
            eprintln!("error: timed out waiting for endpoint \"{name}\" to roll out");
            return Ok(EXIT_TIMEOUT);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `rollout history`: one line per revision, or one revision's spec.
fn history(ep: &Endpoint, revision: Option<u64>) -> Result<String> {
    let (latest, stable) = (ep.status.latest_revision, ep.status.stable_revision);
    if let Some(n) = revision {
        let Some(r) = ep.status.revisions.iter().find(|r| r.revision == n) else {
            let kept: Vec<String> = ep
                .status
                .revisions
                .iter()
                .map(|r| r.revision.to_string())
                .collect();
            return Err(Error::Other(format!(
                "endpoint {:?} has no revision {n} (kept: {})",
                ep.metadata.name,
                kept.join(", ")
            )));
        };
        let spec = serde_yaml_ng::to_string(&r.spec)
            .map_err(|e| Error::Other(format!("revision {n}: {e}")))?;
        return Ok(format!(
            "endpoint/{} revision {n} ({})\n{spec}",
            ep.metadata.name, r.cause
        ));
    }
    let counts = ep.revision_counts();
    let rows: Vec<Vec<String>> = ep
        .status
        .revisions
        .iter()
        .map(|r| {
            let c = counts.iter().find(|c| c.revision == r.revision);
            let role = match (r.revision == latest, r.revision == stable) {
                (true, true) => "current",
                (true, false) => "rolling out",
                (false, true) => "stable",
                (false, false) => "",
            };
            vec![
                r.revision.to_string(),
                crate::render::format_age(Some(r.created_ms), gpuctl_common::now_ms()),
                c.map_or("0/0".into(), |c| format!("{}/{}", c.ready, c.replicas)),
                role.to_string(),
                what(&r.spec),
                r.cause.clone(),
            ]
        })
        .collect();
    Ok(format!(
        "endpoint/{}\n{}",
        ep.metadata.name,
        crate::render::table(
            &["REVISION", "AGE", "READY", "ROLE", "RUNS", "CAUSE"],
            &rows
        )
    ))
}

/// What a revision runs, in a few words.
fn what(spec: &gpuctl_common::endpoint::EndpointSpec) -> String {
    match (&spec.model, &spec.server) {
        (Some(m), _) => m.path.clone(),
        (None, Some(s)) => crate::render::shell_join(&s.command),
        (None, None) => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_an_endpoint() {
        assert_eq!(endpoint_name("endpoint/lin", None).unwrap(), "lin");
        assert_eq!(endpoint_name("ep", Some("lin")).unwrap(), "lin");
        let e = endpoint_name("job/x", None).unwrap_err().to_string();
        assert!(e.contains("only endpoints have rollouts"), "{e}");
        assert!(endpoint_name("lin", None).is_err());
    }

    #[test]
    fn status_judges_complete_canary_and_failed() {
        let mut ep = gpuctl_testkit::endpoint("lin").build();
        ep.status.latest_revision = 1;
        ep.status.stable_revision = 1;
        assert!(matches!(judge(&ep).0, Some(Ok(m)) if m.contains("successfully rolled out")));
        ep.status.latest_revision = 2;
        ep.status.rollout = Some(gpuctl_common::endpoint::RolloutStatus {
            from_revision: 1,
            to_revision: 2,
            phase: RolloutPhase::Failed,
            message: "a replica ended: exited with code 1".into(),
            failures: 3,
            last_failure: String::new(),
            started_ms: 0,
            ..Default::default()
        });
        assert!(matches!(judge(&ep).0, Some(Err(m)) if m.contains("exited with code 1")));
        ep.status.rollout.as_mut().unwrap().phase = RolloutPhase::Progressing;
        assert!(judge(&ep).0.is_none());
    }
}
