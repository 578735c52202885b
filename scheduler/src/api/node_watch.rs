//! Per-node wakeups for `WatchAssignments`: one task follows the applied
//! version and reads the state's per-node change log
//! ([`NodeChanges`](crate::state::index::NodeChanges)), and wakes the
//! streams of only the nodes it names. An applied batch costs the nodes it
//! changed, not one assignment build per connected node.
//!
//! ```text
//!  raft apply ─► version ─► follow ─► changes since its cursor ─► NodeWakeups
//!                                                                   │ node's counter
//!                                                     WatchAssignments stream of that node
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::raft::Shared;
use crate::state::ChangeCursor;

/// A counter per watched node, bumped when its assignments may have changed.
#[derive(Debug, Default)]
pub struct NodeWakeups {
    nodes: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl NodeWakeups {
    /// A receiver that changes whenever `node`'s assignments may have.
    pub fn subscribe(&self, node: &str) -> watch::Receiver<u64> {
        let mut nodes = self.lock();
        // Drop counters no stream reads any more (a node that went away).
        if nodes.len() > 64 && nodes.len().is_power_of_two() {
            nodes.retain(|_, tx| tx.receiver_count() > 0);
        }
        nodes
            .entry(node.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wake the streams of `changed` nodes; with `None`, of every node.
    fn wake<'a>(&self, changed: Option<impl Iterator<Item = &'a str>>) {
        let nodes = self.lock();
        let bump = |tx: &watch::Sender<u64>| {
            tx.send_modify(|v| *v = v.wrapping_add(1));
        };
        match changed {
            Some(names) => names.filter_map(|n| nodes.get(n)).for_each(bump),
            None => nodes.values().for_each(bump),
        }
    }

    /// Streams currently subscribed (for tests and metrics).
    pub fn watched(&self) -> usize {
        self.lock()
            .values()
            .filter(|tx| tx.receiver_count() > 0)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Until `stop`: after every applied batch, wake the streams of the nodes
/// the state's change log names since the last batch (every stream when the
/// state was replaced, e.g. by a snapshot).
pub async fn follow(
    shared: Arc<Shared>,
    wakeups: Arc<NodeWakeups>,
    mut stop: watch::Receiver<bool>,
) {
    let mut version = shared.version.subscribe();
    let mut cursor: Option<ChangeCursor> = None;
    loop {
        {
            let st = shared.read();
            let log = st.node_changes();
            wakeups.wake(cursor.and_then(|c| log.since(c)));
            cursor = Some(log.cursor());
        }
        tokio::select! {
            r = version.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_only_the_named_nodes() {
        let w = NodeWakeups::default();
        let mut a = w.subscribe("a");
        let mut b = w.subscribe("b");
        a.mark_unchanged();
        b.mark_unchanged();
        w.wake(Some(["a", "c"].into_iter()));
        assert!(a.has_changed().unwrap());
        assert!(!b.has_changed().unwrap(), "b's assignments did not change");
        a.mark_unchanged();
        w.wake(None::<std::iter::Empty<&str>>);
        assert!(a.has_changed().unwrap() && b.has_changed().unwrap());
        drop(b);
        assert_eq!(w.watched(), 1);
    }
}
