//! What GPUs this host has and how they are doing.
//!
//! One small trait, two implementations: [`NvmlInventory`] reads real devices
//! through NVML (loaded at run time), [`SimulatedInventory`] describes devices
//! from `--gpus 4xA100-80GB` specs or a YAML file. The simulated inventory is a
//! product feature (`gpuctl dev`, CI, capacity planning), not a test double.

mod gpu;
mod nvml;
mod sim;

pub use gpu::{device_minors, GpuInfo, GpuInventory, GpuSample, NoGpus};
pub use nvml::{NvmlError, NvmlInventory};
pub use sim::{parse_gpu_spec, SimError, SimulatedInventory};

/// One log line that names the inventory and its GPUs.
pub fn describe(inv: &dyn GpuInventory) -> String {
    let devices = inv.devices();
    if devices.is_empty() {
        return format!("GPU inventory: {} (no GPUs)", inv.kind());
    }
    let list: Vec<String> = devices
        .iter()
        .map(|d| {
            let mut s = format!("{}:{}", d.index, d.model);
            if !d.nvlink_domain.is_empty() {
                s.push_str(&format!("@{}", d.nvlink_domain));
            }
            if !d.healthy {
                s.push_str("(unhealthy)");
            }
            s
        })
        .collect();
    format!(
        "GPU inventory: {} ({} GPUs: {})",
        inv.kind(),
        devices.len(),
        list.join(", ")
    )
}
