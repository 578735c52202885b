//! The registration command of a node the tests build with the testkit, so
//! the state machine's tests and the controllers' start from one kind of node.

use gpuctl_common::api::Node;

use super::command::{Command, NodeRegistration};

/// `RegisterNode` of `n` as its node daemon would send it.
pub fn register(n: &Node) -> Command {
    Command::RegisterNode {
        reg: NodeRegistration {
            name: n.metadata.name.clone(),
            address: n.status.address.clone(),
            agent_endpoint: n.status.agent_endpoint.clone(),
            inventory: n.status.inventory.clone(),
            cpu_milli: n.status.cpu_milli,
            memory_bytes: n.status.memory_bytes,
            gpus: n.status.gpus.clone(),
            labels: n.metadata.labels.clone(),
            cordon_after_unhealthy_gpus: n.status.cordon_after_unhealthy_gpus,
        },
    }
}
