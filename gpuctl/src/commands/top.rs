//! `gpuctl top nodes|jobs`: the web UI's Cluster and Jobs views in a
//! terminal, read again every `--interval` until Ctrl-C (`--once`: one
//! view). On a terminal each view replaces the last.

use std::io::IsTerminal;
use std::time::Duration;

use gpuctl_common::api::{Job, Node, NodePhase};

use crate::cli::TopView;
use crate::commands::ctx::Ctx;
use crate::error::Result;
use crate::render;
use crate::stdout::out;

/// The shortest interval between two reads.
const MIN_INTERVAL: Duration = Duration::from_millis(200);

pub(crate) async fn cmd_top(
    cx: &mut Ctx,
    what: TopView,
    interval: Duration,
    once: bool,
) -> Result<u8> {
    let interval = interval.max(MIN_INTERVAL);
    let clear = !once && std::io::stdout().is_terminal();
    loop {
        let view = read(cx, what).await?;
        if clear {
            // Home and clear the screen, then draw.
            out(&format!("\x1b[H\x1b[2J{view}"))?;
        } else {
            out(&view)?;
        }
        if once {
            return Ok(0);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}

/// One view: a summary line, then the table.
async fn read(cx: &mut Ctx, what: TopView) -> Result<String> {
    let now = gpuctl_common::now_ms();
    let jobs = cx.get_jobs(None).await?;
    let mut text = String::new();
    match what {
        TopView::Nodes => {
            let nodes = cx.get_nodes(None).await?;
            text.push_str(&summary(&nodes, &jobs, now));
            text.push_str(&render::nodes_table(&nodes, &jobs, now));
        }
        TopView::Jobs => {
            let live: Vec<Job> = jobs
                .into_iter()
                .filter(|j| !j.status.phase.is_terminal())
                .collect();
            text.push_str(&format!(
                "gpuctl top jobs   {}   {} job(s) running or pending\n\n",
                gpuctl_common::format_time(now),
                live.len()
            ));
            text.push_str(&render::jobs_table(&live, now));
        }
    }
    Ok(text)
}

/// Nodes ready and GPUs held, over GPUs on Ready nodes.
fn summary(nodes: &[Node], jobs: &[Job], now: u64) -> String {
    let ready: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.status.phase == NodePhase::Ready)
        .collect();
    let gpus: usize = ready.iter().map(|n| n.status.gpus.len()).sum();
    let held: u64 = jobs.iter().map(Job::gpu_milli_held).sum();
    format!(
        "gpuctl top nodes   {}   {}/{} node(s) ready   GPUs in use {} of {}\n\n",
        gpuctl_common::format_time(now),
        ready.len(),
        nodes.len(),
        held as f64 / 1000.0,
        gpus
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_ready_nodes_and_held_gpus() {
        let nodes = vec![
            gpuctl_testkit::node("a")
                .gpus(8, gpuctl_testkit::A100)
                .build(),
            gpuctl_testkit::node("b")
                .gpus(4, gpuctl_testkit::A100)
                .build(),
        ];
        let s = summary(&nodes, &[], 0);
        assert!(s.contains("2/2 node(s) ready   GPUs in use 0 of 12"), "{s}");
    }
}
