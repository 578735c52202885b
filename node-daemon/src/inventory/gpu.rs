//! What an inventory reports: one GPU as the scheduler places it
//! ([`GpuInfo`]), a sample of how it is doing ([`GpuSample`]), and the
//! [`GpuInventory`] trait that NVML and the simulation implement ([`NoGpus`]:
//! a node without NVML).

/// One GPU as the scheduler places it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    /// Stable identity, the label of every per-GPU metric.
    pub uuid: String,
    /// CUDA's index on this host: what `CUDA_VISIBLE_DEVICES` takes.
    pub index: u32,
    /// e.g. `A100-80GB` (simulated) or `NVIDIA A100-SXM4-80GB` (NVML).
    pub model: String,
    pub memory_bytes: u64,
    /// GPUs that share an NVLink/NVSwitch domain carry the same value.
    pub nvlink_domain: String,
    pub healthy: bool,
    /// The fatal XID that took it out of service (0: none; see
    /// [`gpuctl_common::xid`]).
    pub xid: u64,
    /// The minor number of its device file, `/dev/nvidia<minor>` (NVML's
    /// `minor_number`); `None`: unknown (simulated), taken to be `index`.
    pub minor: Option<u32>,
}

/// The device-file minors of the GPUs with CUDA indices `indices`: each
/// one's reported minor, else its index. Pure.
pub fn device_minors(devices: &[GpuInfo], indices: &[u32]) -> Vec<u32> {
    indices
        .iter()
        .map(|i| {
            devices
                .iter()
                .find(|d| d.index == *i)
                .and_then(|d| d.minor)
                .unwrap_or(*i)
        })
        .collect()
}

/// A point-in-time sample of one GPU, with the meanings of the DCGM exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSample {
    pub uuid: String,
    pub index: u32,
    pub model: String,
    pub memory_total_bytes: u64,
    /// Busy fraction over the last sample period, 0..=1.
    pub utilization_ratio: f64,
    pub memory_used_bytes: u64,
    pub temperature_celsius: f64,
    pub power_watts: f64,
    /// The last XID error seen (0: none), like `DCGM_FI_DEV_XID_ERRORS`.
    pub xid_errors: u64,
    pub healthy: bool,
}

/// The GPUs of this host. Implementations never panic: a query that fails is
/// logged and reported as an unhealthy device or a default value.
pub trait GpuInventory: Send + Sync {
    /// `"nvml"` or `"simulated"`: what `Register` reports as the inventory.
    fn kind(&self) -> &'static str;
    /// The devices, ordered by index.
    fn devices(&self) -> Vec<GpuInfo>;
    /// A fresh sample of every device.
    fn metrics(&self) -> Vec<GpuSample>;
    /// The GPU indices that running tasks hold. The simulated inventory uses
    /// them to report load; a real device measures its own.
    fn set_busy(&self, _indices: &[u32]) {}
    /// Look for faults injected since the last call (the simulated
    /// inventory's inject file); real devices report theirs in `metrics`.
    fn poll_faults(&self) {}
}

/// An inventory with no GPUs: what a node without NVML reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoGpus;

impl GpuInventory for NoGpus {
    fn kind(&self) -> &'static str {
        "nvml"
    }
    fn devices(&self) -> Vec<GpuInfo> {
        Vec::new()
    }
    fn metrics(&self) -> Vec<GpuSample> {
        Vec::new()
    }
}

#[cfg(test)]
mod minor_tests {
    use super::*;

    #[test]
    fn minors_come_from_the_inventory_else_the_index() {
        let gpu = |index, minor| GpuInfo {
            uuid: format!("GPU-{index}"),
            index,
            model: "A100".into(),
            memory_bytes: 0,
            nvlink_domain: String::new(),
            healthy: true,
            xid: 0,
            minor,
        };
        // NVML's order and the driver's minors differ on this host.
        let devices = [gpu(0, Some(2)), gpu(1, Some(0)), gpu(2, None)];
        assert_eq!(device_minors(&devices, &[0, 1]), [2, 0]);
        assert_eq!(device_minors(&devices, &[2, 5]), [2, 5]);
        assert!(device_minors(&devices, &[]).is_empty());
    }
}
