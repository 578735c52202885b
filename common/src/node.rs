//! GPU hosts as their node daemons registered them: the `Node` object and
//! its GPUs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::api::ObjectMeta;

/// A GPU host, as its node daemon registered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: NodeSpec,
    pub status: NodeStatus,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    /// Cordoned: no new tasks are placed here.
    #[serde(default)]
    pub unschedulable: bool,
    /// Why it is cordoned (an admin's `--reason`, a drain, or a GPU fault);
    /// `None` when not cordoned or no reason was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cordon_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NodePhase {
    #[default]
    Ready,
    /// Missed heartbeats; its running tasks were failed.
    Lost,
}

impl fmt::Display for NodePhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub phase: NodePhase,
    /// Address gang peers use to reach the node (MASTER_ADDR).
    pub address: String,
    /// The node daemon's gRPC endpoint.
    pub agent_endpoint: String,
    /// `nvml` or `simulated`.
    pub inventory: String,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub gpus: Vec<Gpu>,
    #[serde(default)]
    pub registered_ms: u64,
    #[serde(default)]
    pub last_transition_ms: u64,
    /// Unhealthy GPUs at which the node cordons itself (0: never by count),
    /// as its daemon's `--cordon-after-unhealthy-gpus` says.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cordon_after_unhealthy_gpus: u32,
    /// GPU faults and cordons, shown by `gpuctl describe node`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<crate::api::Event>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gpu {
    pub uuid: String,
    pub index: u32,
    pub model: String,
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nvlink_domain: String,
    pub healthy: bool,
    /// The fatal XID that took it out of service (0: none).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub xid: u64,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}
