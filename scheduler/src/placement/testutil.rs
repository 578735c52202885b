//! Builders shared by the placement modules' tests: the testkit's objects,
//! seen as placement sees them.

use gpuctl_common::api::Job;
use gpuctl_common::queue::{Queue, QueueSpec};
use gpuctl_testkit as kit;

use super::snapshot::{node_view, NodeView};

/// A schedulable node with `gpus` idle A100s (UUIDs `{name}-{i}`) and no
/// CPU or memory limit.
pub fn node(name: &str, gpus: u32) -> NodeView {
    let n = kit::node(name).uuid_prefix(name).gpus(gpus, kit::A100);
    node_view(&n.build(), None)
}

/// A pending job at attempt 1: one group of `replicas` tasks with `gpus`
/// each, in `queue` (`None`: as submitted, no queue named).
pub fn job(name: &str, queue: Option<&str>, priority: i32, replicas: u32, gpus: f64) -> Job {
    let mut j = kit::job(name)
        .replicas(replicas)
        .gpus(gpus)
        .priority(priority);
    if let Some(q) = queue {
        j = j.queue(q);
    }
    j.attempt(1).build()
}

/// A queue with `spec`, keyed by its name.
pub fn queue(name: &str, spec: QueueSpec) -> (String, Queue) {
    kit::queue(name).spec(spec).entry()
}
