//! gpuctl's control plane.
//!
//! ```text
//!  gRPC (service)  ──propose──►  raft_node (RawNode thread) ──► storage (RocksDB)
//!       │ reads                      │ committed entries
//!       ▼                            ▼
//!     State  ◄──────────────── state::State::apply (pure)
//!       ▲
//!  controller (leader only): placement::place (pure) → Bind, NodeLost, FailAttempt,
//!                             WorkflowTick (workflow timers)
//!  workflows: a workflow's run (the `pipelines` crate) advances inside
//!  State::apply, which creates each ready step's job (state::workflows)
//! ```
//!
//! The pure parts ([`state`], [`placement`]) have no I/O and no clock; the
//! shells ([`storage`], [`raft_node`], [`service`], [`controller`]) are thin.

pub mod api;
pub mod controllers;
pub mod metrics;
pub mod placement;
pub mod raft;
pub mod server;
pub mod state;
