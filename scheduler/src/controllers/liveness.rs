//! Node liveness (leader only): the last heartbeat of each node, and the
//! Ready nodes silent for longer than the timeout, which are marked lost.
//! The heartbeat table is soft state: a new leader gives every node a fresh
//! grace period.
//!
//! Heartbeats never go through Raft. Their cadence follows the fleet, as
//! Kubernetes' node leases do (renewed every 10 s, a node lost after 40 s):
//! the interval nodes are told stretches so the whole fleet sends at most
//! `heartbeats_per_second` beats to the leader, and the timeout stays at
//! least four of the intervals in force. A node learns a new interval in the
//! answer to its next heartbeat, so until then the timeout still allows for
//! the longest interval handed out lately.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gpuctl_common::api::NodePhase;

use crate::state::{Command, State};

/// How often nodes are asked to heartbeat and how long a silent one has,
/// for a fleet of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    /// The interval asked of a small fleet (`--heartbeat-interval`).
    pub interval: Duration,
    /// The silence that marks a node lost in a small fleet (`--node-timeout`).
    pub timeout: Duration,
    /// Most heartbeats per second the whole fleet is asked for (0: no limit,
    /// the interval never stretches).
    pub budget: u32,
}

impl Default for Cadence {
    fn default() -> Self {
        Cadence {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            budget: 0,
        }
    }
}

/// A timeout is at least this many heartbeat intervals (Kubernetes: 40 s
/// for leases renewed every 10 s).
const MIN_BEATS_PER_TIMEOUT: u32 = 4;

impl Cadence {
    /// The interval for a fleet of `nodes`: the configured one, stretched
    /// so that `nodes / interval` stays within the budget.
    pub fn interval_for(&self, nodes: usize) -> Duration {
        if self.budget == 0 {
            return self.interval;
        }
        let spread = Duration::from_secs_f64(nodes as f64 / f64::from(self.budget));
        // Whole milliseconds: what the nodes are told.
        let ms = spread.as_millis().max(self.interval.as_millis());
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// The timeout when nodes may be beating at `interval`: the configured
    /// one, or at least four intervals once the interval is stretched.
    pub fn timeout_for(&self, interval: Duration) -> Duration {
        if interval <= self.interval {
            return self.timeout;
        }
        self.timeout.max(interval * MIN_BEATS_PER_TIMEOUT)
    }
}

/// Last heartbeat seen from each node, on this replica (leader-local soft
/// state: a new leader gives every node a fresh grace period), and the
/// cadence the nodes were told.
#[derive(Default)]
pub struct Heartbeats {
    cadence: Cadence,
    seen: Mutex<HashMap<String, Instant>>,
    /// The longest interval handed out lately, and when it last was.
    slowest: Mutex<Option<(Duration, Instant)>>,
}

impl Heartbeats {
    pub fn new(cadence: Cadence) -> Heartbeats {
        Heartbeats {
            cadence,
            ..Default::default()
        }
    }

    pub fn cadence(&self) -> Cadence {
        self.cadence
    }

    pub fn beat(&self, node: &str, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get_mut(node) {
            Some(t) => *t = now,
            None => {
                seen.insert(node.to_string(), now);
            }
        }
    }

    /// The interval to tell a node of a fleet of `nodes` at `now`,
    /// remembered so the timeout allows for it until every node has heard
    /// a newer one.
    pub fn interval(&self, nodes: usize, now: Instant) -> Duration {
        let interval = self.cadence.interval_for(nodes);
        let mut slowest = self.slowest.lock().unwrap_or_else(|p| p.into_inner());
        let keep = slowest.is_some_and(|(d, at)| d > interval && !Self::heard(d, at, now));
        if !keep {
            *slowest = Some((interval, now));
        }
        interval
    }

    /// Whether every node beating at `d`, last told at `at`, has been
    /// answered since (one interval, and as much again for slow answers).
    fn heard(d: Duration, at: Instant, now: Instant) -> bool {
        now.duration_since(at) > d * 2
    }

    /// The silence that marks a node lost in a fleet of `nodes` at `now`.
    pub fn timeout(&self, nodes: usize, now: Instant) -> Duration {
        let mut interval = self.cadence.interval_for(nodes);
        if let Some((d, at)) = *self.slowest.lock().unwrap_or_else(|p| p.into_inner()) {
            if !Self::heard(d, at, now) {
                interval = interval.max(d);
            }
        }
        self.cadence.timeout_for(interval)
    }

    /// When the node was last heard from; first asked, it counts as heard now.
    pub fn last_seen(&self, node: &str, now: Instant) -> Instant {
        *self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node.to_string())
            .or_insert(now)
    }

    /// Forget everything (on gaining leadership: everyone gets a grace period).
    pub fn reset(&self) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// `NodeLost` for every Ready node not heard from for longer than `timeout`
/// at `now` (`now_ms` on the scheduler's clock). A node never heard from
/// counts as heard at `now` (first asked), and a registration counts as a
/// heartbeat: one handled by another replica reaches this table only with
/// the node's next heartbeat, while its `registered_ms` is in the state.
pub fn lost_nodes(
    st: &State,
    heartbeats: &Heartbeats,
    now: Instant,
    now_ms: u64,
    timeout: Duration,
) -> Vec<Command> {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    st.nodes
        .values()
        .filter(|n| n.status.phase == NodePhase::Ready)
        .filter(|n| now_ms.saturating_sub(n.status.registered_ms) > timeout_ms)
        .filter(|n| now.duration_since(heartbeats.last_seen(&n.metadata.name, now)) > timeout)
        .map(|n| Command::NodeLost {
            node: n.metadata.name.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{testutil, Envelope};

    /// A scheduler clock long after the test nodes registered (at 1 s).
    const LATER: u64 = 1_000_000;

    fn register(st: &mut State, index: u64, name: &str) {
        let n = gpuctl_testkit::node(name)
            .cpu_milli(1000)
            .memory_bytes(1 << 30);
        let cmd = testutil::register(&n.build());
        st.apply(index, &Envelope::new(1_000, cmd)).unwrap();
    }

    #[test]
    fn silent_ready_nodes_are_lost_and_unknown_ones_get_a_grace_period() {
        let mut st = State::default();
        register(&mut st, 1, "a");
        register(&mut st, 2, "b");
        let hb = Heartbeats::default();
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        hb.beat("a", t0);
        // "b" was never heard from: first asked, it counts as heard now.
        assert!(lost_nodes(&st, &hb, t0 + timeout, LATER, timeout).is_empty());
        hb.beat("b", t0 + Duration::from_secs(5));
        let lost = lost_nodes(
            &st,
            &hb,
            t0 + timeout + Duration::from_millis(1),
            LATER,
            timeout,
        );
        assert_eq!(lost, vec![Command::NodeLost { node: "a".into() }]);
        hb.reset();
        assert!(
            lost_nodes(&st, &hb, t0 + 3 * timeout, LATER, timeout).is_empty(),
            "after a reset every node starts a fresh grace period"
        );
    }

    #[test]
    fn a_large_fleet_is_asked_to_beat_less_often_and_given_longer() {
        let c = Cadence {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            budget: 1000,
        };
        // Up to the budget, the configured cadence.
        assert_eq!(c.interval_for(1000), Duration::from_secs(1));
        assert_eq!(c.timeout_for(c.interval_for(1000)), Duration::from_secs(10));
        // 5,000 nodes at 1,000 beats/s: every 5 s, lost after four of them.
        assert_eq!(c.interval_for(5000), Duration::from_secs(5));
        assert_eq!(c.timeout_for(c.interval_for(5000)), Duration::from_secs(20));
        assert_eq!(c.interval_for(10_000), Duration::from_secs(10));
        assert_eq!(
            c.timeout_for(c.interval_for(10_000)),
            Duration::from_secs(40)
        );
        // No budget: never stretched.
        let flat = Cadence { budget: 0, ..c };
        assert_eq!(flat.interval_for(100_000), Duration::from_secs(1));
        // A short timeout stays as configured while the interval does.
        let short = Cadence {
            timeout: Duration::from_millis(300),
            ..c
        };
        assert_eq!(
            short.timeout_for(short.interval_for(10)),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn after_the_fleet_shrinks_the_timeout_allows_for_the_interval_nodes_were_told() {
        let hb = Heartbeats::new(Cadence {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            budget: 1000,
        });
        let t0 = Instant::now();
        // 10,000 nodes were told 10 s.
        assert_eq!(hb.interval(10_000, t0), Duration::from_secs(10));
        // The fleet shrinks to 100: new answers say 1 s, but nodes still
        // beating every 10 s are not lost before they have heard it.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(hb.interval(100, t1), Duration::from_secs(1));
        assert_eq!(hb.timeout(100, t1), Duration::from_secs(40));
        // Once every node has had two of the old intervals to hear the new
        // one, the configured timeout is back.
        let t2 = t0 + Duration::from_secs(21);
        assert_eq!(hb.interval(100, t2), Duration::from_secs(1));
        assert_eq!(hb.timeout(100, t2), Duration::from_secs(10));
    }

    #[test]
    fn a_stretched_cadence_still_marks_a_silent_node_lost_under_a_new_leader() {
        let mut st = State::default();
        register(&mut st, 1, "a");
        register(&mut st, 2, "b");
        // A budget of one beat per second for two nodes: every 2 s, lost
        // after 8 s (four intervals; the configured 1 s is shorter).
        let hb = Heartbeats::new(Cadence {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            budget: 1,
        });
        let t0 = Instant::now();
        assert_eq!(hb.interval(st.nodes.len(), t0), Duration::from_secs(2));
        let timeout = hb.timeout(st.nodes.len(), t0);
        assert_eq!(timeout, Duration::from_secs(8));
        // A new leader: a fresh grace period for everyone, from when it
        // first looks.
        hb.reset();
        assert!(lost_nodes(&st, &hb, t0, LATER, timeout).is_empty());
        // "b" beats, "a" stays silent.
        hb.beat("b", t0 + Duration::from_secs(6));
        let t = t0 + timeout + Duration::from_millis(1);
        assert!(
            lost_nodes(&st, &hb, t0 + timeout, LATER, hb.timeout(2, t0 + timeout)).is_empty(),
            "not before the timeout"
        );
        assert_eq!(
            lost_nodes(&st, &hb, t, LATER, hb.timeout(2, t)),
            vec![Command::NodeLost { node: "a".into() }]
        );
    }

    #[test]
    fn a_node_registered_again_through_another_replica_is_not_lost_at_once() {
        let mut st = State::default();
        register(&mut st, 1, "a");
        let hb = Heartbeats::default();
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        hb.beat("a", t0);
        // Long silent on this replica's table, but registered again (on a
        // follower) at 100 s on the scheduler's clock.
        let n = gpuctl_testkit::node("a")
            .cpu_milli(1000)
            .memory_bytes(1 << 30);
        let cmd = testutil::register(&n.build());
        st.apply(2, &Envelope::new(100_000, cmd)).unwrap();
        let late = t0 + Duration::from_secs(60);
        assert!(lost_nodes(&st, &hb, late, 105_000, timeout).is_empty());
        // Silent for the timeout after that registration: lost.
        assert_eq!(
            lost_nodes(&st, &hb, late, 110_001, timeout),
            vec![Command::NodeLost { node: "a".into() }]
        );
    }
}
