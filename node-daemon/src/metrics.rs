//! Prometheus metrics of the node daemon (`gpuctl_node_` prefix, base units).
//!
//! GPU gauges mirror the DCGM exporter's meanings and are sampled from the
//! inventory at scrape time, so `/metrics` is never staler than one scrape.
//! So are the running tasks' CPU time and memory (labels `job`, `task`),
//! read from their cgroups (tasks without a cgroup have none).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    CounterVec, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

use crate::inventory::GpuInventory;
use crate::isolation::Isolation;
use crate::runtime::TaskKey;

/// The daemon's metrics and the registry that serves them.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Task processes whose main process has not exited.
    pub tasks_running: IntGauge,
    pub task_starts: IntCounter,
    /// By `result`: `succeeded`, `failed` (includes tasks that could not
    /// start) or `stopped` (no longer assigned: a scale-down, a cancel, a
    /// preemption; not a failure of the task).
    pub task_exits: IntCounterVec,
    /// From receiving an assignment to the process being spawned.
    pub start_latency: Histogram,
    /// The tasks whose usage is exported (running ones).
    pub tasks: TaskSet,
}

/// The running tasks, whose cgroups are read on each scrape.
#[derive(Debug, Clone, Default)]
pub struct TaskSet(Arc<Mutex<BTreeSet<TaskKey>>>);

impl TaskSet {
    pub fn track(&self, key: TaskKey) {
        self.lock().insert(key);
    }
    pub fn untrack(&self, key: &TaskKey) {
        self.lock().remove(key);
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<TaskKey>> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Register every metric; the GPU gauges read `inventory` on each
    /// scrape, the task gauges the cgroups `isolation` names.
    pub fn new(
        inventory: Arc<dyn GpuInventory>,
        isolation: Arc<Isolation>,
    ) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        gpuctl_telemetry::register_build_info(&registry, "node")?;
        let tasks_running = IntGauge::new(
            "gpuctl_node_tasks_running",
            "Task processes running on this node.",
        )?;
        let task_starts =
            IntCounter::new("gpuctl_node_task_starts_total", "Task processes started.")?;
        let task_exits = IntCounterVec::new(
            Opts::new(
                "gpuctl_node_task_exits_total",
                "Task processes that ended (or could not start), by result: succeeded, failed, or stopped because they were no longer assigned (scale-down, cancel, preemption).",
            ),
            &["result"],
        )?;
        let start_latency = Histogram::with_opts(
            HistogramOpts::new(
                "gpuctl_node_task_start_latency_seconds",
                "Time from receiving an assignment to spawning its process.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )?;
        registry.register(Box::new(tasks_running.clone()))?;
        registry.register(Box::new(task_starts.clone()))?;
        registry.register(Box::new(task_exits.clone()))?;
        registry.register(Box::new(start_latency.clone()))?;
        registry.register(Box::new(GpuCollector::new(inventory)?))?;
        let tasks = TaskSet::default();
        registry.register(Box::new(TaskCollector::new(isolation, tasks.clone())?))?;
        // Both series exist from the start, so rate() works on the first exit.
        task_exits.with_label_values(&["succeeded"]);
        task_exits.with_label_values(&["failed"]);
        task_exits.with_label_values(&["stopped"]);
        Ok(Metrics {
            registry,
            tasks_running,
            task_starts,
            task_exits,
            start_latency,
            tasks,
        })
    }
}

/// Per-task CPU time and memory, read from the cgroups of the tracked
/// tasks on every scrape.
struct TaskCollector {
    isolation: Arc<Isolation>,
    tasks: TaskSet,
    cpu: CounterVec,
    memory: GaugeVec,
    memory_peak: GaugeVec,
    descs: Vec<Desc>,
}

const TASK_LABELS: [&str; 2] = ["job", "task"];

impl TaskCollector {
    fn new(isolation: Arc<Isolation>, tasks: TaskSet) -> Result<Self, prometheus::Error> {
        let cpu = CounterVec::new(
            Opts::new(
                "gpuctl_node_task_cpu_seconds_total",
                "CPU time used by a running task's processes (its cgroup).",
            ),
            &TASK_LABELS,
        )?;
        let memory = GaugeVec::new(
            Opts::new(
                "gpuctl_node_task_memory_bytes",
                "Memory charged to a running task's cgroup.",
            ),
            &TASK_LABELS,
        )?;
        let memory_peak = GaugeVec::new(
            Opts::new(
                "gpuctl_node_task_memory_peak_bytes",
                "The most memory charged to a running task's cgroup so far (0: not kept).",
            ),
            &TASK_LABELS,
        )?;
        let mut descs = Vec::new();
        descs.extend(cpu.desc().into_iter().cloned());
        descs.extend(memory.desc().into_iter().cloned());
        descs.extend(memory_peak.desc().into_iter().cloned());
        Ok(TaskCollector {
            isolation,
            tasks,
            cpu,
            memory,
            memory_peak,
            descs,
        })
    }
}

impl Collector for TaskCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.cpu.reset();
        self.memory.reset();
        self.memory_peak.reset();
        let keys: Vec<TaskKey> = self.tasks.lock().iter().cloned().collect();
        for k in keys {
            let Some(cg) = self
                .isolation
                .running_cgroup(&k.job, k.task_index, k.attempt)
            else {
                continue;
            };
            let u = cg.usage();
            let index = k.task_index.to_string();
            let labels = [k.job.as_str(), index.as_str()];
            self.cpu
                .with_label_values(&labels)
                .inc_by(u.cpu_ms as f64 / 1000.0);
            self.memory
                .with_label_values(&labels)
                .set(u.memory_bytes as f64);
            self.memory_peak
                .with_label_values(&labels)
                .set(u.memory_peak_bytes as f64);
        }
        let mut out = self.cpu.collect();
        out.extend(self.memory.collect());
        out.extend(self.memory_peak.collect());
        out
    }
}

/// Per-GPU gauges filled from a fresh inventory sample on every scrape.
struct GpuCollector {
    inventory: Arc<dyn GpuInventory>,
    utilization: GaugeVec,
    memory_used: GaugeVec,
    memory_total: GaugeVec,
    temperature: GaugeVec,
    power: GaugeVec,
    xid: GaugeVec,
    healthy: GaugeVec,
    descs: Vec<Desc>,
}

const GPU_LABELS: [&str; 3] = ["uuid", "index", "model"];

impl GpuCollector {
    fn new(inventory: Arc<dyn GpuInventory>) -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &GPU_LABELS);
        let utilization = gauge(
            "gpuctl_node_gpu_utilization_ratio",
            "Fraction of time the GPU was busy over the last sample period (DCGM_FI_DEV_GPU_UTIL / 100).",
        )?;
        let memory_used = gauge(
            "gpuctl_node_gpu_memory_used_bytes",
            "GPU framebuffer memory in use (DCGM_FI_DEV_FB_USED).",
        )?;
        let memory_total = gauge(
            "gpuctl_node_gpu_memory_total_bytes",
            "GPU framebuffer memory installed.",
        )?;
        let temperature = gauge(
            "gpuctl_node_gpu_temperature_celsius",
            "GPU temperature (DCGM_FI_DEV_GPU_TEMP).",
        )?;
        let power = gauge(
            "gpuctl_node_gpu_power_watts",
            "GPU power draw (DCGM_FI_DEV_POWER_USAGE).",
        )?;
        let xid = gauge(
            "gpuctl_node_gpu_xid_errors",
            "Value of the last XID error the GPU reported, 0 for none (DCGM_FI_DEV_XID_ERRORS).",
        )?;
        let healthy = gauge(
            "gpuctl_node_gpu_healthy",
            "1 if the GPU answers its queries and reported no XID error, else 0.",
        )?;
        let mut descs = Vec::new();
        for g in [
            &utilization,
            &memory_used,
            &memory_total,
            &temperature,
            &power,
            &xid,
            &healthy,
        ] {
            descs.extend(g.desc().into_iter().cloned());
        }
        Ok(GpuCollector {
            inventory,
            utilization,
            memory_used,
            memory_total,
            temperature,
            power,
            xid,
            healthy,
            descs,
        })
    }

    fn gauges(&self) -> [&GaugeVec; 7] {
        [
            &self.utilization,
            &self.memory_used,
            &self.memory_total,
            &self.temperature,
            &self.power,
            &self.xid,
            &self.healthy,
        ]
    }
}

impl Collector for GpuCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for g in self.gauges() {
            g.reset();
        }
        for s in self.inventory.metrics() {
            let index = s.index.to_string();
            let labels = [s.uuid.as_str(), index.as_str(), s.model.as_str()];
            self.utilization
                .with_label_values(&labels)
                .set(s.utilization_ratio);
            self.memory_used
                .with_label_values(&labels)
                .set(s.memory_used_bytes as f64);
            self.memory_total
                .with_label_values(&labels)
                .set(s.memory_total_bytes as f64);
            self.temperature
                .with_label_values(&labels)
                .set(s.temperature_celsius);
            self.power.with_label_values(&labels).set(s.power_watts);
            self.xid.with_label_values(&labels).set(s.xid_errors as f64);
            self.healthy
                .with_label_values(&labels)
                .set(if s.healthy { 1.0 } else { 0.0 });
        }
        self.gauges().iter().flat_map(|g| g.collect()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::SimulatedInventory;
    use prometheus::{Encoder, TextEncoder};

    #[test]
    fn gpu_gauges_follow_the_inventory() {
        let inv =
            Arc::new(SimulatedInventory::from_specs("n", &["2xA100-80GB".to_string()]).unwrap());
        let m = Metrics::new(inv.clone(), Arc::new(Isolation::none())).unwrap();
        inv.set_busy(&[1]);
        m.task_starts.inc();
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&m.registry.gather(), &mut buf)
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        let uuid = &inv.devices()[1].uuid;
        let line = format!(
            "gpuctl_node_gpu_utilization_ratio{{index=\"1\",model=\"A100-80GB\",uuid=\"{uuid}\"}} 1"
        );
        assert!(text.contains(&line), "{text}");
        assert!(text.contains("gpuctl_node_gpu_memory_total_bytes{index=\"0\""));
        assert!(text.contains("gpuctl_node_gpu_healthy{index=\"0\""));
        assert!(text.contains("gpuctl_node_task_starts_total 1"));
        assert!(text.contains("gpuctl_node_task_exits_total{result=\"failed\"} 0"));
        assert!(text.contains("gpuctl_node_task_start_latency_seconds_bucket"));
    }
}
