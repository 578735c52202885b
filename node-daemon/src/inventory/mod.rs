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

/// Every GPU of `inv` as the node registers it, and `samples` of them (a
/// sample taken after listening for XID events): what `gpu-node
/// --print-inventory` prints, one GPU a line.
pub fn report(inv: &dyn GpuInventory, samples: &[GpuSample]) -> String {
    let mut out = format!("{}\n", describe(inv));
    for d in inv.devices() {
        out.push_str(&format!(
            "gpu {} uuid={} model={:?} memory={} MiB minor={} nvlink={:?} healthy={} xid={}\n",
            d.index,
            d.uuid,
            d.model,
            d.memory_bytes >> 20,
            d.minor.map_or_else(|| "-".to_string(), |m| m.to_string()),
            d.nvlink_domain,
            d.healthy,
            d.xid,
        ));
    }
    for s in samples {
        out.push_str(&format!(
            "sample {} utilization={:.0}% memory_used={} MiB temperature={:.0}C power={:.1}W last_xid={} healthy={}\n",
            s.index,
            s.utilization_ratio * 100.0,
            s.memory_used_bytes >> 20,
            s.temperature_celsius,
            s.power_watts,
            s.xid_errors,
            s.healthy,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_has_a_line_per_gpu_and_per_sample() {
        let inv = SimulatedInventory::from_specs("n1", &["2xA100-80GB".to_string()]).unwrap();
        let samples = inv.metrics();
        let text = report(&inv, &samples);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("GPU inventory: "), "{text}");
        assert!(lines[1].starts_with("gpu 0 uuid="), "{text}");
        assert!(lines[1].contains("model=\"A100-80GB\""), "{text}");
        assert!(lines[3].starts_with("sample 0 "), "{text}");
        assert!(lines[4].contains("last_xid=0 healthy=true"), "{text}");
    }
}
