//! One node as the placement pipeline sees it: compact state that filters
//! and scores read without allocating. GPUs name their (model, memory) kind
//! by number, so that a request's model constraints are matched once per
//! kind, not once per GPU.

/// Thousandths of a GPU in one whole GPU.
pub const MILLI: u32 = 1000;

/// A distinct (model, memory) pair. GPUs refer to kinds by number so that a
/// request's model constraints are matched once per kind, not once per GPU.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GpuKind {
    pub model: String,
    pub memory_bytes: u64,
}

/// One GPU of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSlot {
    /// Device index reported by the node.
    pub index: u32,
    pub uuid: String,
    /// Index into [`ClusterModel::kinds`](super::model::ClusterModel::kinds).
    pub kind: u16,
    /// NVLink domain number within the node; GPUs reporting no domain share 0.
    pub domain: u16,
    pub healthy: bool,
    /// Thousandths still free.
    pub free: u32,
}

/// One node: capacity, use, and its GPUs.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeModel {
    pub name: String,
    /// Ready and not cordoned.
    pub schedulable: bool,
    /// Capacity; 0 means "not reported" and is not enforced.
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub cpu_used: u64,
    pub memory_used: u64,
    pub gpus: Vec<GpuSlot>,
}

impl NodeModel {
    /// CPU still free (`u64::MAX` when capacity is not enforced).
    pub fn cpu_left(&self) -> u64 {
        if self.cpu_milli == 0 {
            u64::MAX
        } else {
            self.cpu_milli.saturating_sub(self.cpu_used)
        }
    }

    /// Memory still free (`u64::MAX` when capacity is not enforced).
    pub fn memory_left(&self) -> u64 {
        if self.memory_bytes == 0 {
            u64::MAX
        } else {
            self.memory_bytes.saturating_sub(self.memory_used)
        }
    }

    /// Free thousandths over healthy GPUs.
    pub fn gpu_free_milli(&self) -> u64 {
        self.gpus
            .iter()
            .filter(|g| g.healthy)
            .map(|g| u64::from(g.free))
            .sum()
    }
}
