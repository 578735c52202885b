//! gpuctl's control plane.
//!
//! ```text
//!  api/ (gRPC: Control, NodeService, Raft peers)
//!    │ Proposer: propose here, or forward to the leader
//!    ▼
//!  raft/ handle ──Msg──► driver (RawNode thread) ──► storage (RocksDB)
//!                          │ committed entries            ▲
//!                          ▼                              │ peers
//!  state/ State::apply (pure) ──► views (reads)      transport
//!    ▲
//!  controllers/ (leader only), each (state, soft state, now) → commands:
//!    scheduling (placement → Bind, Preempt), liveness (NodeLost),
//!    timeouts (FailAttempt), workflows (WorkflowTick), endpoints
//!    (autoscaler → ScaleEndpoint …), gc (Delete…); runner proposes them
//! ```
//!
//! Imports point down this picture: `api` and `controllers` use `raft`,
//! `state` and `placement`; `raft` uses `state`; `state` uses none of them.
//! A workflow's run (the `pipelines` crate) advances inside
//! [`State::apply`](state::State::apply), which creates each ready step's
//! job (`state::workflows`).
//!
//! The pure parts ([`state`], [`placement`], the decisions in
//! [`controllers`]) have no I/O and no clock; the shells ([`raft`], [`api`],
//! [`controllers::runner`], [`server`]) are thin. [`metrics`] reads what the
//! driver and the state report.

pub mod api;
pub mod controllers;
pub mod cron_zone;
pub mod metrics;
pub mod placement;
pub mod raft;
pub mod server;
pub mod state;
pub mod web;

/// What an endpoint's replica job is ([`endpoints::replica_job`]), at the
/// crate root as well: other crates check their example endpoints with it.
pub use state::endpoints;
