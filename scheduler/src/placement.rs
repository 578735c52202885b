//! Placement: a pure function from a cluster snapshot and the pending jobs
//! to gang bindings. This first version is first-fit over nodes in name
//! order with all-or-nothing gangs: a job whose tasks cannot all be placed
//! (or `minAvailable` of them) binds nothing and holds nothing.
//!
//! The seam stays the same for the full engine: `place(&Snapshot, &[&Job])
//! -> Vec<Binding>`; the snapshot carries everything a decision needs.

use gpuctl_common::api::{GpuShare, Job, NodePhase, Resources};

use crate::state::{Binding, State, TaskPlacement};

/// One GPU as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuView {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_bytes: u64,
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

/// Place as many pending jobs as fit, in the given order.
pub fn place(snapshot: &Snapshot, pending: &[&Job]) -> Vec<Binding> {
    let mut work = snapshot.clone();
    let mut out = Vec::new();
    for job in pending {
        let mut trial = work.clone();
        let mut tasks = Vec::new();
        let total = job.task_count();
        for index in 0..total {
            let Some(spec) = job.task_spec(index) else {
                break;
            };
            match place_task(&mut trial, &spec.resources) {
                Some((node, gpus)) => tasks.push(TaskPlacement { index, node, gpus }),
                None => break,
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

fn fits_host(n: &NodeView, r: &Resources) -> bool {
    let cpu = r.cpu.map(|c| c.0).unwrap_or(0);
    let mem = r.memory.map(|m| m.0).unwrap_or(0);
    (n.cpu_milli == 0 || n.cpu_used + cpu <= n.cpu_milli)
        && (n.memory_bytes == 0 || n.memory_used + mem <= n.memory_bytes)
}

/// First node (in snapshot order) that can host the task; updates the snapshot.
fn place_task(snap: &mut Snapshot, r: &Resources) -> Option<(String, Vec<GpuShare>)> {
    let milli = r.gpu_milli();
    for n in snap.nodes.iter_mut().filter(|n| n.schedulable) {
        if !fits_host(n, r) {
            continue;
        }
        let usable = |g: &GpuView| g.healthy && r.accepts_gpu(&g.model, g.memory_bytes);
        let chosen: Vec<usize> = if milli == 0 {
            Vec::new()
        } else if milli < 1000 {
            match n
                .gpus
                .iter()
                .position(|g| usable(g) && g.used_milli + milli as u32 <= 1000)
            {
                Some(i) => vec![i],
                None => continue,
            }
        } else {
            let want = (milli / 1000) as usize;
            let free: Vec<usize> = n
                .gpus
                .iter()
                .enumerate()
                .filter(|(_, g)| usable(g) && g.used_milli == 0)
                .map(|(i, _)| i)
                .take(want)
                .collect();
            if free.len() < want {
                continue;
            }
            free
        };
        let per = if milli < 1000 { milli as u32 } else { 1000 };
        let mut shares = Vec::new();
        for i in chosen {
            let g = &mut n.gpus[i];
            g.used_milli += per;
            shares.push(GpuShare {
                index: g.index,
                uuid: g.uuid.clone(),
                milli: per,
            });
        }
        n.cpu_used += r.cpu.map(|c| c.0).unwrap_or(0);
        n.memory_used += r.memory.map(|m| m.0).unwrap_or(0);
        return Some((n.name.clone(), shares));
    }
    None
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
    use gpuctl_common::api::{JobSpec, TaskSpec};

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
}
