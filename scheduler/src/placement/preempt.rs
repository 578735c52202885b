//! Preemption: when the first pending job in order cannot be placed, which
//! running jobs to stop so that it can.
//!
//! A running job may be chosen when
//! - it is in the same queue with a lower priority (priority preemption), or
//! - it belongs to another queue that holds more GPUs than its quota (a queue
//!   with no quota is guaranteed none: everything it holds is borrowed idle
//!   capacity) and lets its jobs be preempted, while the pending job's own
//!   queue stays within its quota with it (reclaim).
//!
//! Victims are taken cheapest first (lowest priority, fewest GPUs, most
//! recently started, so the least work is lost) until the job fits; then any
//! victim the job fits without is given back, most expensive first. A gang
//! is stopped whole. Pure: the fit is checked with [`place_with`] on the
//! snapshot with the victims' resources released ([`plan`]), or, by the
//! leader's kept [`Planner`](super::planner::Planner), on its model with the victims'
//! resources released and rolled back after each check ([`plan_on`]): the
//! same decisions without building the cluster model anew for each of up to
//! [`MAX_CANDIDATES`] checks.

use std::collections::{BTreeMap, HashMap};

use gpuctl_common::api::{GpuShare, Job, JobPhase};
use gpuctl_common::queue::Queue;
use rand::{rngs::StdRng, SeedableRng};

use super::fair::queue_of;
use super::gang::place_gang;
use super::mix::WorkloadMix;
use super::model::{ClusterModel, Placement};
use super::place::place_with;
use super::policy::Policy;
use super::request::PodRequest;
use super::snapshot::Snapshot;

/// Most candidates looked at for one preemption.
pub const MAX_CANDIDATES: usize = 256;

/// The decision: stop these jobs' current attempts so that `preemptor` fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub preemptor: String,
    /// (job, attempt) of each victim.
    pub victims: Vec<(String, u32)>,
    /// Why, for the victims' events.
    pub reason: String,
}

/// Which running jobs to preempt for `head`, or `None` when none may be or
/// stopping every candidate would still not make it fit. `queue_held` is
/// the GPU thousandths each queue holds now.
pub fn plan(
    snapshot: &Snapshot,
    head: &Job,
    jobs: &[&Job],
    queues: &BTreeMap<String, Queue>,
    queue_held: &BTreeMap<String, u64>,
    policy: &Policy,
    mix: &WorkloadMix,
) -> Option<Plan> {
    plan_by(head, jobs, queues, queue_held, |victims| {
        let freed = release(snapshot, victims);
        !place_with(&freed, &[head], policy, mix).is_empty()
    })
}

/// [`plan`] with each fit checked on `model`, which stands for `snapshot`
/// (and does again after).
#[allow(clippy::too_many_arguments)]
pub(super) fn plan_on(
    model: &mut ClusterModel,
    snapshot: &Snapshot,
    head: &Job,
    jobs: &[&Job],
    queues: &BTreeMap<String, Queue>,
    queue_held: &BTreeMap<String, u64>,
    policy: &Policy,
    mix: &WorkloadMix,
) -> Option<Plan> {
    let at: HashMap<&str, usize> = snapshot
        .nodes
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.as_str(), i))
        .collect();
    // The victims released so far, inside `outer`: the cheapest-first
    // search asks about one victim more each time, so only that one is
    // released; any other list (giving victims back) starts over.
    let mut outer = None;
    let mut released: Vec<String> = Vec::new();
    let plan = plan_by(head, jobs, queues, queue_held, |victims| {
        let extends = released.len() <= victims.len()
            && released
                .iter()
                .zip(victims)
                .all(|(r, v)| *r == v.metadata.name);
        if !extends {
            if let Some(cp) = outer.take() {
                model.rollback(cp);
            }
            released.clear();
        }
        if outer.is_none() {
            outer = Some(model.checkpoint());
        }
        for j in &victims[released.len()..] {
            release_on(model, snapshot, &at, j);
            released.push(j.metadata.name.clone());
        }
        // As `place_with` would place it alone: a fresh draw, the whole gang
        // (or `minAvailable`) or nothing.
        let trial = model.checkpoint();
        let mut rng = StdRng::seed_from_u64(policy.seed());
        let placed = place_gang(model, head, policy, mix, &mut rng).len() as u32;
        model.rollback(trial);
        placed >= head.spec.min_available.unwrap_or(head.task_count())
    });
    if let Some(cp) = outer {
        model.rollback(cp);
    }
    plan
}

/// The decision of [`plan`], with `fits` telling whether `head` fits once
/// the given victims are stopped.
fn plan_by(
    head: &Job,
    jobs: &[&Job],
    queues: &BTreeMap<String, Queue>,
    queue_held: &BTreeMap<String, u64>,
    mut fits: impl FnMut(&[&Job]) -> bool,
) -> Option<Plan> {
    let hq = queue_of(head);
    let held = |q: &str| queue_held.get(q).copied().unwrap_or(0);
    let quota = |q: &str| queues.get(q).and_then(|q| q.quota_milli()).unwrap_or(0);
    let head_within_quota = held(hq) + head.gpu_milli_requested() <= quota(hq);
    let mut candidates: Vec<(&Job, bool)> = jobs
        .iter()
        .copied()
        .filter(|j| j.metadata.name != head.metadata.name)
        .filter(|j| j.status.phase == JobPhase::Running && j.gpu_milli_held() > 0)
        .filter_map(|j| {
            let q = queue_of(j);
            if q == hq {
                (j.spec.priority < head.spec.priority).then_some((j, false))
            } else {
                let preemptible = queues.get(q).is_none_or(|q| q.spec.preemptible);
                (head_within_quota && preemptible && held(q) > quota(q)).then_some((j, true))
            }
        })
        .collect();
    candidates.sort_by_key(|(j, _)| {
        (
            j.spec.priority,
            j.gpu_milli_held(),
            std::cmp::Reverse(j.status.start_time_ms.unwrap_or(0)),
            j.metadata.name.clone(),
        )
    });
    candidates.truncate(MAX_CANDIDATES);
    // Take victims cheapest first; a reclaim stops once the victim's queue
    // is back within its quota.
    let mut chosen: Vec<&Job> = Vec::new();
    let mut taken: BTreeMap<&str, u64> = BTreeMap::new();
    let mut found = false;
    for (j, reclaim) in &candidates {
        if *reclaim {
            let q = queue_of(j);
            let left = held(q) - taken.get(q).copied().unwrap_or(0);
            if left <= quota(q) {
                continue;
            }
            *taken.entry(q).or_default() += j.gpu_milli_held();
        }
        chosen.push(j);
        if fits(&chosen) {
            found = true;
            break;
        }
    }
    if !found {
        return None;
    }
    // Give back any victim the job fits without, most expensive first.
    let mut i = chosen.len();
    while i > 0 {
        i -= 1;
        let mut without = chosen.clone();
        without.remove(i);
        if !without.is_empty() && fits(&without) {
            chosen = without;
        }
    }
    let why: Vec<String> = chosen
        .iter()
        .map(|j| {
            if queue_of(j) == hq {
                format!("priority {} > {}", head.spec.priority, j.spec.priority)
            } else {
                format!(
                    "queue {hq:?} reclaims its quota from {:?}, which is over its own",
                    queue_of(j)
                )
            }
        })
        .collect();
    Some(Plan {
        preemptor: head.metadata.name.clone(),
        victims: chosen
            .iter()
            .map(|j| (j.metadata.name.clone(), j.status.attempt))
            .collect(),
        reason: format!(
            "preempted by job {:?} ({})",
            head.metadata.name,
            why.first().cloned().unwrap_or_default()
        ),
    })
}

/// What each task of `victim` that holds resources holds: its node's name,
/// its GPU shares, and the CPU and memory of its spec (what stopping it
/// gives back).
fn holdings(victim: &Job) -> impl Iterator<Item = (&str, &[GpuShare], u64, u64)> {
    victim
        .status
        .tasks
        .iter()
        .filter(|t| t.phase.holds_resources())
        .filter_map(move |t| {
            let (cpu, memory) = victim.task_spec(t.index).map_or((0, 0), |spec| {
                (
                    spec.resources.cpu.map(|c| c.0).unwrap_or(0),
                    spec.resources.memory.map(|m| m.0).unwrap_or(0),
                )
            });
            Some((t.node.as_deref()?, &t.gpus[..], cpu, memory))
        })
}

/// What [`release`] gives back of `victim`, given back on `model` (which
/// stands for `snapshot`; `at` finds a node's position by name).
fn release_on(
    model: &mut ClusterModel,
    snapshot: &Snapshot,
    at: &HashMap<&str, usize>,
    victim: &Job,
) {
    for (name, shares, cpu, memory) in holdings(victim) {
        let Some(&node) = at.get(name) else {
            continue;
        };
        let view = &snapshot.nodes[node];
        // CPU and memory once, then each GPU share on its own (a task's
        // shares could differ in size).
        let mut req = PodRequest {
            cpu_milli: cpu,
            memory_bytes: memory,
            ..Default::default()
        };
        for share in shares {
            if let Some(g) = view.gpus.iter().position(|g| g.index == share.index) {
                let p = Placement {
                    node,
                    gpus: vec![g],
                    milli: share.milli,
                };
                model.release(&req, &p);
                req = PodRequest::default();
            }
        }
        if req.cpu_milli > 0 || req.memory_bytes > 0 {
            let p = Placement {
                node,
                gpus: Vec::new(),
                milli: 0,
            };
            model.release(&req, &p);
        }
    }
}

/// The snapshot with every resource the `victims`' tasks hold given back.
fn release(snapshot: &Snapshot, victims: &[&Job]) -> Snapshot {
    let mut s = snapshot.clone();
    for j in victims {
        for (node, shares, cpu, memory) in holdings(j) {
            let Some(v) = s.nodes.iter_mut().find(|v| v.name == node) else {
                continue;
            };
            for share in shares {
                if let Some(g) = v.gpus.iter_mut().find(|g| g.index == share.index) {
                    g.used_milli = g.used_milli.saturating_sub(share.milli);
                }
            }
            v.cpu_used = v.cpu_used.saturating_sub(cpu);
            v.memory_used = v.memory_used.saturating_sub(memory);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::testutil::{self, node};
    use gpuctl_common::api::{GpuShare, TaskPhase, TaskStatus};
    use gpuctl_common::queue::QueueSpec;

    fn job(name: &str, queue: &str, priority: i32, gpus: f64) -> Job {
        testutil::job(name, Some(queue), priority, 1, gpus)
    }

    /// A running job on `node`'s GPUs `gpus` (whole), started at `start`.
    fn running(
        name: &str,
        queue: &str,
        priority: i32,
        node: &str,
        gpus: &[u32],
        start: u64,
    ) -> Job {
        let mut j = job(name, queue, priority, gpus.len() as f64);
        j.status.phase = JobPhase::Running;
        j.status.start_time_ms = Some(start);
        j.status.tasks = vec![TaskStatus {
            index: 0,
            group: "main".into(),
            phase: TaskPhase::Running,
            node: Some(node.into()),
            gpus: gpus
                .iter()
                .map(|&i| GpuShare {
                    index: i,
                    uuid: format!("{node}-{i}"),
                    milli: 1000,
                })
                .collect(),
            local_rank: 0,
            exit_code: None,
            message: None,
            pid: None,
            start_time_ms: Some(start),
            finish_time_ms: None,
            port: None,
            usage: None,
        }];
        j
    }

    fn cluster(nodes: &[(&str, u32)], jobs: &[Job]) -> Snapshot {
        let mut s = Snapshot {
            nodes: nodes.iter().map(|(n, g)| node(n, *g)).collect(),
        };
        for j in jobs {
            for t in &j.status.tasks {
                let v = s
                    .nodes
                    .iter_mut()
                    .find(|v| Some(v.name.as_str()) == t.node.as_deref())
                    .unwrap();
                for g in &t.gpus {
                    v.gpus[g.index as usize].used_milli += g.milli;
                }
            }
        }
        s
    }

    fn queue(name: &str, quota: Option<f64>, preemptible: bool) -> (String, Queue) {
        testutil::queue(
            name,
            QueueSpec {
                gpu_quota: quota,
                preemptible,
                ..Default::default()
            },
        )
    }

    fn run_plan(
        nodes: &[(&str, u32)],
        running_jobs: &[Job],
        head: &Job,
        queues: &[(String, Queue)],
    ) -> Option<Vec<String>> {
        let snap = cluster(nodes, running_jobs);
        let refs: Vec<&Job> = running_jobs.iter().collect();
        let mut held: BTreeMap<String, u64> = BTreeMap::new();
        for j in running_jobs {
            *held.entry(queue_of(j).to_string()).or_default() += j.gpu_milli_held();
        }
        let queues: BTreeMap<String, Queue> = queues.iter().cloned().collect();
        let policy = Policy::default();
        let mix = WorkloadMix::from_jobs(&[head], policy.mix_options());
        let fresh = plan(&snap, head, &refs, &queues, &held, &policy, &mix);
        // The leader's way, on a kept model: the same plan, and the model
        // stands for the snapshot again after.
        let mut model = ClusterModel::from_views(&snap.nodes);
        let kept = plan_on(
            &mut model, &snap, head, &refs, &queues, &held, &policy, &mix,
        );
        assert_eq!(fresh, kept, "plan_on decides as plan");
        assert_eq!(
            model.nodes(),
            ClusterModel::from_views(&snap.nodes).nodes(),
            "the model is rolled back"
        );
        fresh.map(|p| p.victims.into_iter().map(|(n, _)| n).collect())
    }

    #[test]
    fn priority_preemption_takes_the_fewest_cheapest_victims() {
        let jobs = [
            running("old", "q", 0, "a", &[0, 1], 100),
            running("new", "q", 0, "a", &[2, 3], 200),
            running("vip", "q", 9, "b", &[0, 1, 2, 3], 50),
        ];
        // Two GPUs: the most recently started low-priority job goes.
        let v = run_plan(&[("a", 4), ("b", 4)], &jobs, &job("h", "q", 5, 2.0), &[]);
        assert_eq!(v, Some(vec!["new".to_string()]));
        // Four GPUs: both low-priority jobs on a; vip (priority 9) is safe.
        let v = run_plan(&[("a", 4), ("b", 4)], &jobs, &job("h", "q", 5, 4.0), &[]);
        assert_eq!(v, Some(vec!["new".to_string(), "old".to_string()]));
        // Equal priority preempts nothing.
        assert_eq!(
            run_plan(&[("a", 4), ("b", 4)], &jobs, &job("h", "q", 0, 1.0), &[]),
            None
        );
        // Eight GPUs would need vip too: no plan.
        assert_eq!(
            run_plan(&[("a", 4), ("b", 4)], &jobs, &job("h", "q", 5, 8.0), &[]),
            None
        );
    }

    #[test]
    fn a_cheap_first_victim_that_turns_out_useless_is_given_back() {
        // The 1-GPU job sits on node a, where a 4-GPU job cannot fit anyway.
        let jobs = [
            running("tiny", "q", 0, "a", &[0], 300),
            running("big", "q", 1, "b", &[0, 1, 2, 3], 100),
        ];
        let v = run_plan(&[("a", 2), ("b", 4)], &jobs, &job("h", "q", 5, 4.0), &[]);
        assert_eq!(v, Some(vec!["big".to_string()]));
    }

    #[test]
    fn queues_reclaim_borrowed_capacity_only() {
        let queues = [
            queue("team", Some(4.0), true),
            queue("lender", Some(2.0), true),
            queue("locked", None, false),
        ];
        // `other` (no queue object: guaranteed nothing) borrowed all of a.
        let jobs = [
            running("b1", "other", 5, "a", &[0, 1], 100),
            running("b2", "other", 5, "a", &[2, 3], 200),
        ];
        let v = run_plan(&[("a", 4)], &jobs, &job("h", "team", 0, 2.0), &queues);
        assert_eq!(v, Some(vec!["b2".to_string()]));
        // Over its own quota, team cannot reclaim.
        let mut big = job("h", "team", 0, 2.0);
        big.spec.tasks[0].replicas = 3;
        assert_eq!(run_plan(&[("a", 4)], &jobs, &big, &queues), None);
        // A queue within its quota is not reclaimed from.
        let jobs = [running("l1", "lender", 0, "a", &[0, 1], 100)];
        assert_eq!(
            run_plan(&[("a", 2)], &jobs, &job("h", "team", 0, 1.0), &queues),
            None
        );
        // Nor one whose jobs may not be preempted.
        let jobs = [running("k1", "locked", 0, "a", &[0, 1], 100)];
        assert_eq!(
            run_plan(&[("a", 2)], &jobs, &job("h", "team", 0, 1.0), &queues),
            None
        );
    }
}
