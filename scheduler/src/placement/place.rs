//! Placing pending jobs, in the order given, on a model of the snapshot:
//! each gang whole (or `minAvailable` of it) or not at all, and the first
//! gang that does not fit reserves the nodes it needs.

use gpuctl_common::api::Job;
use rand::{rngs::StdRng, SeedableRng};

use super::gang::place_gang;
use super::mix::WorkloadMix;
use super::model::ClusterModel;
use super::policy::Policy;
use super::reservation::{reserve, Reservation};
use super::snapshot::Snapshot;
use crate::state::Binding;

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
pub(super) fn place_on(
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
            reservation = reserve(snapshot, work, job, mix, &mut rng);
        }
    }
    (out, reservation)
}

/// Place on `model` (standing for `snapshot`) and roll back: the model
/// stands for `snapshot` again after.
pub(super) fn place_kept(
    model: &mut ClusterModel,
    snapshot: &Snapshot,
    pending: &[&Job],
    policy: &Policy,
    mix: &WorkloadMix,
) -> (Vec<Binding>, Option<Reservation>) {
    let round = model.checkpoint();
    let out = place_on(model, snapshot, pending, policy, mix);
    model.rollback(round);
    out
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::placement::choose::choose_node;
    use crate::placement::mix::MixOptions;
    use crate::placement::node::MILLI;
    use crate::placement::request::PodRequest;
    use crate::placement::snapshot::NodeView;
    use crate::placement::testutil::{self, node};

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
