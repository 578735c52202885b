//! The reservation: the nodes held for the first gang of a pass that does
//! not fit yet, so that a stream of small jobs cannot starve it.

use gpuctl_common::api::Job;
use rand::rngs::StdRng;

use super::gang::place_gang;
use super::mix::WorkloadMix;
use super::model::ClusterModel;
use super::policy::Policy;
use super::snapshot::{NodeView, Snapshot};

/// Nodes held for a gang that does not fit yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub job: String,
    pub nodes: Vec<String>,
}

/// Reserve nodes for `job`, which does not fit on `work` now: the nodes it
/// would take on an empty cluster ([`nodes_for`]), held on `work` (no later
/// job of the pass is placed there). `None`, and nothing held, when it
/// would not fit even on the empty cluster.
pub(super) fn reserve(
    snapshot: &Snapshot,
    work: &mut ClusterModel,
    job: &Job,
    mix: &WorkloadMix,
    rng: &mut StdRng,
) -> Option<Reservation> {
    let nodes = nodes_for(snapshot, work, job, mix, rng)?;
    for i in 0..work.nodes().len() {
        if nodes.contains(&work.nodes()[i].name) {
            work.node_mut(i).schedulable = false;
        }
    }
    Some(Reservation {
        job: job.metadata.name.clone(),
        nodes,
    })
}

/// Where `job` would run if the schedulable nodes were empty, trying the
/// nodes with the most GPU free in `work` first; `None` if it would not fit.
fn nodes_for(
    snapshot: &Snapshot,
    work: &ClusterModel,
    job: &Job,
    mix: &WorkloadMix,
    rng: &mut StdRng,
) -> Option<Vec<String>> {
    let nodes = work.nodes();
    let mut order: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].schedulable).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(nodes[i].gpu_free_milli()), i));
    let empty: Vec<NodeView> = order
        .iter()
        .map(|&i| {
            let mut v = snapshot.nodes[i].clone();
            v.cpu_used = 0;
            v.memory_used = 0;
            for g in &mut v.gpus {
                g.used_milli = 0;
            }
            v
        })
        .collect();
    let mut model = ClusterModel::from_views(&empty);
    let tasks = place_gang(&mut model, job, &Policy::FirstFit, mix, rng);
    if (tasks.len() as u32) < job.spec.min_available.unwrap_or(job.task_count()) {
        return None;
    }
    let mut nodes: Vec<String> = tasks.into_iter().map(|t| t.node).collect();
    nodes.sort();
    nodes.dedup();
    Some(nodes)
}
