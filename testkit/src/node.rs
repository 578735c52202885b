//! [`NodeBuilder`]: a GPU host as its node daemon would have registered it,
//! and [`cluster`], a row of identical ones.

use gpuctl_common::api::{Gpu, Node, NodePhase, NodeSpec, NodeStatus, ObjectMeta, API_VERSION};

/// The GPU most fixtures use, as the simulated inventory names it.
pub const A100: &str = "A100-80GB";
/// Its memory.
pub const A100_MEMORY: u64 = 80 << 30;

/// A Ready node named `name` on loopback, with a simulated inventory, no
/// GPUs and no CPU or memory reported (0: not enforced by placement).
pub fn node(name: &str) -> NodeBuilder {
    NodeBuilder {
        node: Node {
            api_version: API_VERSION.into(),
            kind: "Node".into(),
            metadata: ObjectMeta {
                name: name.into(),
                ..Default::default()
            },
            spec: NodeSpec::default(),
            status: NodeStatus {
                phase: NodePhase::Ready,
                address: "127.0.0.1".into(),
                agent_endpoint: "http://127.0.0.1:1".into(),
                inventory: "simulated".into(),
                ..Default::default()
            },
        },
        uuid_prefix: format!("GPU-{name}"),
    }
}

/// `n` nodes `n0`, `n1`, ... with `gpus` idle A100s each.
pub fn cluster(n: u32, gpus: u32) -> Vec<Node> {
    (0..n)
        .map(|i| node(&format!("n{i}")).gpus(gpus, A100).build())
        .collect()
}

/// Sets one field at a time of the node [`node`] starts.
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    node: Node,
    /// GPU `i` added by [`NodeBuilder::gpus`] gets the UUID `{prefix}-{i}`.
    uuid_prefix: String,
}

impl NodeBuilder {
    /// UUIDs of the GPUs added after this: `{prefix}-{index}` (the default
    /// prefix is `GPU-{name}`, the simulated inventory's).
    pub fn uuid_prefix(mut self, prefix: &str) -> Self {
        self.uuid_prefix = prefix.into();
        self
    }

    /// Adds `count` healthy GPUs of `model` with [`A100_MEMORY`] each
    /// (change it with [`NodeBuilder::gpu_memory`]), indexed after any
    /// already there.
    pub fn gpus(mut self, count: u32, model: &str) -> Self {
        let gpus = &mut self.node.status.gpus;
        let first = gpus.len() as u32;
        gpus.extend((first..first + count).map(|i| Gpu {
            uuid: format!("{}-{i}", self.uuid_prefix),
            index: i,
            model: model.into(),
            memory_bytes: A100_MEMORY,
            nvlink_domain: String::new(),
            healthy: true,
            xid: 0,
        }));
        self
    }

    /// The memory of every GPU.
    pub fn gpu_memory(mut self, bytes: u64) -> Self {
        for g in &mut self.node.status.gpus {
            g.memory_bytes = bytes;
        }
        self
    }

    /// Every GPU in NVLink domain `domain`.
    pub fn nvlink(mut self, domain: &str) -> Self {
        for g in &mut self.node.status.gpus {
            g.nvlink_domain = domain.into();
        }
        self
    }

    /// GPU `index` reported unhealthy (an XID error, say).
    pub fn unhealthy(mut self, index: u32) -> Self {
        for g in &mut self.node.status.gpus {
            if g.index == index {
                g.healthy = false;
            }
        }
        self
    }

    /// CPU capacity, in thousandths of a core.
    pub fn cpu_milli(mut self, milli: u64) -> Self {
        self.node.status.cpu_milli = milli;
        self
    }

    /// Host memory capacity.
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.node.status.memory_bytes = bytes;
        self
    }

    /// Cordoned.
    pub fn unschedulable(mut self) -> Self {
        self.node.spec.unschedulable = true;
        self
    }

    /// Missed its heartbeats.
    pub fn lost(mut self) -> Self {
        self.node.status.phase = NodePhase::Lost;
        self
    }

    pub fn address(mut self, address: &str) -> Self {
        self.node.status.address = address.into();
        self
    }

    pub fn agent_endpoint(mut self, endpoint: &str) -> Self {
        self.node.status.agent_endpoint = endpoint.into();
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.node.metadata.labels.insert(key.into(), value.into());
        self
    }

    pub fn registered_ms(mut self, ms: u64) -> Self {
        self.node.status.registered_ms = ms;
        self
    }

    pub fn build(self) -> Node {
        self.node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_are_numbered_on_and_named_by_the_prefix() {
        let n = node("n1")
            .gpus(2, A100)
            .uuid_prefix("u")
            .gpus(1, "T4")
            .gpu_memory(16 << 30)
            .nvlink("d")
            .unhealthy(1)
            .build();
        let g: Vec<_> = n
            .status
            .gpus
            .iter()
            .map(|g| (g.index, g.uuid.as_str(), g.model.as_str(), g.healthy))
            .collect();
        assert_eq!(
            g,
            [
                (0, "GPU-n1-0", A100, true),
                (1, "GPU-n1-1", A100, false),
                (2, "u-2", "T4", true),
            ]
        );
        assert!(n.status.gpus.iter().all(|g| g.memory_bytes == 16 << 30));
        assert!(n.status.gpus.iter().all(|g| g.nvlink_domain == "d"));
    }

    #[test]
    fn a_cluster_is_named_from_n0() {
        let c = cluster(3, 8);
        let names: Vec<_> = c.iter().map(|n| n.metadata.name.as_str()).collect();
        assert_eq!(names, ["n0", "n1", "n2"]);
        assert!(c.iter().all(|n| n.status.gpus.len() == 8));
        assert_eq!(c[2].status.gpus[7].uuid, "GPU-n2-7");
    }
}
