//! Registration and heartbeats: `Register` (retried with backoff) with this
//! node's identity and GPU inventory, then `Heartbeat` with GPU metrics every
//! interval, registering again when the scheduler asks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gpuctl_proto::v1::{GpuDevice, GpuMetrics, HeartbeatRequest, RegisterRequest};

use super::retry::{Backoff, Quiet};
use super::servers::Servers;
use crate::inventory::GpuInventory;

/// What the agent needs to know about this node.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub name: String,
    /// Host other gang members reach (MASTER_ADDR).
    pub address: String,
    /// `http://host:port` of the NodeAgent service.
    pub agent_endpoint: String,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub labels: BTreeMap<String, String>,
    /// Unhealthy GPUs at which the scheduler cordons this node (0: never).
    pub cordon_after_unhealthy_gpus: u32,
}

/// The `Register` request for this node and inventory.
pub fn register_request(id: &NodeIdentity, inv: &dyn GpuInventory) -> RegisterRequest {
    RegisterRequest {
        name: id.name.clone(),
        address: id.address.clone(),
        agent_endpoint: id.agent_endpoint.clone(),
        gpus: inv
            .devices()
            .into_iter()
            .map(|d| GpuDevice {
                uuid: d.uuid,
                index: d.index,
                model: d.model,
                memory_bytes: d.memory_bytes,
                nvlink_domain: d.nvlink_domain,
                healthy: d.healthy,
                xid: d.xid,
            })
            .collect(),
        cpu_milli: id.cpu_milli,
        memory_bytes: id.memory_bytes,
        inventory: inv.kind().to_string(),
        labels: id
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cordon_after_unhealthy_gpus: id.cordon_after_unhealthy_gpus,
    }
}

/// Register until the scheduler accepts; returns the heartbeat interval it
/// asks for (or `default` when it names none).
pub async fn register_until_ok(
    servers: &Servers,
    id: &NodeIdentity,
    inv: &Arc<dyn GpuInventory>,
    default: Duration,
) -> Duration {
    let mut backoff = Backoff::default();
    let mut quiet = Quiet::default();
    loop {
        // Device lists are cached by every inventory: cheap to call here.
        let req = register_request(id, inv.as_ref());
        let (call, mut client) = servers.client();
        match client.register(req).await {
            Ok(resp) => {
                quiet.ok("Register");
                servers.contact.ok(gpuctl_common::now_ms());
                servers.accepted(&call, resp.metadata());
                tracing::info!(
                    "registered node {} with {}",
                    id.name,
                    servers.url(call.index)
                );
                let ms = resp.into_inner().heartbeat_interval_ms;
                return if ms > 0 {
                    Duration::from_millis(ms)
                } else {
                    default
                };
            }
            Err(s) => {
                servers.contact.failed(format!(
                    "Register with {}: {}",
                    servers.url(call.index),
                    servers.why(call.index, &s)
                ));
                quiet.failed(
                    &format!("Register with {}", servers.url(call.index)),
                    servers.why(call.index, &s),
                );
                servers.failed(&call, &s).await;
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Heartbeat every `interval`; register again when the scheduler asks.
pub async fn heartbeat_loop(
    servers: Arc<Servers>,
    id: NodeIdentity,
    inv: Arc<dyn GpuInventory>,
    mut interval: Duration,
) {
    let mut quiet = Quiet::default();
    let default = interval;
    loop {
        tokio::time::sleep(interval).await;
        let samples = {
            let inv = inv.clone();
            tokio::task::spawn_blocking(move || inv.metrics())
                .await
                .unwrap_or_default()
        };
        let req = HeartbeatRequest {
            name: id.name.clone(),
            metrics: samples
                .into_iter()
                .map(|s| GpuMetrics {
                    uuid: s.uuid,
                    utilization_ratio: s.utilization_ratio,
                    memory_used_bytes: s.memory_used_bytes,
                    temperature_celsius: s.temperature_celsius,
                    power_watts: s.power_watts,
                    xid_errors: s.xid_errors,
                    healthy: s.healthy,
                })
                .collect(),
        };
        let (call, mut client) = servers.client();
        match client.heartbeat(req).await {
            Ok(resp) => {
                quiet.ok("Heartbeat");
                servers.contact.ok(gpuctl_common::now_ms());
                servers.accepted(&call, resp.metadata());
                let resp = resp.into_inner();
                if resp.reregister {
                    tracing::info!("scheduler asked node {} to register again", id.name);
                    interval = register_until_ok(&servers, &id, &inv, default).await;
                } else if resp.heartbeat_interval_ms > 0 {
                    interval = Duration::from_millis(resp.heartbeat_interval_ms);
                }
                servers.contact.set_interval(interval);
            }
            Err(s) => {
                servers.contact.failed(format!(
                    "Heartbeat to {}: {}",
                    servers.url(call.index),
                    servers.why(call.index, &s)
                ));
                quiet.failed(
                    &format!("Heartbeat to {}", servers.url(call.index)),
                    servers.why(call.index, &s),
                );
                servers.failed(&call, &s).await;
            }
        }
    }
}
