//! Placement: a pure function from a cluster snapshot and the pending jobs
//! to gang bindings, with no I/O, no clock and seeded randomness only.
//!
//! ```text
//! place(&Snapshot, &[&Job]) ─ place_with(.., &Policy, &WorkloadMix)
//!   per job (a gang: all tasks, or `minAvailable` of them, or nothing):
//!     per task: choose_node_near(&ClusterModel, &PodRequest, ..)
//!       filter   schedulable · host_fit (CPU, memory) · gpu_fit (count,
//!                share, GPU memory, model alternatives, healthy GPUs)
//!       options  which GPUs on each feasible node
//!       score    bestfit · frag (FGD's measure over the workload mix) ·
//!                strand (GPU left without CPU/memory to back it) ·
//!                topology (NVLink domains, gang on few nodes)
//!       choose   by the policy (fgd and fragaware read each node's
//!                result from the model's memo while the node is unchanged;
//!                fragaware reads the best node from the memo's rank index
//!                per request shape, re-ranking only the nodes that changed)
//!     ClusterModel::commit (refuses any over-commit)
//!   a gang that does not fit is rolled back (ClusterModel::checkpoint)
//! ```
//!
//! The seam stays `place(&Snapshot, &[&Job]) -> Vec<Binding>`; the trace
//! replay (`benches`, `trace-replay`) drives [`choose_node`] per pod, the same
//! code path `place` takes per task.

mod choose;
pub mod fair;
pub mod filter;
mod memo;
mod mix;
mod model;
mod planner;
mod policy;
pub mod preempt;
pub mod quota;
pub mod score;

use gpuctl_common::api::{GpuShare, Job, Node, NodePhase, Topology};
use rand::{rngs::StdRng, SeedableRng};

use crate::state::{Binding, NodeUsage, State, TaskPlacement};

pub use choose::{choose_node, choose_node_near};
pub use mix::{MixEntry, MixOptions, WorkloadMix};
pub use model::{
    Checkpoint, ClusterModel, CommitError, GpuKind, GpuSlot, NodeModel, Placement, PodRequest,
    MILLI,
};
pub use planner::Planner;
pub use policy::Policy;

/// One GPU as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuView {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_bytes: u64,
    /// NVLink domain the node reported; empty: none.
    pub nvlink_domain: String,
    pub healthy: bool,
    /// Thousandths in use.
    pub used_milli: u32,
}

/// One node as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub name: String,
    /// Ready and not cordoned.
    pub schedulable: bool,
    pub gpus: Vec<GpuView>,
    /// Capacity; 0 means "not reported", and is not enforced.
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub cpu_used: u64,
    pub memory_used: u64,
}

/// Free capacity of the cluster at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub nodes: Vec<NodeView>,
}

impl Snapshot {
    /// Take a consistent snapshot of the state.
    pub fn of(state: &State) -> Snapshot {
        Snapshot {
            nodes: nodes_with_usage(state)
                .map(|(n, u)| node_view(n, u))
                .collect(),
        }
    }
}

/// Each node of `state` (in name order) with its usage, if anything runs
/// there.
fn nodes_with_usage(state: &State) -> impl Iterator<Item = (&Node, Option<&NodeUsage>)> + '_ {
    let mut usage = state.usages().peekable();
    state.nodes.iter().map(move |(name, n)| {
        while usage.next_if(|(k, _)| *k < name.as_str()).is_some() {}
        let u = usage.next_if(|(k, _)| *k == name.as_str()).map(|(_, u)| u);
        (n, u)
    })
}

/// How placement sees node `n` with usage `u`.
fn node_view(n: &Node, u: Option<&NodeUsage>) -> NodeView {
    NodeView {
        name: n.metadata.name.clone(),
        schedulable: schedulable(n),
        gpus: n
            .status
            .gpus
            .iter()
            .map(|g| GpuView {
                index: g.index,
                uuid: g.uuid.clone(),
                model: g.model.clone(),
                memory_bytes: g.memory_bytes,
                nvlink_domain: g.nvlink_domain.clone(),
                healthy: g.healthy,
                used_milli: gpu_used(u, g.index),
            })
            .collect(),
        cpu_milli: n.status.cpu_milli,
        memory_bytes: n.status.memory_bytes,
        cpu_used: u.map_or(0, |u| u.cpu_milli),
        memory_used: u.map_or(0, |u| u.memory_bytes),
    }
}

/// Whether `v` is [`node_view`] of `n` and `u`, without building it.
fn view_matches(n: &Node, u: Option<&NodeUsage>, v: &NodeView) -> bool {
    v.schedulable == schedulable(n)
        && v.cpu_milli == n.status.cpu_milli
        && v.memory_bytes == n.status.memory_bytes
        && v.cpu_used == u.map_or(0, |u| u.cpu_milli)
        && v.memory_used == u.map_or(0, |u| u.memory_bytes)
        && v.gpus.len() == n.status.gpus.len()
        && v.gpus.iter().zip(&n.status.gpus).all(|(v, g)| {
            v.index == g.index
                && v.healthy == g.healthy
                && v.memory_bytes == g.memory_bytes
                && v.used_milli == gpu_used(u, g.index)
                && v.uuid == g.uuid
                && v.model == g.model
                && v.nvlink_domain == g.nvlink_domain
        })
        && v.name == n.metadata.name
}

fn schedulable(n: &Node) -> bool {
    n.status.phase == NodePhase::Ready && !n.spec.unschedulable
}

fn gpu_used(u: Option<&NodeUsage>, index: u32) -> u32 {
    u.and_then(|u| u.gpu_milli.get(&index).copied())
        .unwrap_or(0)
}

/// Place as many pending jobs as fit, in the given order, with the default
/// policy and the mix of the pending tasks.
pub fn place(snapshot: &Snapshot, pending: &[&Job]) -> Vec<Binding> {
    let policy = Policy::default();
    let mix = WorkloadMix::from_jobs(pending, policy.mix_options());
    place_with(snapshot, pending, &policy, &mix)
}

/// [`place`] with a chosen policy and workload mix.
pub fn place_with(
    snapshot: &Snapshot,
    pending: &[&Job],
    policy: &Policy,
    mix: &WorkloadMix,
) -> Vec<Binding> {
    place_with_reservation(snapshot, pending, policy, mix).0
}

/// [`place_with`], also naming the job that holds a reservation.
///
/// The first gang in `pending` that does not fit gets a reservation: the
/// nodes it would take on an empty cluster, chosen among those with the
/// most GPU free now (the closest to fitting it). No later job of this pass
/// is placed on them, so a stream of small jobs cannot starve a large gang:
/// small jobs backfill only the nodes the gang does not need, and the
/// reserved nodes drain until the gang fits. A gang that could not fit even
/// on the empty cluster reserves nothing.
pub fn place_with_reservation(
    snapshot: &Snapshot,
    pending: &[&Job],
    policy: &Policy,
    mix: &WorkloadMix,
) -> (Vec<Binding>, Option<Reservation>) {
    let mut work = ClusterModel::from_views(&snapshot.nodes);
    place_on(&mut work, snapshot, pending, policy, mix)
}

/// [`place_with_reservation`] on `work`, a model of `snapshot` (left with
/// the bindings and the reservation taken).
fn place_on(
    work: &mut ClusterModel,
    snapshot: &Snapshot,
    pending: &[&Job],
    policy: &Policy,
    mix: &WorkloadMix,
) -> (Vec<Binding>, Option<Reservation>) {
    let mut rng = StdRng::seed_from_u64(policy.seed());
    let mut out = Vec::new();
    let mut reservation: Option<Reservation> = None;
    for job in pending {
        // A trial on the model itself: rolled back unless the gang fits.
        let trial = work.checkpoint();
        let tasks = place_gang(work, job, policy, mix, &mut rng);
        let need = job.spec.min_available.unwrap_or(job.task_count());
        if tasks.len() as u32 >= need {
            work.keep(trial);
            out.push(Binding {
                job: job.metadata.name.clone(),
                attempt: job.status.attempt,
                tasks,
            });
            continue;
        }
        work.rollback(trial);
        if reservation.is_none() {
            if let Some(nodes) = reserve(snapshot, work, job, mix, &mut rng) {
                for i in 0..work.nodes().len() {
                    if nodes.contains(&work.nodes()[i].name) {
                        work.node_mut(i).schedulable = false;
                    }
                }
                reservation = Some(Reservation {
                    job: job.metadata.name.clone(),
                    nodes,
                });
            }
        }
    }
    (out, reservation)
}

/// What one scheduling round decides, from the state alone.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Round {
    /// Gangs to bind now.
    pub bindings: Vec<Binding>,
    /// Running jobs to stop so that the first waiting gang fits.
    pub preemption: Option<preempt::Plan>,
    /// Nodes held for the first waiting gang.
    pub reservation: Option<Reservation>,
    /// Jobs their queue's quota holds back, with the reason.
    pub held_back: Vec<(String, String)>,
}

/// One scheduling round, as the leader runs it: pending jobs in weighted
/// fair-share order across queues ([`fair::order`]), those over a quota held
/// back ([`quota::admit`]), then placed with the default policy; the first
/// gang that does not fit reserves nodes and, where allowed, preempts
/// ([`preempt::plan`]). Pure and deterministic. The leader keeps a
/// [`Planner`] instead, which decides the same without building the
/// cluster model anew each round.
pub fn plan_round(st: &State) -> Round {
    let pending = st.pending_jobs();
    if pending.is_empty() {
        return Round::default();
    }
    plan_round_with(st, pending, &Snapshot::of(st), None)
}

/// [`plan_round`] for the non-empty `pending` on `snap`, the snapshot of
/// `st`. Placements and preemption checks go on `kept`, the leader's model
/// of `snap` (left standing for it), or on models built for each use.
fn plan_round_with(
    st: &State,
    pending: Vec<&Job>,
    snap: &Snapshot,
    mut kept: Option<&mut ClusterModel>,
) -> Round {
    let held = fair::held_by_queue(st.jobs.values());
    let ordered = fair::order(&pending, &st.queues, &held, &fair::capacity(snap));
    let gpu_held: std::collections::BTreeMap<String, u64> =
        held.iter().map(|(q, u)| (q.clone(), u.gpu_milli)).collect();
    let (admitted, held_back) = quota::admit(&ordered, &st.queues, &gpu_held);
    let held_back = held_back
        .into_iter()
        .map(|(j, why)| (j.metadata.name.clone(), why))
        .collect();
    if admitted.is_empty() {
        return Round {
            held_back,
            ..Default::default()
        };
    }
    let policy = Policy::default();
    let mix = WorkloadMix::of_workload(st.jobs.values(), policy.mix_options());
    let (bindings, reservation) = match kept.as_deref_mut() {
        Some(model) => planner::place_kept(model, snap, &admitted, &policy, &mix),
        None => place_with_reservation(snap, &admitted, &policy, &mix),
    };
    let head = admitted
        .iter()
        .find(|j| !bindings.iter().any(|b| b.job == j.metadata.name));
    let preemption = head.and_then(|head| {
        let jobs: Vec<&Job> = st.jobs.values().collect();
        let (queues, held) = (&st.queues, &gpu_held);
        match kept {
            Some(model) => preempt::plan_on(model, snap, head, &jobs, queues, held, &policy, &mix),
            None => preempt::plan(snap, head, &jobs, queues, held, &policy, &mix),
        }
    });
    Round {
        bindings,
        preemption,
        reservation,
        held_back,
    }
}

/// Why the pending job `name` is not running, from a round's decisions
/// (`None` when the round binds it, or it is not pending).
pub fn waiting_reason(st: &State, round: &Round, name: &str) -> Option<String> {
    let job = st.jobs.get(name)?;
    if job.status.phase != gpuctl_common::api::JobPhase::Pending
        || round.bindings.iter().any(|b| b.job == name)
    {
        return None;
    }
    if let Some((_, why)) = round.held_back.iter().find(|(j, _)| j == name) {
        return Some(why.clone());
    }
    if let Some(p) = round.preemption.as_ref().filter(|p| p.preemptor == name) {
        let victims: Vec<&str> = p.victims.iter().map(|(j, _)| j.as_str()).collect();
        return Some(format!("preempting {} to make room", victims.join(", ")));
    }
    if let Some(r) = &round.reservation {
        if r.job == name {
            return Some(format!(
                "not enough free GPUs yet; node(s) {} are held for this job until the jobs running there finish",
                r.nodes.join(", ")
            ));
        }
        return Some(format!(
            "behind job {:?}, which is first in line and holds node(s) {}",
            r.job,
            r.nodes.join(", ")
        ));
    }
    Some(format!(
        "no node has room for it now ({} GPU(s) in all); it runs when running jobs finish",
        job.gpu_milli_requested() as f64 / 1000.0
    ))
}

/// Nodes held for a gang that does not fit yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub job: String,
    pub nodes: Vec<String>,
}

/// Place a job's tasks one by one on `trial`; returns the tasks placed (all
/// of them, or fewer when one did not fit).
fn place_gang(
    trial: &mut ClusterModel,
    job: &Job,
    policy: &Policy,
    mix: &WorkloadMix,
    rng: &mut StdRng,
) -> Vec<TaskPlacement> {
    let mut tasks = Vec::new();
    let mut gang_nodes: Vec<usize> = Vec::new();
    let pack = job.spec.topology == Topology::Pack;
    for index in 0..job.task_count() {
        let Some(spec) = job.task_spec(index) else {
            break;
        };
        let req = PodRequest::from_resources(&spec.resources);
        let near = if pack { &gang_nodes[..] } else { &[] };
        let Some(p) = choose_node_near(trial, &req, policy, mix, rng, near) else {
            break;
        };
        if trial.commit(&req, &p).is_err() {
            break;
        }
        let n = &trial.nodes()[p.node];
        tasks.push(TaskPlacement {
            index,
            node: n.name.clone(),
            gpus: p
                .gpus
                .iter()
                .map(|&g| GpuShare {
                    index: n.gpus[g].index,
                    uuid: n.gpus[g].uuid.clone(),
                    milli: p.milli,
                })
                .collect(),
        });
        if !gang_nodes.contains(&p.node) {
            gang_nodes.push(p.node);
        }
    }
    tasks
}

/// Where `job` would run if the schedulable nodes were empty, trying the
/// nodes with the most GPU free in `work` first; `None` if it would not fit.
fn reserve(
    snapshot: &Snapshot,
    work: &ClusterModel,
    job: &Job,
    mix: &WorkloadMix,
    rng: &mut StdRng,
) -> Option<Vec<String>> {
    let nodes = work.nodes();
    let mut order: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].schedulable).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(nodes[i].gpu_free_milli()), i));
    let empty: Vec<NodeView> = order
        .iter()
        .map(|&i| {
            let mut v = snapshot.nodes[i].clone();
            v.cpu_used = 0;
            v.memory_used = 0;
            for g in &mut v.gpus {
                g.used_milli = 0;
            }
            v
        })
        .collect();
    let mut model = ClusterModel::from_views(&empty);
    let tasks = place_gang(&mut model, job, &Policy::FirstFit, mix, rng);
    if (tasks.len() as u32) < job.spec.min_available.unwrap_or(job.task_count()) {
        return None;
    }
    let mut nodes: Vec<String> = tasks.into_iter().map(|t| t.node).collect();
    nodes.sort();
    nodes.dedup();
    Some(nodes)
}

/// Why no node of the cluster could ever run a task of `job`, even empty;
/// `None` when every task group fits some node. Checked at submit so that an
/// impossible request is refused instead of waiting forever.
pub fn infeasible(nodes: &[&gpuctl_common::api::Node], job: &Job) -> Option<String> {
    if nodes.is_empty() {
        return Some(
            "the cluster has no nodes yet; start a node daemon (gpu-node) or `gpuctl dev`".into(),
        );
    }
    for (gi, t) in job.spec.tasks.iter().enumerate() {
        let r = &t.resources;
        let milli = r.gpu_milli();
        let fits = nodes.iter().any(|n| {
            let s = &n.status;
            let cpu_ok = s.cpu_milli == 0 || r.cpu.map(|c| c.0).unwrap_or(0) <= s.cpu_milli;
            let mem_ok =
                s.memory_bytes == 0 || r.memory.map(|m| m.0).unwrap_or(0) <= s.memory_bytes;
            let gpus = s
                .gpus
                .iter()
                .filter(|g| r.accepts_gpu(&g.model, g.memory_bytes))
                .count() as u64;
            let gpu_ok = milli == 0 || (milli < 1000 && gpus >= 1) || gpus * 1000 >= milli;
            cpu_ok && mem_ok && gpu_ok
        });
        if !fits {
            let largest = nodes
                .iter()
                .map(|n| {
                    (
                        n.status
                            .gpus
                            .iter()
                            .filter(|g| r.accepts_gpu(&g.model, g.memory_bytes))
                            .count(),
                        n,
                    )
                })
                .max_by_key(|(c, _)| *c)
                .map(|(c, n)| (c, n.metadata.name.clone()));
            let (count, name) = largest.unwrap_or((0, String::new()));
            let what = match (&r.gpu_model, &r.gpu_memory) {
                (Some(m), _) => format!(" of model {m}"),
                (None, Some(mem)) => {
                    format!(" with {} memory", gpuctl_common::api::format_bytes(mem.0))
                }
                _ => String::new(),
            };
            let reason = if milli > 0 && (count as u64) * 1000 < milli.max(1) {
                format!(
                    "asks for {} GPU(s){what} per task, but the largest node ({name}) has {count} such GPU(s)",
                    r.gpus
                )
            } else {
                "asks for more CPU or memory per task than any node has".to_string()
            };
            return Some(format!(
                "spec.tasks[{gi}].resources: no node could ever run this task: it {reason}"
            ));
        }
    }
    // A gang needs all its GPUs at once.
    let cluster_milli: u64 = nodes
        .iter()
        .map(|n| n.status.gpus.len() as u64 * 1000)
        .sum();
    let need: u64 = job
        .spec
        .tasks
        .iter()
        .map(|t| u64::from(t.replicas) * t.resources.gpu_milli())
        .sum();
    let need_min = match job.spec.min_available {
        // With minAvailable, the smallest tasks may be left out.
        Some(min) => {
            let mut per_task: Vec<u64> = job
                .spec
                .tasks
                .iter()
                .flat_map(|t| std::iter::repeat_n(t.resources.gpu_milli(), t.replicas as usize))
                .collect();
            per_task.sort_unstable();
            per_task.iter().take(min as usize).sum()
        }
        None => need,
    };
    if need_min > cluster_milli {
        return Some(format!(
            "spec.tasks: the gang needs {} GPUs at once, but the whole cluster has {}",
            need_min as f64 / 1000.0,
            cluster_milli / 1000
        ));
    }
    None
}

/// Builders shared by the placement modules' tests.
#[cfg(test)]
pub(crate) mod testutil {
    use gpuctl_common::api::{Job, JobSpec, ObjectMeta, Resources, TaskSpec};
    use gpuctl_common::queue::{Queue, QueueSpec};

    use super::{GpuView, NodeView};

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
}

#[cfg(test)]
mod tests {
    use super::testutil::node;
    use super::*;

    fn job(name: &str, replicas: u32, gpus: f64) -> Job {
        testutil::job(name, None, 0, replicas, gpus)
    }

    fn gpus_of(b: &Binding) -> Vec<(String, Vec<u32>)> {
        b.tasks
            .iter()
            .map(|t| (t.node.clone(), t.gpus.iter().map(|g| g.index).collect()))
            .collect()
    }

    /// Bindings as (job, [(node, [gpu index])]).
    type Placed<S> = Vec<(S, Vec<(S, Vec<u32>)>)>;

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            nodes: Vec<NodeView>,
            jobs: Vec<Job>,
            want: Placed<&'static str>,
        }
        let mut busy = node("a", 4);
        busy.gpus[0].used_milli = 1000;
        busy.gpus[2].used_milli = 500;
        let half_busy = |name: &str| {
            let mut n = node(name, 4);
            n.gpus[0].used_milli = 1000;
            n.gpus[1].used_milli = 1000;
            n
        };
        let mut cordoned = node("a", 8);
        cordoned.schedulable = false;
        let cases = vec![
            Case {
                name: "gang of two fits one node with disjoint GPUs",
                nodes: vec![node("a", 4)],
                jobs: vec![job("j", 2, 2.0)],
                want: vec![("j", vec![("a", vec![0, 1]), ("a", vec![2, 3])])],
            },
            Case {
                name: "third gang waits: all or nothing",
                nodes: vec![node("a", 4)],
                jobs: vec![job("j1", 2, 2.0), job("j2", 2, 2.0), job("j3", 1, 1.0)],
                want: vec![("j1", vec![("a", vec![0, 1]), ("a", vec![2, 3])])],
            },
            Case {
                name: "partial gang binds nothing, a later small job still fits",
                nodes: vec![node("a", 2), node("b", 2)],
                jobs: vec![job("big", 3, 2.0), job("small", 1, 1.0)],
                want: vec![("small", vec![("a", vec![0])])],
            },
            Case {
                name: "skips used GPUs; fraction shares a half-used GPU",
                nodes: vec![busy],
                jobs: vec![job("w", 1, 2.0), job("f", 1, 0.5)],
                want: vec![("w", vec![("a", vec![1, 3])]), ("f", vec![("a", vec![2])])],
            },
            Case {
                name: "cordoned node gets nothing",
                nodes: vec![cordoned, node("b", 1)],
                jobs: vec![job("j", 1, 1.0)],
                want: vec![("j", vec![("b", vec![0])])],
            },
            Case {
                name: "a gang that does not fit yet reserves the nodes it needs; small jobs backfill elsewhere",
                nodes: vec![half_busy("a"), node("b", 1)],
                jobs: vec![job("big", 1, 4.0), job("s1", 1, 1.0), job("s2", 1, 1.0)],
                want: vec![("s1", vec![("b", vec![0])])],
            },
            Case {
                name: "a gang spans nodes when it must",
                nodes: vec![node("a", 2), node("b", 2)],
                jobs: vec![job("j", 2, 2.0)],
                want: vec![("j", vec![("a", vec![0, 1]), ("b", vec![0, 1])])],
            },
        ];
        for c in cases {
            let jobs: Vec<&Job> = c.jobs.iter().collect();
            let got = place(&Snapshot { nodes: c.nodes }, &jobs);
            let got: Placed<String> = got.iter().map(|b| (b.job.clone(), gpus_of(b))).collect();
            let want: Placed<String> = c
                .want
                .into_iter()
                .map(|(j, t)| {
                    (
                        j.to_string(),
                        t.into_iter().map(|(n, g)| (n.to_string(), g)).collect(),
                    )
                })
                .collect();
            assert_eq!(got, want, "case: {}", c.name);
        }
    }

    #[test]
    fn infeasible_requests_are_named() {
        let n = gpuctl_common::api::Node {
            api_version: "gpuctl.io/v1".into(),
            kind: "Node".into(),
            metadata: gpuctl_common::api::ObjectMeta {
                name: "n1".into(),
                ..Default::default()
            },
            spec: Default::default(),
            status: gpuctl_common::api::NodeStatus {
                gpus: node("n1", 4)
                    .gpus
                    .iter()
                    .map(|g| gpuctl_common::api::Gpu {
                        uuid: g.uuid.clone(),
                        index: g.index,
                        model: g.model.clone(),
                        memory_bytes: g.memory_bytes,
                        nvlink_domain: String::new(),
                        healthy: true,
                    })
                    .collect(),
                ..Default::default()
            },
        };
        assert_eq!(infeasible(&[&n], &job("ok", 1, 4.0)), None);
        let why = infeasible(&[&n], &job("wide", 3, 4.0)).unwrap();
        assert!(
            why.contains("needs 12 GPUs at once, but the whole cluster has 4"),
            "{why}"
        );
        let mut some = job("some", 3, 2.0);
        some.spec.min_available = Some(2);
        assert_eq!(infeasible(&[&n], &some), None);
        let why = infeasible(&[&n], &job("big", 1, 8.0)).unwrap();
        assert!(why.contains("largest node (n1) has 4"), "{why}");
        let mut h = job("h100", 1, 1.0);
        h.spec.tasks[0].resources.gpu_model = Some("H100".into());
        assert!(infeasible(&[&n], &h).unwrap().contains("model H100"));
        assert!(infeasible(&[], &job("x", 1, 1.0))
            .unwrap()
            .contains("no nodes"));
    }

    /// `view_matches` is true exactly for the view `node_view` builds: a
    /// change of any field the view reads makes it false.
    #[test]
    fn view_matches_what_node_view_builds() {
        let base = gpuctl_common::api::Node {
            api_version: "gpuctl.io/v1".into(),
            kind: "Node".into(),
            metadata: gpuctl_common::api::ObjectMeta {
                name: "n1".into(),
                ..Default::default()
            },
            spec: Default::default(),
            status: gpuctl_common::api::NodeStatus {
                cpu_milli: 8000,
                memory_bytes: 1 << 30,
                gpus: (0..2)
                    .map(|i| gpuctl_common::api::Gpu {
                        uuid: format!("u{i}"),
                        index: i,
                        model: "A100".into(),
                        memory_bytes: 80 << 30,
                        nvlink_domain: "d".into(),
                        healthy: true,
                    })
                    .collect(),
                ..Default::default()
            },
        };
        let usage = NodeUsage {
            gpu_milli: [(1, 500)].into_iter().collect(),
            cpu_milli: 1000,
            memory_bytes: 1 << 20,
        };
        let view = node_view(&base, Some(&usage));
        assert_eq!(view.gpus[1].used_milli, 500);
        assert!(view_matches(&base, Some(&usage), &view));
        assert!(!view_matches(&base, None, &view), "usage gone");
        type NodeChange = fn(&mut gpuctl_common::api::Node);
        let changes: [(&str, NodeChange); 11] = [
            ("name", |n| n.metadata.name = "n2".into()),
            ("cordon", |n| n.spec.unschedulable = true),
            ("lost", |n| n.status.phase = NodePhase::Lost),
            ("cpu", |n| n.status.cpu_milli += 1),
            ("memory", |n| n.status.memory_bytes += 1),
            ("a GPU less", |n| {
                n.status.gpus.pop();
            }),
            ("GPU health", |n| n.status.gpus[0].healthy = false),
            ("GPU uuid", |n| n.status.gpus[0].uuid = "x".into()),
            ("GPU model", |n| n.status.gpus[0].model = "H100".into()),
            ("GPU memory", |n| n.status.gpus[0].memory_bytes += 1),
            ("NVLink domain", |n| n.status.gpus[1].nvlink_domain.clear()),
        ];
        for (what, change) in changes {
            let mut n = base.clone();
            change(&mut n);
            assert!(!view_matches(&n, Some(&usage), &view), "{what}");
            assert!(
                view_matches(&n, Some(&usage), &node_view(&n, Some(&usage))),
                "{what}"
            );
        }
        type UsageChange = fn(&mut NodeUsage);
        let changes: [(&str, UsageChange); 3] = [
            ("GPU use", |u| u.gpu_milli.insert(0, 1000).map_or((), drop)),
            ("CPU used", |u| u.cpu_milli += 1),
            ("memory used", |u| u.memory_bytes += 1),
        ];
        for (what, change) in changes {
            let mut u = usage.clone();
            change(&mut u);
            assert!(!view_matches(&base, Some(&u), &view), "{what}");
        }
    }

    /// Random clusters and random pods under every policy: nothing is ever
    /// over-committed, and every placement `choose_node` returns commits.
    #[test]
    fn never_overcommits() {
        use rand::Rng;
        let mut rng = StdRng::seed_from_u64(42);
        for round in 0..40 {
            let nodes: Vec<NodeView> = (0..rng.gen_range(1..12))
                .map(|i| {
                    let mut n = node(&format!("n{i}"), rng.gen_range(0..9));
                    n.cpu_milli = rng.gen_range(1..9) * 4000;
                    n.memory_bytes = rng.gen_range(1..9) << 32;
                    for g in &mut n.gpus {
                        g.healthy = rng.gen_bool(0.9);
                        g.nvlink_domain = format!("d{}", rng.gen_range(0..2));
                        if rng.gen_bool(0.5) {
                            g.model = "T4".into();
                        }
                    }
                    n
                })
                .collect();
            let cap: Vec<(u64, u64)> = nodes
                .iter()
                .map(|n| (n.cpu_milli, n.memory_bytes))
                .collect();
            let pods: Vec<PodRequest> = (0..60)
                .map(|_| {
                    let (gpus, gpu_milli) = match rng.gen_range(0..4) {
                        0 => (0, 0),
                        1 => (1, rng.gen_range(1..1000)),
                        2 => (1, 1000),
                        _ => (rng.gen_range(2..9), 1000),
                    };
                    PodRequest {
                        cpu_milli: rng.gen_range(0..16000),
                        memory_bytes: rng.gen_range(0..8) << 30,
                        gpus,
                        gpu_milli,
                        models: if rng.gen_bool(0.2) {
                            vec!["T4".into()]
                        } else {
                            vec![]
                        },
                        gpu_memory: 0,
                    }
                })
                .collect();
            for policy in Policy::NAMES.map(|n| Policy::parse(n, round).unwrap()) {
                let mix = WorkloadMix::from_requests(&pods, policy.mix_options());
                let mut m = ClusterModel::from_views(&nodes);
                let mut placed = 0;
                for p in &pods {
                    if let Some(at) = choose_node(&m, p, &policy, &mix, &mut rng) {
                        m.commit(p, &at).unwrap_or_else(|e| panic!("{policy}: {e}"));
                        placed += 1;
                    }
                }
                assert!(placed > 0, "{policy}: nothing placed in round {round}");
                for (n, (cpu, mem)) in m.nodes().iter().zip(&cap) {
                    assert!(n.cpu_used <= *cpu, "{policy}: cpu on {}", n.name);
                    assert!(n.memory_used <= *mem, "{policy}: memory on {}", n.name);
                    for g in &n.gpus {
                        assert!(g.free <= MILLI, "{policy}: GPU over 1000m");
                        if !g.healthy {
                            assert_eq!(g.free, MILLI, "{policy}: unhealthy GPU used");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn policies_agree_on_the_obvious() {
        // One node can take the share on its half-used GPU; every policy
        // finds a place, and none puts it on a full GPU.
        let mut busy = node("a", 4);
        busy.gpus[0].used_milli = 1000;
        busy.gpus[2].used_milli = 500;
        let m = ClusterModel::from_views([&busy]);
        let share = PodRequest {
            gpus: 1,
            gpu_milli: 500,
            ..Default::default()
        };
        let whole = PodRequest {
            gpus: 1,
            gpu_milli: 1000,
            ..Default::default()
        };
        let mix = WorkloadMix::from_requests([&share, &whole], MixOptions::FULL);
        let mut rng = StdRng::seed_from_u64(1);
        for name in Policy::NAMES {
            let p = Policy::parse(name, 1).unwrap();
            let at = choose_node(&m, &share, &p, &mix, &mut rng).unwrap();
            assert_ne!(at.gpus, vec![0], "{name}");
        }
        for name in ["bestfit", "fgd", "fragaware"] {
            let p = Policy::parse(name, 1).unwrap();
            let at = choose_node(&m, &share, &p, &mix, &mut rng).unwrap();
            assert_eq!(
                at.gpus,
                vec![2],
                "{name} packs the share onto the shared GPU"
            );
        }
    }

    #[test]
    fn gang_packs_and_whole_gpus_keep_to_one_nvlink_domain() {
        // Node a: 8 GPUs in two NVLink domains of 4; node b: 2 GPUs.
        let mut a = node("a", 8);
        for g in &mut a.gpus {
            g.nvlink_domain = if g.index < 4 { "x".into() } else { "y".into() };
        }
        a.gpus[0].used_milli = 1000;
        let b = node("b", 2);
        let mut j = job("j", 2, 2.0);
        j.spec.tasks[0].resources.gpus = 3.0;
        let got = place(&Snapshot { nodes: vec![a, b] }, &[&j]);
        let got = gpus_of(&got[0]);
        // Three free GPUs in domain x (1,2,3) and four in y: the first task
        // takes x's three, keeping y whole for the second.
        assert_eq!(
            got,
            vec![
                ("a".to_string(), vec![1, 2, 3]),
                ("a".to_string(), vec![4, 5, 6])
            ]
        );
    }

    #[test]
    fn place_with_each_policy_binds_what_fits() {
        let jobs = [job("j1", 2, 2.0), job("j2", 1, 0.5), job("j3", 1, 8.0)];
        let jobs: Vec<&Job> = jobs.iter().collect();
        for name in Policy::NAMES {
            let p = Policy::parse(name, 3).unwrap();
            let mix = WorkloadMix::from_jobs(&jobs, p.mix_options());
            let got = place_with(
                &Snapshot {
                    nodes: vec![node("a", 4), node("b", 4)],
                },
                &jobs,
                &p,
                &mix,
            );
            let names: Vec<&str> = got.iter().map(|b| b.job.as_str()).collect();
            assert_eq!(names, ["j1", "j2"], "{name}");
        }
    }
}
