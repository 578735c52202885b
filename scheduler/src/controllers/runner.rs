//! Runs the controllers. Each loop acts only while this replica leads: it
//! reads the state, asks its controllers what should change (they return
//! commands, as data), and proposes those commands one by one. A command
//! that is refused or finds leadership lost is logged and dropped: the next
//! round derives again what is still needed, which is also what makes a new
//! leader pick up where the old one stopped.
//!
//! - [`run`]: scheduling ([`scheduling`]), workflow timers ([`workflows`])
//!   every round; liveness ([`liveness`]) and timeouts ([`timeouts`]) every
//!   `resync`;
//! - [`run_endpoints`]: the endpoint controller ([`endpoints`]), woken by
//!   gateway reports ([`report_load`]);
//! - [`run_gc`]: clean-up of finished work ([`gc`]), CronWorkflows
//!   ([`cron`]) and re-encrypting secrets ([`reseal`]), once a second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gpuctl_proto::v1 as pb;
use gpuctl_security::sealing::Keyring;
use tokio::sync::watch;

use super::endpoints::{self, Loads};
use super::liveness::{self, Heartbeats};
use super::{cron, gc, reseal, scheduling, timeouts, workflows};
use crate::placement;
use crate::raft::{ProposeError, RaftHandle};
use crate::state::{Applied, Command, Envelope};

/// Settings of the controllers.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// A node silent for this long is marked lost (longer in a fleet whose
    /// heartbeat interval is stretched: [`liveness::Cadence`]).
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

/// How often the endpoint controller runs when nothing wakes it.
const ENDPOINTS_TICK: Duration = Duration::from_millis(200);
/// How often the leader looks for objects due for deletion.
const GC_EVERY: Duration = Duration::from_secs(1);

/// Propose `cmd` stamped `now_ms` and wait until it is applied.
async fn propose_at(raft: &RaftHandle, now_ms: u64, cmd: Command) -> Result<Applied, ProposeError> {
    raft.propose(Envelope::new(now_ms, cmd)).await
}

/// Propose `cmd` stamped with the clock now; a failure is logged, and the
/// next round proposes again whatever is still needed.
async fn propose(raft: &RaftHandle, cmd: Command) -> Option<Applied> {
    let name = cmd.name();
    match propose_at(raft, gpuctl_common::now_ms(), cmd).await {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!("{name} not applied: {e}");
            None
        }
    }
}

/// Run scheduling, workflow timers, liveness and timeouts until `shutdown`
/// fires.
pub async fn run(
    raft: RaftHandle,
    heartbeats: Arc<Heartbeats>,
    opts: ControllerOptions,
    mut shutdown: watch::Receiver<bool>,
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
            let due = workflows::due(&raft.shared.read(), gpuctl_common::now_ms());
            for cmd in due {
                propose(&raft, cmd).await;
            }
            if last_checks.elapsed() >= opts.resync {
                last_checks = Instant::now();
                check_liveness(&raft, &heartbeats).await;
                let expired = timeouts::expired(&raft.shared.read(), gpuctl_common::now_ms());
                for cmd in expired {
                    propose(&raft, cmd).await;
                }
            }
        }
        raft.shared.metrics.observe_state(&raft.shared.read());
        // Wake for the earliest workflow timer too (retry backoff).
        let next = workflows::next_wakeup(&raft.shared.read(), gpuctl_common::now_ms());
        let sleep = next.map_or(opts.resync, |d| d.min(opts.resync));
        tokio::select! {
            _ = version.changed() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One scheduling round: plan it (timed for the placement metric), then
/// propose its `Bind` batch, counting the bindings applied and refused, and
/// its preemption.
pub async fn schedule_once(raft: &RaftHandle, planner: &mut placement::Planner) {
    let cmds = {
        let st = raft.shared.read();
        if !scheduling::has_pending(&st) {
            return;
        }
        let start = Instant::now();
        let cmds = scheduling::decide(&st, planner);
        raft.shared
            .metrics
            .placement_seconds
            .observe(start.elapsed().as_secs_f64());
        cmds
    };
    for cmd in cmds {
        match cmd {
            Command::Bind { .. } => {
                if let Some(Applied::Bound { applied, refused }) = propose(raft, cmd).await {
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
            Command::Preempt {
                ref victims,
                ref reason,
                ..
            } => {
                tracing::info!("{reason}: stopping {victims:?}");
                propose(raft, cmd).await;
            }
            other => {
                propose(raft, other).await;
            }
        }
    }
}

/// Mark lost the Ready nodes silent for longer than the timeout in force
/// (`--node-timeout`, or more in a fleet large enough that its heartbeat
/// interval was stretched: [`liveness::Cadence`]).
async fn check_liveness(raft: &RaftHandle, heartbeats: &Heartbeats) {
    let now = Instant::now();
    let (lost, timeout) = {
        let st = raft.shared.read();
        let timeout = heartbeats.timeout(st.nodes.len(), now);
        let now_ms = gpuctl_common::now_ms();
        (
            liveness::lost_nodes(&st, heartbeats, now, now_ms, timeout),
            timeout,
        )
    };
    for cmd in lost {
        if let Command::NodeLost { node } = &cmd {
            tracing::warn!("node {node} missed heartbeats for {timeout:?}: marking it lost");
        }
        propose(raft, cmd).await;
    }
}

/// Handle a gateway's report on the leader: record it and wake cold
/// endpoints now.
pub async fn report_load(raft: &RaftHandle, loads: &Loads, req: &pb::ReportLoadRequest) {
    let cmds = {
        let st = raft.shared.read();
        endpoints::cold_starts(loads.record(&st, req))
    };
    for cmd in cmds {
        propose(raft, cmd).await;
    }
    loads.wake.notify_one();
}

/// The endpoint controller's loop: runs the autoscaler on the gateways'
/// reports, replaces replicas that ended and stops drained ones.
pub async fn run_endpoints(
    raft: RaftHandle,
    loads: Arc<Loads>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if raft.shared.status().is_leader() {
            let cmds = {
                let st = raft.shared.read();
                loads.plan(&st, tokio::time::Instant::now(), gpuctl_common::now_ms())
            };
            for c in cmds {
                propose(&raft, c).await;
            }
        } else {
            loads.clear();
        }
        tokio::select! {
            _ = loads.wake.notified() => {}
            _ = tokio::time::sleep(ENDPOINTS_TICK) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Secrets stored again under a rotated encryption configuration per beat.
const RESEAL_PER_BEAT: usize = 16;

/// One beat of [`reseal`]: store again the secrets due, and say once when
/// none is left (`resealing`: whether the beats before found some).
async fn reseal_beat(raft: &RaftHandle, keys: &Keyring, now: u64, resealing: &mut bool) {
    let due = reseal::due(&raft.shared.read(), keys, RESEAL_PER_BEAT);
    let first = keys.write_key().unwrap_or("identity");
    if due.secrets.is_empty() && std::mem::take(resealing) {
        match due.unreadable.len() {
            0 => tracing::info!(
                "every secret is stored under the encryption configuration's first provider ({first})"
            ),
            n => tracing::warn!(
                "every secret that can be read is stored under the first provider ({first}); {n} cannot be decrypted with the configured keys and stay as they are: {}",
                due.unreadable.join("; ")
            ),
        }
    }
    *resealing |= !due.secrets.is_empty();
    for secret in due.secrets {
        let name = secret.metadata.name.clone();
        let cmd = Command::PutSecret {
            secret: Box::new(secret),
        };
        match propose_at(raft, now, cmd).await {
            Ok(_) => tracing::info!(
                "secret {name:?} stored again under the encryption configuration's first provider ({first})"
            ),
            Err(e) => tracing::debug!("secret {name:?} not stored again: {e}"),
        }
    }
}

/// Clean-up's loop: on the leader, delete what is due, once a second, and
/// store again secrets not encrypted as the configuration says ([`reseal`]).
pub async fn run_gc(raft: RaftHandle, mut shutdown: watch::Receiver<bool>) {
    // Whether secrets were being stored again: the beat that finds none
    // left says so once.
    let mut resealing = false;
    loop {
        if raft.shared.status().is_leader() {
            let now = gpuctl_common::now_ms();
            let mut cmds = gc::due(&raft.shared.read(), now);
            // CronWorkflows run on the same once-a-second beat.
            cmds.extend(cron::due(&raft.shared.read(), now));
            for cmd in cmds {
                let what = format!("{cmd:?}");
                let why = match cmd {
                    Command::CronRun { .. } => "scheduled",
                    _ => "time to live over",
                };
                // Deletions are routine: a refusal (the object changed) is
                // only worth a debug line.
                match propose_at(&raft, now, cmd).await {
                    Ok(_) => tracing::info!("{why}: {what}"),
                    Err(e) => tracing::debug!("{what} not applied: {e}"),
                }
            }
            if let Some(keys) = gpuctl_security::sealing::installed() {
                reseal_beat(&raft, keys, now, &mut resealing).await;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(GC_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}
