//! A builder for the filters' and scores' tests.

use crate::placement::node::{GpuSlot, NodeModel, MILLI};

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
