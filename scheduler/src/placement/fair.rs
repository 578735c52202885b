//! Weighted dominant resource fairness across queues: the order in which
//! pending jobs are offered to placement.
//!
//! Each queue's dominant share is the largest of its GPU, CPU and memory
//! shares of the cluster (what its bound and running tasks hold), divided by
//! its weight. Repeatedly, the queue with the smallest weighted dominant
//! share offers its next job (highest priority first, then oldest); the job's
//! request is added to the queue's usage as if it ran, so one pass
//! interleaves queues in proportion to their weights. Ties go to the queue
//! name, so the order is deterministic. Pure.

use std::collections::{BTreeMap, VecDeque};

use gpuctl_common::api::Job;
use gpuctl_common::queue::{Queue, DEFAULT_QUEUE};

use super::snapshot::Snapshot;

/// Resources held (or asked for), in the units the state keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub gpu_milli: u64,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
}

impl Usage {
    pub fn add(&mut self, o: Usage) {
        self.gpu_milli += o.gpu_milli;
        self.cpu_milli += o.cpu_milli;
        self.memory_bytes += o.memory_bytes;
    }

    /// What every task of `job` asks for, together.
    pub fn of_job(job: &Job) -> Usage {
        let mut u = Usage::default();
        for t in &job.spec.tasks {
            let n = u64::from(t.replicas);
            u.gpu_milli += n * t.resources.gpu_milli();
            u.cpu_milli += n * t.resources.cpu.map(|c| c.0).unwrap_or(0);
            u.memory_bytes += n * t.resources.memory.map(|m| m.0).unwrap_or(0);
        }
        u
    }

    /// The largest share of `total` (0 for a resource the cluster lacks).
    fn dominant_share(&self, total: &Usage) -> f64 {
        let share = |used: u64, cap: u64| {
            if cap == 0 {
                0.0
            } else {
                used as f64 / cap as f64
            }
        };
        share(self.gpu_milli, total.gpu_milli)
            .max(share(self.cpu_milli, total.cpu_milli))
            .max(share(self.memory_bytes, total.memory_bytes))
    }
}

/// What each queue's bound and running tasks hold.
pub fn held_by_queue<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> BTreeMap<String, Usage> {
    let mut out: BTreeMap<String, Usage> = BTreeMap::new();
    for j in jobs {
        for t in j.status.tasks.iter().filter(|t| t.phase.holds_resources()) {
            let spec = j.task_spec(t.index);
            let u = Usage {
                gpu_milli: t.gpus.iter().map(|g| u64::from(g.milli)).sum(),
                cpu_milli: spec.and_then(|s| s.resources.cpu).map_or(0, |c| c.0),
                memory_bytes: spec.and_then(|s| s.resources.memory).map_or(0, |m| m.0),
            };
            // A name copied once per queue, not once per task.
            match out.get_mut(queue_of(j)) {
                Some(held) => held.add(u),
                None => {
                    let mut held = Usage::default();
                    held.add(u);
                    out.insert(queue_of(j).to_string(), held);
                }
            }
        }
    }
    out
}

/// The cluster's capacity, from a placement snapshot.
pub fn capacity(snapshot: &Snapshot) -> Usage {
    let mut u = Usage::default();
    for n in &snapshot.nodes {
        u.gpu_milli += n.gpus.len() as u64 * 1000;
        u.cpu_milli += n.cpu_milli;
        u.memory_bytes += n.memory_bytes;
    }
    u
}

/// The queue a job belongs to.
pub fn queue_of(job: &Job) -> &str {
    job.metadata.queue.as_deref().unwrap_or(DEFAULT_QUEUE)
}

/// Order `pending` for placement: weighted DRF across queues, priority then
/// age within a queue. `held` is what each queue holds now; `total` the
/// cluster's capacity. A queue with no object has weight 1.
pub fn order<'a>(
    pending: &[&'a Job],
    queues: &BTreeMap<String, Queue>,
    held: &BTreeMap<String, Usage>,
    total: &Usage,
) -> Vec<&'a Job> {
    let mut by_queue: BTreeMap<&str, Vec<&'a Job>> = BTreeMap::new();
    for &j in pending {
        by_queue.entry(queue_of(j)).or_default().push(j);
    }
    let mut lines: BTreeMap<&str, (VecDeque<&'a Job>, Usage, f64)> = by_queue
        .into_iter()
        .map(|(q, mut jobs)| {
            jobs.sort_by_key(|j| (std::cmp::Reverse(j.spec.priority), j.metadata.uid));
            let weight = queues.get(q).map_or(1, |q| q.spec.weight.max(1));
            let usage = held.get(q).copied().unwrap_or_default();
            (q, (jobs.into(), usage, f64::from(weight)))
        })
        .collect();
    let mut out = Vec::with_capacity(pending.len());
    while out.len() < pending.len() {
        let next = lines
            .iter()
            .filter(|(_, (jobs, _, _))| !jobs.is_empty())
            .map(|(q, (_, usage, weight))| (*q, usage.dominant_share(total) / weight))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)));
        let Some((q, _)) = next else { break };
        let (jobs, usage, _) = lines.get_mut(q).expect("present");
        let job = jobs.pop_front().expect("not empty");
        usage.add(Usage::of_job(job));
        out.push(job);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::testutil;
    use gpuctl_common::queue::QueueSpec;

    fn job(name: &str, queue: &str, priority: i32, uid: u64, gpus: f64) -> Job {
        let mut j = testutil::job(name, Some(queue), priority, 1, gpus);
        j.metadata.uid = Some(uid);
        j
    }

    fn queues(weights: &[(&str, u32)]) -> BTreeMap<String, Queue> {
        weights
            .iter()
            .map(|(n, w)| {
                testutil::queue(
                    n,
                    QueueSpec {
                        weight: *w,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    fn names(v: &[&Job]) -> Vec<String> {
        v.iter().map(|j| j.metadata.name.clone()).collect()
    }

    const TOTAL: Usage = Usage {
        gpu_milli: 8000,
        cpu_milli: 0,
        memory_bytes: 0,
    };

    #[test]
    fn order_table() {
        // (jobs as (name, queue, priority, uid, gpus), weights, held GPU milli, expected order)
        type Case<'a> = (
            &'a [(&'a str, &'a str, i32, u64, f64)],
            &'a [(&'a str, u32)],
            &'a [(&'a str, u64)],
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            // One queue: priority first, then age.
            (
                &[
                    ("a", "q", 0, 1, 1.0),
                    ("b", "q", 5, 2, 1.0),
                    ("c", "q", 0, 0, 1.0),
                ],
                &[],
                &[],
                &["b", "c", "a"],
            ),
            // Equal weights, nothing held: the queues alternate.
            (
                &[
                    ("a1", "a", 0, 1, 1.0),
                    ("a2", "a", 0, 2, 1.0),
                    ("b1", "b", 0, 3, 1.0),
                    ("b2", "b", 0, 4, 1.0),
                ],
                &[],
                &[],
                &["a1", "b1", "a2", "b2"],
            ),
            // A queue already holding GPUs waits for the other.
            (
                &[
                    ("a1", "a", 0, 1, 1.0),
                    ("b1", "b", 0, 2, 1.0),
                    ("b2", "b", 0, 3, 1.0),
                ],
                &[],
                &[("a", 2000)],
                &["b1", "b2", "a1"],
            ),
            // Weight 2 gets two jobs' worth for the other's one.
            (
                &[
                    ("a1", "a", 0, 1, 1.0),
                    ("a2", "a", 0, 2, 1.0),
                    ("a3", "a", 0, 3, 1.0),
                    ("b1", "b", 0, 4, 1.0),
                    ("b2", "b", 0, 5, 1.0),
                ],
                &[("a", 2), ("b", 1)],
                &[],
                &["a1", "b1", "a2", "a3", "b2"],
            ),
            // Priority does not cross queues.
            (
                &[("a1", "a", 0, 1, 1.0), ("b1", "b", 100, 2, 1.0)],
                &[],
                &[("b", 1000)],
                &["a1", "b1"],
            ),
        ];
        for (i, (jobs, weights, held, want)) in cases.iter().enumerate() {
            let jobs: Vec<Job> = jobs
                .iter()
                .map(|(n, q, p, u, g)| job(n, q, *p, *u, *g))
                .collect();
            let refs: Vec<&Job> = jobs.iter().collect();
            let held: BTreeMap<String, Usage> = held
                .iter()
                .map(|(q, m)| {
                    (
                        q.to_string(),
                        Usage {
                            gpu_milli: *m,
                            ..Default::default()
                        },
                    )
                })
                .collect();
            let got = order(&refs, &queues(weights), &held, &TOTAL);
            assert_eq!(names(&got), *want, "case {i}");
        }
    }

    #[test]
    fn the_dominant_resource_counts() {
        // Queue a holds little GPU but most of the CPU: b goes first.
        let total = Usage {
            gpu_milli: 8000,
            cpu_milli: 100_000,
            memory_bytes: 0,
        };
        let held: BTreeMap<String, Usage> = [
            (
                "a".to_string(),
                Usage {
                    gpu_milli: 1000,
                    cpu_milli: 90_000,
                    memory_bytes: 0,
                },
            ),
            (
                "b".to_string(),
                Usage {
                    gpu_milli: 4000,
                    cpu_milli: 0,
                    memory_bytes: 0,
                },
            ),
        ]
        .into();
        let jobs = [job("a1", "a", 0, 1, 1.0), job("b1", "b", 0, 2, 1.0)];
        let refs: Vec<&Job> = jobs.iter().collect();
        assert_eq!(
            names(&order(&refs, &BTreeMap::new(), &held, &total)),
            ["b1", "a1"]
        );
    }
}
