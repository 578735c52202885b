//! Placement: a pure function from a cluster snapshot and the pending jobs
//! to gang bindings, with no I/O, no clock and seeded randomness only.
//!
//! ```text
//! plan_round(&State) (round) ─ fair-share order (fair) · quota (quota)
//!   place(&Snapshot, &[&Job]) ─ place_with(.., &Policy, &WorkloadMix) (place)
//!     per job (a gang: all tasks, or `minAvailable` of them, or nothing):
//!       per task (gang): choose_node_near(&ClusterModel, &PodRequest, ..)
//!         filter   fit: schedulable · host_fit (CPU, memory) · gpu_fit
//!                  (count, share, GPU memory, model alternatives, healthy
//!                  GPUs), each answering Fits, NotNow or Never with a reason
//!         options  which GPUs on each feasible node
//!         score    bestfit · frag (FGD's measure over the workload mix) ·
//!                  strand (GPU left without CPU/memory to back it) ·
//!                  topology (NVLink domains, gang on few nodes)
//!         choose   by the policy (fgd and fragaware read each node's
//!                  result from the model's memo while the node is unchanged;
//!                  fragaware reads the best node from the memo's rank index
//!                  per request shape, re-ranking only the nodes that changed)
//!       ClusterModel::commit (refuses any over-commit)
//!     a gang that does not fit is rolled back (ClusterModel::checkpoint);
//!     the first one reserves the nodes it needs (reservation)
//!   the first gang that does not fit may preempt (preempt)
//! waiting: why a pending job waits, from the round and the filters
//! infeasible: a job no node could ever run, refused at submit
//! ```
//!
//! The seam stays `place(&Snapshot, &[&Job]) -> Vec<Binding>`; the trace
//! replay (`benches`, `trace-replay`) drives [`choose_node`] per pod, the same
//! code path `place` takes per task. The leader keeps a [`Planner`], which
//! decides as [`plan_round`] without building the model anew each round.
//!
//! This file only names the parts; each lives in a module of its own, and
//! none of them reads from this one.

mod changes;
mod choose;
pub mod fair;
pub mod filter;
pub mod fit;
mod gang;
mod infeasible;
mod memo;
mod mix;
mod model;
mod node;
mod place;
mod planner;
mod policy;
pub mod preempt;
pub mod quota;
mod request;
mod reservation;
mod round;
pub mod score;
mod snapshot;
#[cfg(test)]
pub(crate) mod testutil;
mod waiting;

pub use choose::{choose_node, choose_node_near};
pub use filter::{Fit, Misfit};
pub use infeasible::infeasible;
pub use mix::{MixEntry, MixOptions, WorkloadMix};
pub use model::{Checkpoint, ClusterModel, CommitError, Placement};
pub use node::{GpuKind, GpuSlot, NodeModel, MILLI};
pub use place::{place, place_with, place_with_reservation};
pub use planner::Planner;
pub use policy::Policy;
pub use request::PodRequest;
pub use reservation::Reservation;
pub use round::{plan_round, Round};
pub use snapshot::{GpuView, NodeView, Snapshot};
pub use waiting::{group_fits, waiting, waiting_reason, Explainer, GroupFit, Waiting};
