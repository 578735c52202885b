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
//!                result from the model's memo while the node is unchanged)
//!     ClusterModel::commit (refuses any over-commit)
//!   a gang that does not fit leaves the model as it was
//! ```
//!
//! The seam stays `place(&Snapshot, &[&Job]) -> Vec<Binding>`; the trace
//! replay (`benches`, `trace-replay`) drives [`choose_node`] per pod, the same
//! code path `place` takes per task.

mod choose;
pub mod filter;
mod memo;
mod mix;
mod model;
mod policy;
pub mod quota;
pub mod score;

use gpuctl_common::api::{GpuShare, Job, NodePhase, Topology};
use rand::{rngs::StdRng, SeedableRng};

use crate::state::{Binding, State, TaskPlacement};

pub use choose::{choose_node, choose_node_near};
pub use mix::{MixEntry, MixOptions, WorkloadMix};
pub use model::{
    ClusterModel, CommitError, GpuKind, GpuSlot, NodeModel, Placement, PodRequest, MILLI,
};
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
        let nodes = state
            .nodes
            .values()
            .map(|n| {
                let u = state.usage(&n.metadata.name);
                NodeView {
                    name: n.metadata.name.clone(),
                    schedulable: n.status.phase == NodePhase::Ready && !n.spec.unschedulable,
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
                            used_milli: u.gpu_milli.get(&g.index).copied().unwrap_or(0),
                        })
                        .collect(),
                    cpu_milli: n.status.cpu_milli,
                    memory_bytes: n.status.memory_bytes,
                    cpu_used: u.cpu_milli,
                    memory_used: u.memory_bytes,
                }
            })
            .collect();
        Snapshot { nodes }
    }
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
    let mut work = ClusterModel::from_views(&snapshot.nodes);
    let mut rng = StdRng::seed_from_u64(policy.seed());
    let mut out = Vec::new();
    for job in pending {
        let mut trial = work.clone();
        let mut tasks = Vec::new();
        let mut gang_nodes: Vec<usize> = Vec::new();
        let pack = job.spec.topology == Topology::Pack;
        let total = job.task_count();
        for index in 0..total {
            let Some(spec) = job.task_spec(index) else {
                break;
            };
            let req = PodRequest::from_resources(&spec.resources);
            let near = if pack { &gang_nodes[..] } else { &[] };
            let Some(p) = choose_node_near(&trial, &req, policy, mix, &mut rng, near) else {
                break;
            };
            if trial.commit(&req, &p).is_err() {
                break;
            }
            let n = &trial.nodes[p.node];
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
        let need = job.spec.min_available.unwrap_or(total);
        if tasks.len() as u32 >= need {
            work = trial;
            out.push(Binding {
                job: job.metadata.name.clone(),
                attempt: job.status.attempt,
                tasks,
            });
        }
    }
    out
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
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuctl_common::api::{JobSpec, Resources, TaskSpec};

    fn node(name: &str, gpus: u32) -> NodeView {
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

    fn job(name: &str, replicas: u32, gpus: f64) -> Job {
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
                priority: 0,
                topology: Default::default(),
                max_retries: 0,
                timeout_seconds: None,
            },
        );
        j.status.attempt = 1;
        j
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
        assert_eq!(infeasible(&[&n], &job("ok", 3, 4.0)), None);
        let why = infeasible(&[&n], &job("big", 1, 8.0)).unwrap();
        assert!(why.contains("largest node (n1) has 4"), "{why}");
        let mut h = job("h100", 1, 1.0);
        h.spec.tasks[0].resources.gpu_model = Some("H100".into());
        assert!(infeasible(&[&n], &h).unwrap().contains("model H100"));
        assert!(infeasible(&[], &job("x", 1, 1.0))
            .unwrap()
            .contains("no nodes"));
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
                for (n, (cpu, mem)) in m.nodes.iter().zip(&cap) {
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
