//! After start-up: watching the children until Ctrl-C or a fatal exit, and
//! bringing back a scheduler replica that died (with more than one).

use std::collections::HashMap;
use std::time::Duration;

use crate::dev::plan::Plan;
use crate::dev::start::{scheduler_entry, write_cluster_file, Started};
use crate::dev::supervisor::{log_tail, read_ready, Supervisor, LOG_TAIL_LINES, READY_TIMEOUT};
use crate::duration::format_delay;
use crate::error::EXIT_FAILURE;
use crate::stdout::out;

/// Longest pause before restarting a replica that keeps failing.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// Where a replica that died is on its way back.
enum Restart {
    /// Start it again at this instant.
    Due(tokio::time::Instant),
    /// Started; waiting for its ready file.
    Starting {
        since: tokio::time::Instant,
        warned: bool,
    },
}

/// Scheduler replicas on their way back after they died.
#[derive(Default)]
struct Restarts {
    /// By child index (replica id = index + 1).
    pending: HashMap<usize, Restart>,
    /// How often each died again before it was ready, for the back-off.
    failures: HashMap<usize, u32>,
}

impl Restarts {
    /// Replica `idx` exited: restart it after the restart delay, doubled for
    /// each time it died again before it was ready.
    fn exited(&mut self, sup: &Supervisor, plan: &Plan, idx: usize) {
        let c = &sup.children[idx];
        let how = c.exit_status().unwrap_or_default();
        let id = idx + 1;
        // Dying again before it was ready: back off.
        let n = if matches!(self.pending.get(&idx), Some(Restart::Starting { .. })) {
            let n = self.failures.entry(idx).or_insert(0);
            *n += 1;
            *n
        } else {
            0
        };
        let delay = plan
            .restart_delay
            .saturating_mul(1 << n.min(5))
            .min(MAX_RESTART_DELAY.max(plan.restart_delay));
        eprintln!(
            "gpuctl dev: scheduler {id} (pid {}) exited: {how}; restarting it in {}",
            c.pid,
            format_delay(delay)
        );
        self.pending
            .insert(idx, Restart::Due(tokio::time::Instant::now() + delay));
    }

    /// Start the replicas whose delay has passed; warn once about one that
    /// is slow to get ready.
    fn start_due(&mut self, sup: &mut Supervisor, plan: &Plan, now: tokio::time::Instant) {
        for (&idx, r) in self.pending.iter_mut() {
            let id = idx as u64 + 1;
            match r {
                Restart::Due(at) if now >= *at => {
                    let _ = std::fs::remove_file(plan.scheduler_ready(id));
                    match sup.respawn(idx) {
                        Ok(_) => {
                            *r = Restart::Starting {
                                since: now,
                                warned: false,
                            }
                        }
                        Err(e) => {
                            eprintln!(
                                "gpuctl dev: cannot restart scheduler {id}: {e}; trying again in {}",
                                format_delay(plan.restart_delay)
                            );
                            *at = now + plan.restart_delay;
                        }
                    }
                }
                Restart::Due(_) => {}
                Restart::Starting { since, warned } => {
                    if !*warned && now.duration_since(*since) > READY_TIMEOUT {
                        *warned = true;
                        eprintln!(
                            "gpuctl dev: scheduler {id} (pid {}) is not ready after {}s; see {}",
                            sup.children[idx].pid,
                            READY_TIMEOUT.as_secs(),
                            sup.children[idx].log.display()
                        );
                    }
                }
            }
        }
    }

    /// Those whose ready file appeared are back: `cluster.json` gets their
    /// new pid.
    fn collect_ready(&mut self, sup: &Supervisor, plan: &Plan, started: &mut Started) {
        let back: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, r)| matches!(r, Restart::Starting { .. }))
            .map(|(&i, _)| i)
            .filter(|&i| read_ready(&plan.scheduler_ready(i as u64 + 1)).is_some())
            .collect();
        for idx in back {
            let id = idx as u64 + 1;
            let ready = read_ready(&plan.scheduler_ready(id)).expect("just read");
            self.pending.remove(&idx);
            self.failures.remove(&idx);
            started.schedulers[idx] = scheduler_entry(plan, id, &ready);
            if let Err(e) = write_cluster_file(plan, started) {
                eprintln!("gpuctl dev: {e}");
            }
            out(&format!(
                "gpuctl dev: scheduler {id} is back (pid {})\n",
                sup.children[idx].pid
            ))
            .ok();
        }
    }
}

/// Watch the children until a signal (0) or a fatal exit (1). With more than
/// one replica, a scheduler that dies is restarted after the restart delay
/// (doubling, up to [`MAX_RESTART_DELAY`], while it keeps dying before it
/// is ready) and `cluster.json` gets its new pid once it is ready again.
pub(super) async fn supervise(
    sup: &mut Supervisor,
    plan: &Plan,
    started: &mut Started,
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
) -> u8 {
    // Children 0..replicas are the schedulers, replica id = index + 1.
    let replicas = plan.replicas as usize;
    let mut restarts = Restarts::default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = sigint.recv() => return 0,
            _ = sigterm.recv() => return 0,
            Some(idx) = sup.exits.recv() => {
                if replicas > 1 && idx < replicas {
                    restarts.exited(sup, plan, idx);
                    continue;
                }
                let c = &sup.children[idx];
                let how = c.exit_status().unwrap_or_default();
                eprintln!(
                    "gpuctl dev: {} (pid {}) exited unexpectedly ({how}); stopping the cluster. The end of {}:\n{}",
                    c.label,
                    c.pid,
                    c.log.display(),
                    log_tail(&c.log, LOG_TAIL_LINES)
                );
                return EXIT_FAILURE;
            }
            _ = tick.tick() => {
                restarts.start_due(sup, plan, tokio::time::Instant::now());
                restarts.collect_ready(sup, plan, started);
            }
        }
    }
}
