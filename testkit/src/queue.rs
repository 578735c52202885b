//! [`QueueBuilder`]: a queue as `gpuctl apply` would send it.

use gpuctl_common::api::{ObjectMeta, API_VERSION};
use gpuctl_common::queue::{Queue, QueueSpec};

/// A queue named `name` with the defaults of an empty `spec`: no quota,
/// weight 1, no borrowing, preemptible.
pub fn queue(name: &str) -> QueueBuilder {
    QueueBuilder {
        queue: Queue {
            api_version: API_VERSION.into(),
            kind: "Queue".into(),
            metadata: ObjectMeta {
                name: name.into(),
                ..Default::default()
            },
            spec: QueueSpec::default(),
            status: None,
        },
    }
}

/// Sets one field at a time of the queue [`queue`] starts.
#[derive(Debug, Clone)]
pub struct QueueBuilder {
    queue: Queue,
}

impl QueueBuilder {
    /// GPUs the queue's jobs may hold at once (`None`: no limit).
    pub fn quota(mut self, gpus: Option<f64>) -> Self {
        self.queue.spec.gpu_quota = gpus;
        self
    }

    pub fn weight(mut self, w: u32) -> Self {
        self.queue.spec.weight = w;
        self
    }

    pub fn borrow(mut self, borrow: bool) -> Self {
        self.queue.spec.borrow = borrow;
        self
    }

    pub fn preemptible(mut self, preemptible: bool) -> Self {
        self.queue.spec.preemptible = preemptible;
        self
    }

    /// Replaces the whole spec.
    pub fn spec(mut self, spec: QueueSpec) -> Self {
        self.queue.spec = spec;
        self
    }

    /// The version a compare-and-set update expects (`None`: a blind write).
    pub fn resource_version(mut self, v: Option<u64>) -> Self {
        self.queue.metadata.resource_version = v;
        self
    }

    pub fn build(self) -> Queue {
        self.queue
    }

    /// Keyed by its name, as the state and placement hold queues.
    pub fn entry(self) -> (String, Queue) {
        (self.queue.metadata.name.clone(), self.queue)
    }
}

#[cfg(test)]
mod tests {
    use gpuctl_common::api::{parse_manifests, Manifest};

    use super::*;

    #[test]
    fn builds_what_the_parser_makes() {
        let q = queue("research")
            .quota(Some(2.5))
            .weight(2)
            .borrow(true)
            .preemptible(false)
            .build();
        q.validate().unwrap();
        let yaml = "apiVersion: gpuctl.io/v1\nkind: Queue\nmetadata: {name: research}\nspec: {gpuQuota: 2.5, weight: 2, borrow: true, preemptible: false}\n";
        let Manifest::Queue(parsed) = parse_manifests("q.yaml", yaml).unwrap().remove(0) else {
            panic!("not a queue")
        };
        assert_eq!(q, parsed);
        let yaml = "apiVersion: gpuctl.io/v1\nkind: Queue\nmetadata: {name: q}\n";
        let Manifest::Queue(parsed) = parse_manifests("q.yaml", yaml).unwrap().remove(0) else {
            panic!("not a queue")
        };
        assert_eq!(queue("q").build(), parsed);
    }
}
