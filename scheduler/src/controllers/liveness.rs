//! Node liveness (leader only): the last heartbeat of each node, and the
//! Ready nodes silent for longer than the timeout, which are marked lost.
//! The heartbeat table is soft state: a new leader gives every node a fresh
//! grace period.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gpuctl_common::api::NodePhase;

use crate::state::{Command, State};

/// Last heartbeat seen from each node, on this replica (leader-local soft
/// state: a new leader gives every node a fresh grace period).
#[derive(Default)]
pub struct Heartbeats {
    seen: Mutex<HashMap<String, Instant>>,
}

impl Heartbeats {
    pub fn beat(&self, node: &str, now: Instant) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), now);
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
/// at `now`. A node never heard from counts as heard at `now` (first asked).
pub fn lost_nodes(
    st: &State,
    heartbeats: &Heartbeats,
    now: Instant,
    timeout: Duration,
) -> Vec<Command> {
    st.nodes
        .values()
        .filter(|n| n.status.phase == NodePhase::Ready)
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
        assert!(lost_nodes(&st, &hb, t0 + timeout, timeout).is_empty());
        hb.beat("b", t0 + Duration::from_secs(5));
        let lost = lost_nodes(&st, &hb, t0 + timeout + Duration::from_millis(1), timeout);
        assert_eq!(lost, vec![Command::NodeLost { node: "a".into() }]);
        hb.reset();
        assert!(
            lost_nodes(&st, &hb, t0 + 3 * timeout, timeout).is_empty(),
            "after a reset every node starts a fresh grace period"
        );
    }
}
