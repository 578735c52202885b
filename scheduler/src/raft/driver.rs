//! The Raft driver: one thread owns the replica's `raft::RawNode`
//! (`Replica`) and runs the loop raft-rs prescribes (tick/step/propose →
//! `ready()` → send messages → apply committed entries → persist entries
//! and hard state → send persisted messages → `advance()`); what one Ready
//! does is in `ready.rs`.
//!
//! ```text
//!  async callers ──Propose(Envelope)──► driver thread ──► RawNode
//!        ▲                                   │ ready
//!        │ reply after commit + apply        ▼
//!        └──────────────────────────── State::apply ──► RocksDB (state cf)
//!                                           │
//!                              version watch (wakes controllers, watchers)
//! ```
//!
//! Proposals that arrive together are proposed together and persisted in
//! one synced write, so throughput does not cost one fsync per command.
//! This file owns the wall clock and the peer transport; the replica
//! itself has neither.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use raft::prelude::Message;

use super::handle::{Msg, ProposeError, RaftHandle, RaftOptions};
use super::replica::{Outbox, Replica};
use super::storage::{RaftStorage, StoreError};
use super::transport::Transport;
use crate::metrics::Metrics;
use crate::state::State;

/// Start the driver thread over opened storage.
pub fn start(
    opts: RaftOptions,
    storage: RaftStorage,
    state: State,
    applied: u64,
    metrics: Metrics,
    transport: Option<Transport>,
) -> Result<(RaftHandle, std::thread::JoinHandle<()>), StoreError> {
    let propose_timeout = opts.propose_timeout;
    let replica = Replica::new(opts, storage, state, applied, metrics, incarnation())?;
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = RaftHandle {
        tx,
        shared: replica.shared.clone(),
        propose_timeout,
    };
    let mut driver = Driver { replica, transport };
    let thread = std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || driver.run(rx))
        .map_err(|e| StoreError::Corrupt {
            what: "raft thread".into(),
            detail: e.to_string(),
        })?;
    Ok((handle, thread))
}

/// Distinguishes this process's proposal ids from those of an earlier run
/// whose entries may still be replayed.
fn incarnation() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

/// The peers of a running replica: the gRPC transport, or nobody (a
/// single replica started without peers).
impl Outbox for Option<Transport> {
    fn send(&mut self, msgs: Vec<Message>) {
        match self {
            Some(t) => msgs.into_iter().for_each(|m| t.send(m)),
            None => {
                for m in msgs {
                    tracing::debug!("dropping raft message to {} (no peers configured)", m.to);
                }
            }
        }
    }
}

struct Driver {
    replica: Replica,
    transport: Option<Transport>,
}

impl Driver {
    fn run(&mut self, rx: Receiver<Msg>) {
        let r = &mut self.replica;
        if r.storage.conf_state().voters == vec![r.opts.id] {
            // No one to wait for: become leader at once instead of after an election timeout.
            let _ = r.node.campaign();
        }
        let mut next_tick = Instant::now() + self.replica.opts.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = match rx.recv_timeout(wait) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut stop = false;
            if let Some(m) = first {
                stop |= self.handle(m);
                // Batch whatever else is already queued.
                for _ in 0..4096 {
                    match rx.try_recv() {
                        Ok(m) => stop |= self.handle(m),
                        Err(_) => break,
                    }
                }
            }
            if Instant::now() >= next_tick {
                self.replica.tick();
                next_tick = Instant::now() + self.replica.opts.tick;
            }
            if let Err(e) = self.replica.on_ready(&mut self.transport) {
                tracing::error!("raft storage failed, stopping the replica: {e}");
                self.replica.fail_all(ProposeError::Storage(e.to_string()));
                break;
            }
            if stop {
                break;
            }
        }
        self.replica.fail_all(ProposeError::Shutdown);
    }

    /// Returns true on shutdown.
    fn handle(&mut self, m: Msg) -> bool {
        if matches!(m, Msg::Step(_)) && self.transport.as_ref().is_some_and(|t| t.is_cut_off()) {
            return false; // a simulated partition drops incoming traffic too
        }
        self.replica.handle(m)
    }
}
