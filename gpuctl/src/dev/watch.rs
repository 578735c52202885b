//! After start-up: watching the children until Ctrl-C or a fatal exit, and
//! bringing back a child that died: a node daemon (same name and work dir,
//! so it takes back the tasks its supervisors kept running), the gateway,
//! or a scheduler replica (with more than one; the only one is fatal).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::dev::plan::Plan;
use crate::dev::start::{scheduler_entry, write_cluster_file, Started};
use crate::dev::supervisor::{log_tail, read_ready, Supervisor, LOG_TAIL_LINES, READY_TIMEOUT};
use crate::duration::format_delay;
use crate::error::EXIT_FAILURE;
use crate::stdout::out;

/// Longest pause before restarting a child that keeps failing.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// What a child of `gpuctl dev` is, from its index: the replicas first,
/// then the nodes, then the gateway (the order `start` spawns them in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Replica id (from 1).
    Scheduler(u64),
    /// Node number (from 1).
    Node(u32),
    Gateway,
}

impl Role {
    fn of(plan: &Plan, idx: usize) -> Role {
        let replicas = plan.replicas as usize;
        if idx < replicas {
            Role::Scheduler(idx as u64 + 1)
        } else if idx < replicas + plan.nodes as usize {
            Role::Node((idx - replicas) as u32 + 1)
        } else {
            Role::Gateway
        }
    }

    fn label(self) -> String {
        match self {
            Role::Scheduler(id) => format!("scheduler {id}"),
            Role::Node(i) => Plan::node_name(i),
            Role::Gateway => "the gateway".into(),
        }
    }

    fn ready_file(self, plan: &Plan) -> PathBuf {
        match self {
            Role::Scheduler(id) => plan.scheduler_ready(id),
            Role::Node(i) => plan.node_ready(i),
            Role::Gateway => plan.gateway_ready(),
        }
    }

    /// Whether `gpuctl dev` brings it back when it dies: nodes and the
    /// gateway always, a scheduler when other replicas keep the state.
    fn restartable(self, plan: &Plan) -> bool {
        match self {
            Role::Scheduler(_) => plan.replicas > 1,
            Role::Node(_) | Role::Gateway => true,
        }
    }
}

/// Where a child that died is on its way back.
enum Restart {
    /// Start it again at this instant.
    Due(tokio::time::Instant),
    /// Started; waiting for its ready file.
    Starting {
        since: tokio::time::Instant,
        warned: bool,
    },
}

/// Children on their way back after they died.
#[derive(Default)]
struct Restarts {
    /// By child index.
    pending: HashMap<usize, Restart>,
    /// How often each died again before it was ready, for the back-off.
    failures: HashMap<usize, u32>,
}

impl Restarts {
    /// Child `idx` exited: restart it after the restart delay, doubled for
    /// each time it died again before it was ready.
    fn exited(&mut self, sup: &Supervisor, plan: &Plan, idx: usize) {
        let c = &sup.children[idx];
        let how = c.exit_status().unwrap_or_default();
        let label = Role::of(plan, idx).label();
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
            "gpuctl dev: {label} (pid {}) exited: {how}; restarting it in {}",
            c.pid,
            format_delay(delay)
        );
        self.pending
            .insert(idx, Restart::Due(tokio::time::Instant::now() + delay));
    }

    /// Start the children whose delay has passed; warn once about one that
    /// is slow to get ready.
    fn start_due(&mut self, sup: &mut Supervisor, plan: &Plan, now: tokio::time::Instant) {
        for (&idx, r) in self.pending.iter_mut() {
            let role = Role::of(plan, idx);
            let label = role.label();
            match r {
                Restart::Due(at) if now >= *at => {
                    let _ = std::fs::remove_file(role.ready_file(plan));
                    match sup.respawn(idx) {
                        Ok(_) => {
                            *r = Restart::Starting {
                                since: now,
                                warned: false,
                            }
                        }
                        Err(e) => {
                            eprintln!(
                                "gpuctl dev: cannot restart {label}: {e}; trying again in {}",
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
                            "gpuctl dev: {label} (pid {}) is not ready after {}s; see {}",
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
    /// new pid and addresses.
    fn collect_ready(&mut self, sup: &Supervisor, plan: &Plan, started: &mut Started) {
        let back: Vec<(usize, serde_json::Value)> = self
            .pending
            .iter()
            .filter(|(_, r)| matches!(r, Restart::Starting { .. }))
            .filter_map(|(&i, _)| Some((i, read_ready(&Role::of(plan, i).ready_file(plan))?)))
            .collect();
        for (idx, ready) in back {
            self.pending.remove(&idx);
            self.failures.remove(&idx);
            let role = Role::of(plan, idx);
            match role {
                Role::Scheduler(id) => started.schedulers[idx] = scheduler_entry(plan, id, &ready),
                Role::Node(i) => {
                    if let Some(n) = started.nodes.get_mut(i as usize - 1) {
                        *n = ready;
                    }
                }
                Role::Gateway => started.gateway = Some(ready),
            }
            if let Err(e) = write_cluster_file(plan, started) {
                eprintln!("gpuctl dev: {e}");
            }
            out(&format!(
                "gpuctl dev: {} is back (pid {})\n",
                role.label(),
                sup.children[idx].pid
            ))
            .ok();
        }
    }
}

/// Watch the children until a signal (0) or a fatal exit (1). A node daemon
/// or the gateway that dies, and with more than one replica a scheduler, is
/// restarted after the restart delay (doubling, up to [`MAX_RESTART_DELAY`],
/// while it keeps dying before it is ready) and `cluster.json` gets its new
/// pid once it is ready again. The only scheduler dying is fatal.
pub(super) async fn supervise(
    sup: &mut Supervisor,
    plan: &Plan,
    started: &mut Started,
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
) -> u8 {
    let mut restarts = Restarts::default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = sigint.recv() => return 0,
            _ = sigterm.recv() => return 0,
            Some(idx) = sup.exits.recv() => {
                if Role::of(plan, idx).restartable(plan) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan(replicas: u32, nodes: u32) -> Plan {
        Plan {
            state_dir: Path::new("/s").to_path_buf(),
            gpus: vec!["4xH100-80GB".into()],
            nodes,
            scheduler_port: 0,
            example: false,
            config_dir: None,
            replicas,
            restart_delay: Duration::from_secs(2),
            ports: vec![0; replicas as usize],
            ui_ports: vec![],
            gateway_port: 0,
            no_auth: false,
            cold_start_timeout: Duration::from_secs(60),
            insecure: false,
            task_isolation: true,
            podman: false,
        }
    }

    #[test]
    fn children_are_replicas_then_nodes_then_the_gateway() {
        let p = plan(3, 2);
        let roles: Vec<Role> = (0..6).map(|i| Role::of(&p, i)).collect();
        assert_eq!(
            roles,
            [
                Role::Scheduler(1),
                Role::Scheduler(2),
                Role::Scheduler(3),
                Role::Node(1),
                Role::Node(2),
                Role::Gateway
            ]
        );
        assert_eq!(Role::Node(2).label(), "dev-node-2");
        assert_eq!(
            Role::Node(2).ready_file(&p),
            Path::new("/s/node-2.ready.json")
        );
        assert_eq!(
            Role::Gateway.ready_file(&p),
            Path::new("/s/gateway.ready.json")
        );
        // Nodes and the gateway come back; the only scheduler does not.
        let single = plan(1, 1);
        assert!(!Role::of(&single, 0).restartable(&single));
        assert!(Role::of(&single, 1).restartable(&single));
        assert!(Role::of(&single, 2).restartable(&single));
        assert!(Role::Scheduler(1).restartable(&p));
    }
}
