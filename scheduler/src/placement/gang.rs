//! One gang on a model: its tasks placed one by one, a packed gang's near
//! the nodes it already holds. The caller keeps the trial or rolls it back.

use gpuctl_common::api::{GpuShare, Job, Topology};
use rand::rngs::StdRng;

use super::choose::choose_node_near;
use super::mix::WorkloadMix;
use super::model::ClusterModel;
use super::policy::Policy;
use super::request::PodRequest;
use crate::state::TaskPlacement;

/// Place a job's tasks one by one on `trial`; returns the tasks placed (all
/// of them, or fewer when one did not fit).
pub(super) fn place_gang(
    trial: &mut ClusterModel,
    job: &Job,
    policy: &Policy,
    mix: &WorkloadMix,
    rng: &mut StdRng,
) -> Vec<TaskPlacement> {
    let mut tasks = Vec::new();
    let mut gang_nodes: Vec<usize> = Vec::new();
    let pack = job.spec.topology == Topology::Pack;
    for index in 0..job.task_count() {
        let Some(spec) = job.task_spec(index) else {
            break;
        };
        let req = PodRequest::from_resources(&spec.resources);
        let near = if pack { &gang_nodes[..] } else { &[] };
        let Some(p) = choose_node_near(trial, &req, policy, mix, rng, near) else {
            break;
        };
        if trial.commit(&req, &p).is_err() {
            break;
        }
        let n = &trial.nodes()[p.node];
        tasks.push(TaskPlacement {
            index,
            node: n.name.clone(),
            gpus: p
                .gpus
                .iter()
                .map(|&g| GpuShare {
                    index: n.gpus[g].index,
                    uuid: n.gpus[g].uuid.clone(),
                    milli: p.milli,
                })
                .collect(),
        });
        if !gang_nodes.contains(&p.node) {
            gang_nodes.push(p.node);
        }
    }
    tasks
}
