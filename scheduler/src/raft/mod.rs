//! Raft over RocksDB: the shell that makes the state machine replicated.
//!
//! ```text
//!  handle.rs     RaftHandle (propose, read barrier, membership) ─┐ Msg
//!  driver.rs     the thread: wall-clock ticks, requests  ◄───────┘
//!                  │ and the gRPC transport, around …
//!  replica.rs    Replica: raft-rs's RawNode, the bookkeeping of proposals
//!                  and reads, the status it publishes
//!  lease.rs      leader-lease reads: a leader a majority confirmed lately
//!                  answers read barriers without a heartbeat round
//!  ready.rs      one Ready: send → apply (State::apply) → persist → advance
//!  storage.rs    RaftStorage: the log, hard state and applied objects in RocksDB
//!  transport.rs  Raft messages to the other replicas over gRPC
//!  status.rs     RaftStatus: role, term, indexes, peers' progress
//!  harness/      (tests) N replicas in one process over an in-memory
//!                  network that can drop, cut and isolate
//! ```
//!
//! The metrics read what the driver reports ([`status`]); the driver never
//! reads metrics back.

pub mod driver;
pub mod handle;
#[cfg(test)]
mod harness;
mod lease;
mod ready;
mod replica;
pub mod status;
pub mod storage;
pub mod transport;

pub use driver::start;
pub use handle::{ProposeError, RaftHandle, RaftOptions, Shared, DEFAULT_COMPACT_AFTER};
pub use status::{PeerProgress, RaftStatus};
pub use storage::{RaftStorage, Recovered, StoreError};
pub use transport::Transport;
