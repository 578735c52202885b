//! The agent: talks to the scheduler's `NodeService` and keeps this node's
//! processes equal to the desired set of tasks.
//!
//! Five loops share nothing but channels:
//!
//! - *control* ([`control`]): `Register` (retried with backoff), then
//!   `Heartbeat` every interval (registering again when told to).
//! - *watch* ([`watch`]): `WatchAssignments`, whose every message is the full
//!   desired set (level-triggered), converted to typed [`Assignment`]s there.
//! - *reconciler* ([`reconciler`]): owns the local task table. On each
//!   desired set it runs the pure [`plan()`] and carries out its actions: start
//!   processes, stop process groups, report tasks it cannot have (lost across
//!   a daemon restart). *Waiters*, one per process, turn exits into events.
//! - *outbox* ([`outbox`]): sends `ReportTask` in order, retrying until
//!   acknowledged, so a scheduler restart loses no report (the scheduler
//!   applies them idempotently).
//! - *sweep* ([`sweep`], optional): removes the artifacts of deleted workflows.
//! - *health* ([`health`]): a GPU that newly reports a fatal XID fails the
//!   tasks on it ([`Event::GpuFault`] to the reconciler) and the node
//!   registers again with the GPU unhealthy.
//!
//! ```text
//!   control ──Register/Heartbeat──► scheduler ──WatchAssignments──► watch
//!                                      ▲                              │ Event::Desired
//!                                      │ ReportTask                   ▼
//!                                   outbox ◄──── TaskReport ──── reconciler ◄── Event::Exited ── waiters
//! ```
//!
//! [`servers`] (which replica to call, whether calls get through, this
//! node's credential from [`credentials`] on every call) and [`retry`]
//! (backoff, quiet logging) are shared by the loops.
//!
//! [`Assignment`]: crate::assignment::Assignment

pub mod control;
pub mod credentials;
pub mod health;
pub mod outbox;
pub mod plan;
pub mod reconciler;
pub mod retry;
pub mod servers;
pub mod sweep;
pub mod watch;

pub use control::{heartbeat_loop, register_request, register_until_ok, NodeIdentity};
pub use credentials::{CredentialError, Credentials};
pub use health::{gpu_health_loop, known_faults};
pub use outbox::outbox_loop;
pub use plan::{plan, Action, LocalState};
pub use reconciler::{Event, Reconciler, ReconcilerConfig, LOST_MESSAGE};
pub use retry::{brief, Backoff, BACKOFF_MAX, BACKOFF_MIN};
pub use servers::{AgentError, Call, Contact, NodeClient, Servers};
pub use sweep::artifact_sweep_loop;
pub use watch::watch_loop;
