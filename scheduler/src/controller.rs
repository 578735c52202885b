//! Leader-only loops. Each is level-triggered and idempotent: it compares
//! the state with what should be and proposes the difference, so a new
//! leader simply runs them again.
//!
//! - scheduling: pending jobs → placement core → `Bind` batches;
//! - liveness: Ready nodes silent for longer than the timeout → `NodeLost`;
//! - timeouts: attempts running past `timeoutSeconds` → `FailAttempt`;
//! - workflows: runs whose timer (retry backoff, deadline) passed →
//!   `WorkflowTick`. Everything else about workflows happens in `apply`.

use std::time::{Duration, Instant};

use gpuctl_common::api::{JobPhase, NodePhase};

use crate::placement;
use crate::raft::RaftHandle;
use crate::service::Heartbeats;
use crate::state::{Applied, Command, Envelope};

/// Settings of the controllers.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// A node silent for this long is marked lost.
    pub node_timeout: Duration,
    /// How often the liveness and timeout checks run, and the scheduling
    /// loop's fallback period when nothing changes.
    pub resync: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            node_timeout: Duration::from_secs(10),
            resync: Duration::from_millis(500),
        }
    }
}

/// Run the controllers until `shutdown` fires.
pub async fn run(
    raft: RaftHandle,
    heartbeats: std::sync::Arc<Heartbeats>,
    opts: ControllerOptions,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut version = raft.shared.version.subscribe();
    let mut was_leader = false;
    let mut last_checks = Instant::now();
    // Kept across rounds: the cluster model is synced, not rebuilt.
    let mut planner = placement::Planner::new();
    loop {
        let leader = raft.shared.status().is_leader();
        if leader && !was_leader {
            // Everyone gets a full grace period under a new leader.
            heartbeats.reset();
        }
        was_leader = leader;
        if leader {
            schedule_once(&raft, &mut planner).await;
            tick_workflows(&raft).await;
            if last_checks.elapsed() >= opts.resync {
                last_checks = Instant::now();
                check_liveness(&raft, &heartbeats, opts.node_timeout).await;
                check_timeouts(&raft).await;
            }
        }
        raft.shared.metrics.observe_state(&raft.shared.read());
        // Wake for the earliest workflow timer too (retry backoff).
        let sleep = next_workflow_wakeup(&raft).map_or(opts.resync, |d| d.min(opts.resync));
        tokio::select! {
            _ = version.changed() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn propose(raft: &RaftHandle, cmd: Command) -> Option<Applied> {
    let name = cmd.name();
    match raft
        .propose(Envelope::new(gpuctl_common::now_ms(), cmd))
        .await
    {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!("{name} not applied: {e}");
            None
        }
    }
}

/// One scheduling pass: order the pending jobs by queue fair share, hold
/// back what a queue's quota does not allow, place what fits (the first gang
/// that does not fit reserves nodes) and propose it as one batch; then, if
/// that first gang may preempt running jobs to fit, propose the preemption.
/// `planner` keeps the cluster model between passes.
pub async fn schedule_once(raft: &RaftHandle, planner: &mut placement::Planner) {
    let (bindings, preemption) = {
        let st = raft.shared.read();
        if !st
            .jobs
            .values()
            .any(|j| j.status.phase == JobPhase::Pending)
        {
            return;
        }
        let start = Instant::now();
        let round = planner.plan_round(&st);
        raft.shared
            .metrics
            .placement_seconds
            .observe(start.elapsed().as_secs_f64());
        (round.bindings, round.preemption)
    };
    if !bindings.is_empty() {
        if let Some(Applied::Bound { applied, refused }) =
            propose(raft, Command::Bind { bindings }).await
        {
            let m = &raft.shared.metrics.bindings;
            m.with_label_values(&["applied"])
                .inc_by(applied.len() as u64);
            m.with_label_values(&["refused"])
                .inc_by(refused.len() as u64);
            for (job, why) in refused {
                tracing::debug!("binding of {job} refused: {why}");
            }
        }
    }
    if let Some(p) = preemption {
        tracing::info!("{}: stopping {:?}", p.reason, p.victims);
        propose(
            raft,
            Command::Preempt {
                victims: p.victims,
                by: p.preemptor,
                reason: p.reason,
            },
        )
        .await;
    }
}

async fn check_liveness(raft: &RaftHandle, heartbeats: &Heartbeats, timeout: Duration) {
    let now = Instant::now();
    let lost: Vec<String> = {
        let st = raft.shared.read();
        st.nodes
            .values()
            .filter(|n| n.status.phase == NodePhase::Ready)
            .filter(|n| now.duration_since(heartbeats.last_seen(&n.metadata.name, now)) > timeout)
            .map(|n| n.metadata.name.clone())
            .collect()
    };
    for node in lost {
        tracing::warn!("node {node} missed heartbeats for {timeout:?}: marking it lost");
        propose(raft, Command::NodeLost { node }).await;
    }
}

async fn check_timeouts(raft: &RaftHandle) {
    let now = gpuctl_common::now_ms();
    let expired: Vec<(String, u32, u64)> = {
        let st = raft.shared.read();
        st.jobs
            .values()
            .filter(|j| j.status.phase == JobPhase::Running)
            .filter_map(|j| {
                let limit = j.spec.timeout_seconds? * 1000;
                let started = j.status.start_time_ms?;
                (now.saturating_sub(started) > limit)
                    .then(|| (j.metadata.name.clone(), j.status.attempt, limit / 1000))
            })
            .collect()
    };
    for (job, attempt, secs) in expired {
        let reason = format!("ran longer than timeoutSeconds ({secs})");
        propose(
            raft,
            Command::FailAttempt {
                job,
                attempt,
                reason,
            },
        )
        .await;
    }
}

/// Propose a tick for every workflow whose timer has passed.
async fn tick_workflows(raft: &RaftHandle) {
    let due = raft.shared.read().workflows_due(gpuctl_common::now_ms());
    for name in due {
        propose(raft, Command::WorkflowTick { name }).await;
    }
}

/// How long until the earliest workflow timer.
fn next_workflow_wakeup(raft: &RaftHandle) -> Option<Duration> {
    let st = raft.shared.read();
    let now = gpuctl_common::now_ms();
    st.workflows
        .values()
        .filter(|w| !w.run.phase().is_terminal())
        .filter_map(|w| w.wake_at_ms)
        .min()
        .map(|t| Duration::from_millis(t.saturating_sub(now).max(5)))
}
