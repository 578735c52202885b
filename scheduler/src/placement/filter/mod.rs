//! Feasibility: a node is a candidate for a task only when every filter
//! passes. Each filter is a pure predicate over one node.

pub mod gpu_fit;
pub mod host_fit;
pub mod schedulable;

use super::model::{NodeModel, PodRequest};

/// All filters, cheapest first. `accept` is the request's [`PodRequest::accept_table`].
pub fn passes(n: &NodeModel, req: &PodRequest, accept: &[bool]) -> bool {
    schedulable::passes(n) && host_fit::passes(n, req) && gpu_fit::passes(n, req, accept)
}

#[cfg(test)]
pub(crate) mod testutil {
    use crate::placement::model::{GpuSlot, NodeModel, MILLI};

    /// A node with GPUs of kind 0 whose used thousandths are `used`.
    pub fn node(cpu: u64, mem: u64, used: &[u32]) -> NodeModel {
        NodeModel {
            name: "n".into(),
            schedulable: true,
            cpu_milli: cpu,
            memory_bytes: mem,
            cpu_used: 0,
            memory_used: 0,
            gpus: used
                .iter()
                .enumerate()
                .map(|(i, u)| GpuSlot {
                    index: i as u32,
                    uuid: format!("g{i}"),
                    kind: 0,
                    domain: 0,
                    healthy: true,
                    free: MILLI - u,
                })
                .collect(),
        }
    }
}
