//! One scheduling round as the leader runs it: pending jobs in fair-share
//! order, those over their queue's quota held back, the rest placed; the
//! first gang that does not fit reserves nodes and, where allowed,
//! preempts.

use std::collections::BTreeMap;

use gpuctl_common::api::Job;

use super::fair;
use super::mix::WorkloadMix;
use super::model::ClusterModel;
use super::place::{place_kept, place_with_reservation};
use super::policy::Policy;
use super::preempt;
use super::quota;
use super::reservation::Reservation;
use super::snapshot::Snapshot;
use crate::state::{Binding, State};

/// What one scheduling round decides, from the state alone.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Round {
    /// Gangs to bind now.
    pub bindings: Vec<Binding>,
    /// Running jobs to stop so that the first waiting gang fits.
    pub preemption: Option<preempt::Plan>,
    /// Nodes held for the first waiting gang.
    pub reservation: Option<Reservation>,
    /// Jobs their queue's quota holds back, with the reason.
    pub held_back: Vec<(String, String)>,
}

/// One scheduling round, as the leader runs it: pending jobs in weighted
/// fair-share order across queues ([`fair::order`]), those over a quota held
/// back ([`quota::admit`]), then placed with the default policy; the first
/// gang that does not fit reserves nodes and, where allowed, preempts
/// ([`preempt::plan`]). Pure and deterministic. The leader keeps a
/// [`Planner`](super::planner::Planner) instead, which decides the same
/// without building the cluster model anew each round.
pub fn plan_round(st: &State) -> Round {
    let pending = st.pending_jobs();
    if pending.is_empty() {
        return Round::default();
    }
    plan_round_with(st, pending, &Snapshot::of(st), None)
}

/// [`plan_round`] for the non-empty `pending` on `snap`, the snapshot of
/// `st`. Placements and preemption checks go on `kept`, the leader's model
/// of `snap` (left standing for it), or on models built for each use.
pub(super) fn plan_round_with(
    st: &State,
    pending: Vec<&Job>,
    snap: &Snapshot,
    mut kept: Option<&mut ClusterModel>,
) -> Round {
    // Only live jobs hold resources, wait, or can be preempted: the round
    // costs what is live, not every ended job the state keeps (looked up
    // once: the queues' use, the workload mix and preemption read them).
    let live: Vec<&Job> = st.live_jobs().collect();
    let held = fair::held_by_queue(live.iter().copied());
    let ordered = fair::order(&pending, &st.queues, &held, &fair::capacity(snap));
    let gpu_held: BTreeMap<String, u64> =
        held.iter().map(|(q, u)| (q.clone(), u.gpu_milli)).collect();
    let (admitted, held_back) = quota::admit(&ordered, &st.queues, &gpu_held);
    let held_back = held_back
        .into_iter()
        .map(|(j, why)| (j.metadata.name.clone(), why))
        .collect();
    if admitted.is_empty() {
        return Round {
            held_back,
            ..Default::default()
        };
    }
    let policy = Policy::default();
    let mix = WorkloadMix::of_workload(live.iter().copied(), policy.mix_options());
    let (bindings, reservation) = match kept.as_deref_mut() {
        Some(model) => place_kept(model, snap, &admitted, &policy, &mix),
        None => place_with_reservation(snap, &admitted, &policy, &mix),
    };
    let head = admitted
        .iter()
        .find(|j| !bindings.iter().any(|b| b.job == j.metadata.name));
    let preemption = head.and_then(|head| {
        let (queues, held) = (&st.queues, &gpu_held);
        match kept {
            Some(model) => preempt::plan_on(model, snap, head, &live, queues, held, &policy, &mix),
            None => preempt::plan(snap, head, &live, queues, held, &policy, &mix),
        }
    });
    Round {
        bindings,
        preemption,
        reservation,
        held_back,
    }
}
