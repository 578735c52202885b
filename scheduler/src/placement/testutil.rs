//! Builders shared by the placement modules' tests.

use gpuctl_common::api::{Job, JobSpec, ObjectMeta, Resources, TaskSpec};
use gpuctl_common::queue::{Queue, QueueSpec};

use super::snapshot::{GpuView, NodeView};

/// A schedulable node with `gpus` idle A100s and no CPU or memory limit.
pub fn node(name: &str, gpus: u32) -> NodeView {
    NodeView {
        name: name.into(),
        schedulable: true,
        gpus: (0..gpus)
            .map(|i| GpuView {
                index: i,
                uuid: format!("{name}-{i}"),
                model: "A100-80GB".into(),
                memory_bytes: 80 << 30,
                nvlink_domain: String::new(),
                healthy: true,
                used_milli: 0,
            })
            .collect(),
        cpu_milli: 0,
        memory_bytes: 0,
        cpu_used: 0,
        memory_used: 0,
    }
}

/// A pending job at attempt 1: one group of `replicas` tasks with `gpus`
/// each, in `queue` (`None`: as submitted, no queue named).
pub fn job(name: &str, queue: Option<&str>, priority: i32, replicas: u32, gpus: f64) -> Job {
    let mut j = Job::new(
        name,
        JobSpec {
            tasks: vec![TaskSpec {
                name: "main".into(),
                replicas,
                command: vec!["true".into()],
                env: Default::default(),
                working_dir: None,
                resources: Resources {
                    gpus,
                    ..Default::default()
                },
            }],
            min_available: None,
            priority,
            topology: Default::default(),
            max_retries: 0,
            timeout_seconds: None,
            ttl_seconds_after_finished: None,
        },
    );
    j.metadata.queue = queue.map(str::to_string);
    j.status.attempt = 1;
    j
}

/// A queue with `spec`, keyed by its name.
pub fn queue(name: &str, spec: QueueSpec) -> (String, Queue) {
    (
        name.to_string(),
        Queue {
            api_version: "gpuctl.io/v1".into(),
            kind: "Queue".into(),
            metadata: ObjectMeta {
                name: name.into(),
                ..Default::default()
            },
            spec,
            status: None,
        },
    )
}
