//! Nodes in the state machine: `RegisterNode` (GPUs that turned unhealthy
//! go to `health.rs`'s cordon rule) and `NodeLost` (which fails the attempts
//! that ran on the node). `Cordon` is in `health.rs`.

use gpuctl_common::api::{
    push_event, Node, NodePhase, NodeSpec, NodeStatus, ObjectMeta, API_VERSION,
};

use super::command::{Applied, ApplyError, GpuFault, NodeRegistration};
use super::objects::ObjKey;
use super::State;

impl State {
    fn touch_node(&mut self, index: u64, name: &str) {
        if let Some(n) = self.nodes.get_mut(name) {
            n.metadata.resource_version = Some(index);
        }
        self.dirty.insert(ObjKey::Node(name.to_string()));
    }

    pub(super) fn register(&mut self, index: u64, now: u64, reg: &NodeRegistration) -> Applied {
        let name = reg.name.clone();
        let node = self.nodes.entry(name.clone()).or_insert_with(|| Node {
            api_version: API_VERSION.to_string(),
            kind: "Node".to_string(),
            metadata: ObjectMeta {
                name: name.clone(),
                uid: Some(index),
                creation_timestamp_ms: Some(now),
                ..Default::default()
            },
            spec: NodeSpec::default(),
            status: NodeStatus {
                registered_ms: now,
                last_transition_ms: now,
                ..Default::default()
            },
        });
        node.metadata.labels = reg.labels.clone();
        // GPUs that turned unhealthy since the last registration.
        let faults: Vec<GpuFault> = reg
            .gpus
            .iter()
            .filter(|g| !g.healthy)
            .filter(|g| {
                let before = node.status.gpus.iter().find(|o| o.index == g.index);
                before.is_none_or(|o| o.healthy || o.xid != g.xid)
            })
            .map(|g| GpuFault {
                index: g.index,
                uuid: g.uuid.clone(),
                xid: g.xid,
            })
            .collect();
        let s = &mut node.status;
        if s.phase != NodePhase::Ready {
            s.phase = NodePhase::Ready;
            s.last_transition_ms = now;
        }
        s.address = reg.address.clone();
        s.agent_endpoint = reg.agent_endpoint.clone();
        s.inventory = reg.inventory.clone();
        s.cpu_milli = reg.cpu_milli;
        s.memory_bytes = reg.memory_bytes;
        s.gpus = reg.gpus.clone();
        s.registered_ms = now;
        s.cordon_after_unhealthy_gpus = reg.cordon_after_unhealthy_gpus;
        for f in &faults {
            let msg = f.message();
            push_event(&mut s.events, now, "GpuFault", msg);
        }
        for f in &faults {
            self.health_cordon(now, &name, Some(f));
        }
        self.touch_node(index, &name);
        Applied::Node(Box::new(self.nodes[&name].clone()))
    }

    pub(super) fn node_lost(
        &mut self,
        index: u64,
        now: u64,
        node: &str,
    ) -> Result<Applied, ApplyError> {
        let n = self
            .nodes
            .get_mut(node)
            .ok_or_else(|| ApplyError::NotFound {
                kind: "node",
                name: node.to_string(),
            })?;
        if n.status.phase == NodePhase::Lost {
            return Ok(Applied::Nothing);
        }
        n.status.phase = NodePhase::Lost;
        n.status.last_transition_ms = now;
        self.touch_node(index, node);
        let affected: Vec<String> = self.index.jobs_on(node).map(str::to_string).collect();
        for j in affected {
            self.fail_attempt(
                index,
                now,
                &j,
                &format!("node {node} was lost (missed heartbeats)"),
                "NodeLost",
            );
        }
        Ok(Applied::Node(Box::new(self.nodes[node].clone())))
    }
}
