//! The snapshot: free capacity of the cluster at one moment, as placement
//! reads it, taken from the replicated state ([`Snapshot::of`]) or built by
//! hand (tests, the trace replay).

use gpuctl_common::api::Node;

use super::filter::schedulable;
use crate::state::{NodeUsage, State};

/// One GPU as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuView {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_bytes: u64,
    /// NVLink domain the node reported; empty: none.
    pub nvlink_domain: String,
    pub healthy: bool,
    /// Thousandths in use.
    pub used_milli: u32,
}

/// One node as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub name: String,
    /// Ready and not cordoned.
    pub schedulable: bool,
    pub gpus: Vec<GpuView>,
    /// Capacity; 0 means "not reported", and is not enforced.
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub cpu_used: u64,
    pub memory_used: u64,
}

/// Free capacity of the cluster at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub nodes: Vec<NodeView>,
}

impl Snapshot {
    /// Take a consistent snapshot of the state.
    pub fn of(state: &State) -> Snapshot {
        Snapshot {
            nodes: nodes_with_usage(state)
                .map(|(n, u)| node_view(n, u))
                .collect(),
        }
    }
}

/// Each node of `state` (in name order) with its usage, if anything runs
/// there.
pub(super) fn nodes_with_usage(
    state: &State,
) -> impl Iterator<Item = (&Node, Option<&NodeUsage>)> + '_ {
    let mut usage = state.usages().peekable();
    state.nodes.iter().map(move |(name, n)| {
        while usage.next_if(|(k, _)| *k < name.as_str()).is_some() {}
        let u = usage.next_if(|(k, _)| *k == name.as_str()).map(|(_, u)| u);
        (n, u)
    })
}

/// How placement sees node `n` with usage `u`.
pub(super) fn node_view(n: &Node, u: Option<&NodeUsage>) -> NodeView {
    NodeView {
        name: n.metadata.name.clone(),
        schedulable: schedulable::node_object(n),
        gpus: n
            .status
            .gpus
            .iter()
            .map(|g| GpuView {
                index: g.index,
                uuid: g.uuid.clone(),
                model: g.model.clone(),
                memory_bytes: g.memory_bytes,
                nvlink_domain: g.nvlink_domain.clone(),
                healthy: g.healthy,
                used_milli: gpu_used(u, g.index),
            })
            .collect(),
        cpu_milli: n.status.cpu_milli,
        memory_bytes: n.status.memory_bytes,
        cpu_used: u.map_or(0, |u| u.cpu_milli),
        memory_used: u.map_or(0, |u| u.memory_bytes),
    }
}

/// Whether `v` is [`node_view`] of `n` and `u`, without building it.
pub(super) fn view_matches(n: &Node, u: Option<&NodeUsage>, v: &NodeView) -> bool {
    v.schedulable == schedulable::node_object(n)
        && v.cpu_milli == n.status.cpu_milli
        && v.memory_bytes == n.status.memory_bytes
        && v.cpu_used == u.map_or(0, |u| u.cpu_milli)
        && v.memory_used == u.map_or(0, |u| u.memory_bytes)
        && v.gpus.len() == n.status.gpus.len()
        && v.gpus.iter().zip(&n.status.gpus).all(|(v, g)| {
            v.index == g.index
                && v.healthy == g.healthy
                && v.memory_bytes == g.memory_bytes
                && v.used_milli == gpu_used(u, g.index)
                && v.uuid == g.uuid
                && v.model == g.model
                && v.nvlink_domain == g.nvlink_domain
        })
        && v.name == n.metadata.name
}

fn gpu_used(u: Option<&NodeUsage>, index: u32) -> u32 {
    u.and_then(|u| u.gpu_milli.get(&index).copied())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use gpuctl_common::api::NodePhase;

    use super::*;

    /// `view_matches` is true exactly for the view `node_view` builds: a
    /// change of any field the view reads makes it false.
    #[test]
    fn view_matches_what_node_view_builds() {
        let base = gpuctl_testkit::node("n1")
            .gpus(2, "A100")
            .nvlink("d")
            .cpu_milli(8000)
            .memory_bytes(1 << 30)
            .build();
        let usage = NodeUsage {
            gpu_milli: [(1, 500)].into_iter().collect(),
            cpu_milli: 1000,
            memory_bytes: 1 << 20,
        };
        let view = node_view(&base, Some(&usage));
        assert_eq!(view.gpus[1].used_milli, 500);
        assert!(view_matches(&base, Some(&usage), &view));
        assert!(!view_matches(&base, None, &view), "usage gone");
        type NodeChange = fn(&mut gpuctl_common::api::Node);
        let changes: [(&str, NodeChange); 11] = [
            ("name", |n| n.metadata.name = "n2".into()),
            ("cordon", |n| n.spec.unschedulable = true),
            ("lost", |n| n.status.phase = NodePhase::Lost),
            ("cpu", |n| n.status.cpu_milli += 1),
            ("memory", |n| n.status.memory_bytes += 1),
            ("a GPU less", |n| {
                n.status.gpus.pop();
            }),
            ("GPU health", |n| n.status.gpus[0].healthy = false),
            ("GPU uuid", |n| n.status.gpus[0].uuid = "x".into()),
            ("GPU model", |n| n.status.gpus[0].model = "H100".into()),
            ("GPU memory", |n| n.status.gpus[0].memory_bytes += 1),
            ("NVLink domain", |n| n.status.gpus[1].nvlink_domain.clear()),
        ];
        for (what, change) in changes {
            let mut n = base.clone();
            change(&mut n);
            assert!(!view_matches(&n, Some(&usage), &view), "{what}");
            assert!(
                view_matches(&n, Some(&usage), &node_view(&n, Some(&usage))),
                "{what}"
            );
        }
        type UsageChange = fn(&mut NodeUsage);
        let changes: [(&str, UsageChange); 3] = [
            ("GPU use", |u| u.gpu_milli.insert(0, 1000).map_or((), drop)),
            ("CPU used", |u| u.cpu_milli += 1),
            ("memory used", |u| u.memory_bytes += 1),
        ];
        for (what, change) in changes {
            let mut u = usage.clone();
            change(&mut u);
            assert!(!view_matches(&base, Some(&u), &view), "{what}");
        }
    }
}
