//! Leader-only controllers. Each is level-triggered and idempotent: a
//! function of (state, its soft state, now) that returns the commands
//! which bring the cluster where it should be, so a new leader simply runs
//! it again. [`runner`] proposes what they return.
//!
//! ```text
//!  scheduling.rs  pending jobs → placement core → Bind batch (+ Preempt)
//!  liveness.rs    Ready nodes silent past the timeout → NodeLost
//!                 (Heartbeats: the leader's table of last heartbeats)
//!  timeouts.rs    attempts running past timeoutSeconds → FailAttempt
//!  workflows.rs   runs whose timer passed → WorkflowTick
//!  endpoints.rs   gateway load (Loads) → autoscaler → ScaleEndpoint,
//!                 ReplicaDrained, EndpointLoad
//!  gc.rs          finished work past its time to live → DeleteJob/Workflow
//!  cron.rs        CronWorkflows' scheduled times → CronRun; their workflows
//!                 past the history limits → DeleteWorkflow
//!  runner.rs      the loops that read the state and propose
//! ```

pub mod cron;
pub mod endpoints;
pub mod gc;
pub mod liveness;
pub mod reseal;
pub mod runner;
pub mod scheduling;
pub mod timeouts;
pub mod workflows;

pub use endpoints::Loads;
pub use liveness::Heartbeats;
pub use runner::ControllerOptions;
