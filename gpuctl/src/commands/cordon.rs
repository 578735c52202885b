//! `gpuctl cordon`, `gpuctl uncordon` (whether new tasks may be placed on a
//! node) and `gpuctl drain` (empty a node: cordon, wait, then evict).

use std::time::Duration;

use gpuctl_common::api::Job;
use gpuctl_proto::v1::CordonRequest;

use crate::client::Target;
use crate::commands::ctx::Ctx;
use crate::error::{Error, Result};
use crate::stdout::out;

/// How often `drain` looks at what still runs on the node.
const DRAIN_POLL: Duration = Duration::from_millis(500);
/// How long evicted tasks may take to leave the node's books.
const EVICT_GRACE: Duration = Duration::from_secs(30);

pub(crate) async fn cmd_cordon(
    cx: &mut Ctx,
    node: &str,
    cordon: bool,
    reason: Option<&str>,
) -> Result<u8> {
    send(cx, node, cordon, reason, false).await?;
    let what = if cordon { "cordoned" } else { "uncordoned" };
    out(&format!("node/{node} {what}\n"))?;
    Ok(0)
}

async fn send(
    cx: &mut Ctx,
    node: &str,
    cordon: bool,
    reason: Option<&str>,
    evict: bool,
) -> Result<()> {
    let req = CordonRequest {
        node: node.into(),
        cordon,
        reason: reason.unwrap_or_default().into(),
        evict,
    };
    let target = Some(Target {
        kind: "node",
        name: node,
    });
    cx.call(target, |mut c| {
        let req = req.clone();
        async move { c.cordon(req).await }
    })
    .await?;
    Ok(())
}

/// `job/task` of every task that holds resources on `node`.
pub(crate) fn tasks_on(node: &str, jobs: &[Job]) -> Vec<String> {
    let mut out = Vec::new();
    for j in jobs {
        for t in &j.status.tasks {
            if t.node.as_deref() == Some(node) && t.phase.holds_resources() {
                out.push(format!("{}/{}", j.metadata.name, t.index));
            }
        }
    }
    out
}

/// Cordon `node`, wait up to `timeout` for its tasks to end, then evict the
/// rest (their jobs are requeued without using a retry) and wait until the
/// node runs nothing.
pub(crate) async fn cmd_drain(
    cx: &mut Ctx,
    node: &str,
    timeout: Duration,
    reason: Option<&str>,
) -> Result<u8> {
    let reason = reason.unwrap_or("drained");
    send(cx, node, true, Some(reason), false).await?;
    out(&format!("node/{node} cordoned\n"))?;
    let start = tokio::time::Instant::now();
    let mut last: Option<Vec<String>> = None;
    let mut evicted = false;
    loop {
        let left = tasks_on(node, &cx.get_jobs(None).await?);
        if left.is_empty() {
            out(&format!("node/{node} drained\n"))?;
            return Ok(0);
        }
        if last.as_ref() != Some(&left) {
            let verb = if evicted { "stopping" } else { "waiting for" };
            out(&format!(
                "node/{node}: {verb} {} task(s): {}\n",
                left.len(),
                left.join(", ")
            ))?;
            last = Some(left.clone());
        }
        let waited = start.elapsed();
        if !evicted && waited >= timeout {
            out(&format!(
                "node/{node}: timeout {} passed; evicting {} task(s), their jobs are requeued\n",
                crate::duration::format_delay(timeout),
                left.len()
            ))?;
            send(cx, node, true, Some(reason), true).await?;
            evicted = true;
            continue;
        }
        if evicted && waited >= timeout + EVICT_GRACE {
            return Err(Error::Other(format!(
                "node {node} still holds {} after evicting: {}; see gpuctl describe node {node}",
                left.len(),
                left.join(", ")
            )));
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuctl_common::api::TaskPhase;

    #[test]
    fn tasks_on_lists_what_holds_the_node() {
        let mut a = gpuctl_testkit::job("a").replicas(3).build();
        let phases = [TaskPhase::Running, TaskPhase::Succeeded, TaskPhase::Bound];
        for (i, p) in phases.into_iter().enumerate() {
            a.status.tasks.push(gpuctl_common::api::TaskStatus {
                index: i as u32,
                phase: p,
                node: Some("n1".into()),
                ..Default::default()
            });
        }
        let mut b = gpuctl_testkit::job("b").build();
        b.status.tasks.push(gpuctl_common::api::TaskStatus {
            phase: TaskPhase::Running,
            node: Some("n2".into()),
            ..Default::default()
        });
        let jobs = [a, b];
        assert_eq!(tasks_on("n1", &jobs), ["a/0", "a/2"]);
        assert_eq!(tasks_on("n2", &jobs), ["b/0"]);
        assert!(tasks_on("n3", &jobs).is_empty());
    }
}
