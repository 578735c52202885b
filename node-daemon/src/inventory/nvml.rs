//! Real GPUs through NVML. `nvml-wrapper` loads `libnvidia-ml.so.1` at run
//! time, so the daemon starts on a machine without the NVIDIA driver and says
//! so instead of failing to link.
//!
//! Every query can fail (a GPU that fell off the bus answers nothing): a
//! failure is logged once per device and kind of query, the value defaults to
//! zero and the device reports unhealthy. Nothing here panics.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError as RawError;
use nvml_wrapper::event::EventSet;
use nvml_wrapper::{Device, Nvml};

use super::gpu::{GpuInfo, GpuInventory, GpuSample};

/// NVML could not be loaded or initialised.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NvmlError(String);

/// The devices NVML reports on this host.
pub struct NvmlInventory {
    /// Leaked once per process: devices and the event set borrow it for the
    /// life of the daemon, which is what an inventory lives for.
    nvml: &'static Nvml,
    devices: Vec<GpuInfo>,
    /// XID events of all devices; `None` where the driver does not support
    /// them (then XID reads as 0).
    events: Mutex<Option<EventSet<'static>>>,
    /// The last XID seen per GPU UUID.
    last_xid: Mutex<HashMap<String, u64>>,
    /// (uuid, query) pairs already logged as failing, so a broken GPU does not
    /// flood the log on every scrape.
    logged: Mutex<BTreeSet<(String, &'static str)>>,
}

impl std::fmt::Debug for NvmlInventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlInventory")
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

impl NvmlInventory {
    /// Load NVML and list the devices.
    pub fn new() -> Result<Self, NvmlError> {
        let nvml = Nvml::init().map_err(|e| NvmlError(e.to_string()))?;
        let nvml: &'static Nvml = Box::leak(Box::new(nvml));
        let count = nvml
            .device_count()
            .map_err(|e| NvmlError(format!("counting devices: {e}")))?;
        let mut devices = Vec::new();
        let mut events = nvml.create_event_set().ok();
        for i in 0..count {
            let dev = match nvml.device_by_index(i) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!("NVML: GPU {i} does not answer: {e}; leaving it out");
                    continue;
                }
            };
            let uuid = dev.uuid().unwrap_or_else(|_| format!("GPU-unknown-{i}"));
            let model = dev.name().unwrap_or_else(|_| "unknown".to_string());
            let memory = dev.memory_info().map(|m| m.total);
            let healthy = memory.is_ok();
            // NVML has no NVLink domain id; GPUs of one host that see each
            // other over NVLink share the host's domain (good enough for
            // HGX/DGX boards, where all GPUs sit on one NVSwitch fabric).
            let nvlink_domain = if has_nvlink(&dev) {
                "nvl0".to_string()
            } else {
                String::new()
            };
            if let Some(set) = events.take() {
                events = match dev.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
                    Ok(set) => Some(set),
                    Err(e) => {
                        tracing::info!("NVML: no XID events for GPU {i}: {}", e.error);
                        None
                    }
                };
            }
            devices.push(GpuInfo {
                uuid,
                index: dev.index().unwrap_or(i),
                model,
                memory_bytes: memory.unwrap_or(0),
                nvlink_domain,
                healthy,
                xid: 0,
                minor: dev.minor_number().ok(),
            });
        }
        Ok(NvmlInventory {
            nvml,
            devices,
            events: Mutex::new(events),
            last_xid: Mutex::new(HashMap::new()),
            logged: Mutex::new(BTreeSet::new()),
        })
    }

    fn log_once(&self, uuid: &str, what: &'static str, e: &RawError) {
        let mut logged = lock(&self.logged);
        if logged.insert((uuid.to_string(), what)) {
            tracing::warn!("NVML: reading {what} of {uuid} failed: {e}");
        }
    }

    /// Drain pending XID events without waiting.
    fn poll_xids(&self) {
        let events = lock(&self.events);
        let Some(set) = events.as_ref() else {
            return;
        };
        // Bounded: at most this many events per sample.
        for _ in 0..1024 {
            match set.wait(0) {
                Ok(ev) => {
                    let xid = match ev.event_data {
                        Some(XidError::Value(v)) => v,
                        Some(XidError::Unknown) => 999,
                        None => continue,
                    };
                    if let Ok(uuid) = ev.device.uuid() {
                        tracing::warn!("NVML: GPU {uuid} reported XID {xid}");
                        lock(&self.last_xid).insert(uuid, xid);
                    }
                }
                Err(RawError::Timeout) => break,
                Err(e) => {
                    tracing::debug!("NVML: reading XID events: {e}");
                    break;
                }
            }
        }
    }
}

fn has_nvlink(dev: &Device<'_>) -> bool {
    (0..18).any(|link| dev.link_wrapper_for(link).is_active().unwrap_or(false))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl GpuInventory for NvmlInventory {
    fn kind(&self) -> &'static str {
        "nvml"
    }

    fn devices(&self) -> Vec<GpuInfo> {
        // A GPU that reported a fatal XID stays out until the daemon restarts
        // (after the GPU was reset).
        let xids = lock(&self.last_xid).clone();
        let mut devices = self.devices.clone();
        for d in &mut devices {
            if let Some(&x) = xids
                .get(&d.uuid)
                .filter(|x| gpuctl_common::xid::is_fatal(**x))
            {
                d.healthy = false;
                d.xid = x;
            }
        }
        devices
    }

    fn metrics(&self) -> Vec<GpuSample> {
        self.poll_xids();
        let xids = lock(&self.last_xid).clone();
        self.devices
            .iter()
            .map(|d| {
                let mut healthy = true;
                let mut sample = GpuSample {
                    uuid: d.uuid.clone(),
                    index: d.index,
                    model: d.model.clone(),
                    memory_total_bytes: d.memory_bytes,
                    utilization_ratio: 0.0,
                    memory_used_bytes: 0,
                    temperature_celsius: 0.0,
                    power_watts: 0.0,
                    xid_errors: xids.get(&d.uuid).copied().unwrap_or(0),
                    healthy: false,
                };
                let dev = match self.nvml.device_by_index(d.index) {
                    Ok(dev) => dev,
                    Err(e) => {
                        self.log_once(&d.uuid, "the device handle", &e);
                        return sample;
                    }
                };
                match dev.utilization_rates() {
                    Ok(u) => sample.utilization_ratio = f64::from(u.gpu.min(100)) / 100.0,
                    Err(e) => {
                        healthy = false;
                        self.log_once(&d.uuid, "utilization", &e);
                    }
                }
                match dev.memory_info() {
                    Ok(m) => sample.memory_used_bytes = m.used,
                    Err(e) => {
                        healthy = false;
                        self.log_once(&d.uuid, "memory", &e);
                    }
                }
                match dev.temperature(TemperatureSensor::Gpu) {
                    Ok(t) => sample.temperature_celsius = f64::from(t),
                    Err(e) => {
                        healthy = false;
                        self.log_once(&d.uuid, "temperature", &e);
                    }
                }
                // Not every board reports power; that alone is not a fault.
                match dev.power_usage() {
                    Ok(mw) => sample.power_watts = f64::from(mw) / 1000.0,
                    Err(e) => self.log_once(&d.uuid, "power", &e),
                }
                sample.healthy = healthy;
                sample
            })
            .collect()
    }
}
