//! Placement speed (criterion), default policy (fragaware), clusters filled
//! to half their GPUs:
//!
//! - `choose_node/*`: one decision, not committed, on a model kept warm
//!   across iterations (its memo and per-shape rank index stay; a shape seen
//!   for the first time ranks every node once);
//! - `choose_commit/*`: one decision committed, as a round does per task;
//!   the commits are rolled back every 64 decisions (rollback included), so
//!   each decision also re-ranks the nodes changed since its shape was last
//!   decided;
//! - `place_gang_32x8/*`: a 32-task × 8-GPU gang through
//!   `Planner::place_synced`, the placement of the leader's round, on a
//!   planner kept across iterations (the gang placed, then rolled back as
//!   the round ends); `cold` is the stateless `place`, which builds the
//!   model (and so a cold memo) each call;
//! - `planner_sync/*`: `Planner::sync` to a snapshot with no node changed
//!   (a visit of every node's view; the leader's round uses
//!   `Planner::sync_state`, inside the leader round's figure);
//! - `planner_sync_state/*`: `Planner::sync_state` to a state with no node
//!   changed (the state's change log names none);
//! - `planner_sync_state_one_change/*`: the same after one node changed
//!   (the log names it: one node visited);
//! - `planner_sync_state_full_visit/*`: the sync when the log cannot be
//!   used (another state): each node and its usage compared with the kept
//!   view, what every round did before the change log;
//! - `leader_round_gang_32x8/*`: the leader's whole round with the gang
//!   pending, `Planner::plan_round(&State)` on a kept planner: the sync
//!   from the state, fair-share order, quota, the mix and the gang
//!   (what is in use is held by one running job per node).
//!
//! Clusters: the openb cluster (1,213 GPU nodes, 6,212 GPUs); 10,000 nodes
//! by repeating the openb node mix (51,200 GPUs); the same 10,000 nodes with
//! every node's GPUs, CPU and memory scaled by 80,000 / 51,200 (80,000 GPUs,
//! 8-GPU nodes become 12–13-GPU nodes).
//!
//! Reads the traces from `../shared/traces/openb` beside the repository
//! (or `$GPUCTL_TRACES`); skips with a message when they are not there.
//!
//! ```sh
//! cargo bench -p benches --bench placement
//! ```

use std::path::PathBuf;

use benches::replay::{parse_nodes, parse_pods};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gpuctl_common::api::{
    Gpu, GpuShare, Job, JobPhase, Node, NodeStatus, ObjectMeta, TaskPhase, TaskStatus,
};
use gpuctl_scheduler::placement::{
    choose_node, place, plan_round, ClusterModel, NodeView, Planner, PodRequest, Policy, Snapshot,
    WorkloadMix,
};
use gpuctl_scheduler::state::{Command, Envelope, State};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::time::{Duration, Instant};

fn traces() -> Option<PathBuf> {
    let dir = std::env::var_os("GPUCTL_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces/openb")
        });
    dir.join("openb_node_list_gpu_node.csv")
        .exists()
        .then_some(dir)
}

fn load() -> Option<(Vec<NodeView>, Vec<PodRequest>)> {
    let dir = traces()?;
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("read trace");
    let nodes = parse_nodes(
        "openb_node_list_gpu_node.csv",
        &read("openb_node_list_gpu_node.csv"),
    )
    .expect("node list");
    let pods = parse_pods(
        "openb_pod_list_default.csv",
        &read("openb_pod_list_default.csv"),
    )
    .expect("pods");
    Some((nodes, pods))
}

/// `nodes` repeated (renamed) until there are `n`.
fn scale(nodes: &[NodeView], n: usize) -> Vec<NodeView> {
    (0..n)
        .map(|i| {
            let mut v = nodes[i % nodes.len()].clone();
            v.name = format!("{}-{}", v.name, i / nodes.len());
            v
        })
        .collect()
}

/// `nodes` with GPU counts scaled so that they total `gpus` (rounded with
/// carry, so the total is exact), CPU and memory by the same factor.
fn scale_gpus(nodes: &[NodeView], gpus: usize) -> Vec<NodeView> {
    let have: usize = nodes.iter().map(|n| n.gpus.len()).sum();
    let f = gpus as f64 / have as f64;
    let mut acc = 0usize;
    nodes
        .iter()
        .map(|v| {
            let mut v = v.clone();
            let before = acc * gpus / have;
            acc += v.gpus.len();
            let count = acc * gpus / have - before;
            if let Some(g0) = v.gpus.first().cloned() {
                v.gpus = (0..count as u32)
                    .map(|i| {
                        let mut g = g0.clone();
                        g.index = i;
                        g.uuid = format!("{}-gpu{i}", v.name);
                        g
                    })
                    .collect();
            }
            v.cpu_milli = (v.cpu_milli as f64 * f) as u64;
            v.memory_bytes = (v.memory_bytes as f64 * f) as u64;
            v
        })
        .collect()
}

/// The snapshot of `m`, a model built from `views`.
fn snapshot_of(m: &ClusterModel, views: &[NodeView]) -> Snapshot {
    Snapshot {
        nodes: m
            .nodes()
            .iter()
            .zip(views)
            .map(|(n, v)| {
                let mut v = v.clone();
                for (g, slot) in v.gpus.iter_mut().zip(&n.gpus) {
                    g.used_milli = 1000 - slot.free.min(1000);
                }
                v.cpu_used = n.cpu_used;
                v.memory_used = n.memory_used;
                v
            })
            .collect(),
    }
}

/// The state of a cluster: `snapshot`'s nodes as node objects, what each
/// uses held by one running job on it, and `pending`.
fn state_of(snapshot: &Snapshot, pending: &[Job]) -> State {
    let nodes = snapshot
        .nodes
        .iter()
        .map(|v| Node {
            api_version: "gpuctl.io/v1".into(),
            kind: "Node".into(),
            metadata: ObjectMeta {
                name: v.name.clone(),
                ..Default::default()
            },
            spec: Default::default(),
            status: NodeStatus {
                cpu_milli: v.cpu_milli,
                memory_bytes: v.memory_bytes,
                gpus: v
                    .gpus
                    .iter()
                    .map(|g| Gpu {
                        uuid: g.uuid.clone(),
                        index: g.index,
                        model: g.model.clone(),
                        memory_bytes: g.memory_bytes,
                        nvlink_domain: g.nvlink_domain.clone(),
                        healthy: g.healthy,
                        xid: 0,
                    })
                    .collect(),
                ..Default::default()
            },
        })
        .collect();
    let mut jobs = pending.to_vec();
    for (i, v) in snapshot.nodes.iter().enumerate() {
        let gpus: Vec<GpuShare> = v
            .gpus
            .iter()
            .filter(|g| g.used_milli > 0)
            .map(|g| GpuShare {
                index: g.index,
                uuid: g.uuid.clone(),
                milli: g.used_milli,
            })
            .collect();
        if gpus.is_empty() && v.cpu_used == 0 && v.memory_used == 0 {
            continue;
        }
        let mut j = gpuctl_testkit::job(&format!("fill-{i}"))
            .cpu_milli(v.cpu_used)
            .memory_bytes(v.memory_used)
            .build();
        j.status.phase = JobPhase::Running;
        j.status.attempt = 1;
        j.status.tasks = vec![TaskStatus {
            index: 0,
            group: "main".into(),
            phase: TaskPhase::Running,
            node: Some(v.name.clone()),
            gpus,
            ..Default::default()
        }];
        jobs.push(j);
    }
    State::from_objects(jobs, nodes)
}

/// The cluster with pods placed until `fill` of its GPUs are allocated
/// (by best fit, which is quick; the state is what matters here).
fn filled(nodes: &[NodeView], pods: &[PodRequest], fill: f64) -> ClusterModel {
    let policy = &Policy::BestFit;
    let mix = &WorkloadMix::from_requests(pods, policy.mix_options());
    let mut m = ClusterModel::from_views(nodes);
    let cap = m.gpu_capacity_milli() as f64;
    let mut rng = StdRng::seed_from_u64(7);
    let mut misses = 0;
    while (m.gpu_used_milli() as f64) < fill * cap && misses < 1000 {
        let p = &pods[rng.gen_range(0..pods.len())];
        match choose_node(&m, p, policy, mix, &mut rng) {
            Some(at) => m.commit(p, &at).expect("commits"),
            None => misses += 1,
        }
    }
    m
}

fn decisions(c: &mut Criterion) {
    let Some((nodes, pods)) = load() else {
        eprintln!("placement bench: openb traces not found (set GPUCTL_TRACES); skipped");
        return;
    };
    let policy = Policy::default();
    let mix = WorkloadMix::from_requests(&pods, policy.mix_options());
    let mut group = c.benchmark_group("placement");
    group.sample_size(30);
    let big = scale(&nodes, 10_000);
    let clusters = [
        ("openb_1213_nodes", nodes.clone()),
        ("synthetic_10000_nodes", big.clone()),
        ("synthetic_10000_nodes_80000_gpus", scale_gpus(&big, 80_000)),
    ];
    let gang = gpuctl_testkit::job("gang")
        .group("worker")
        .replicas(32)
        .command(&["train"])
        .gpus(8.0)
        .attempt(1)
        .build();
    let gang_mix = WorkloadMix::from_jobs(&[&gang], policy.mix_options());
    for (label, cluster) in clusters {
        let mut m = filled(&cluster, &pods, 0.5);
        let mut rng = StdRng::seed_from_u64(11);
        group.bench_function(format!("choose_node/{label}"), |b| {
            b.iter(|| {
                let p = &pods[rng.gen_range(0..pods.len())];
                choose_node(&m, p, &policy, &mix, &mut rng)
            })
        });
        let mut cp = Some(m.checkpoint());
        let mut count = 0u64;
        group.bench_function(format!("choose_commit/{label}"), |b| {
            b.iter(|| {
                count += 1;
                if count.is_multiple_of(64) {
                    if let Some(cp) = cp.take() {
                        m.rollback(cp);
                    }
                    cp = Some(m.checkpoint());
                }
                let p = &pods[rng.gen_range(0..pods.len())];
                let at = choose_node(&m, p, &policy, &mix, &mut rng);
                if let Some(at) = &at {
                    m.commit(p, at).expect("commits");
                }
                at
            })
        });
        if let Some(cp) = cp.take() {
            m.rollback(cp);
        }
        let snapshot = snapshot_of(&m, &cluster);
        let mut planner = Planner::new();
        planner.sync(&snapshot);
        group.bench_function(format!("place_gang_32x8/{label}"), |b| {
            b.iter(|| {
                let (out, _) = planner.place_synced(&snapshot, &[&gang], &policy, &gang_mix);
                assert_eq!(out.len(), 1, "the gang fits");
                out
            })
        });
        group.bench_function(format!("planner_sync/{label}"), |b| {
            b.iter(|| planner.sync(&snapshot))
        });
        let state = state_of(&snapshot, std::slice::from_ref(&gang));
        let mut leader = Planner::new();
        leader.sync_state(&state);
        group.bench_function(format!("planner_sync_state/{label}"), |b| {
            b.iter(|| leader.sync_state(&state))
        });
        // One node changed between rounds (a cordon flipped through
        // `State::apply`, not timed): the sync reads the state's change log
        // and visits that node only.
        let mut changing = state.clone();
        let names: Vec<String> = changing.nodes.keys().cloned().collect();
        let mut follower = Planner::new();
        follower.sync_state(&changing);
        let mut k = 0u64;
        group.bench_function(format!("planner_sync_state_one_change/{label}"), |b| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    k += 1;
                    let node = names[k as usize % names.len()].clone();
                    let unschedulable = !changing.nodes[&node].spec.unschedulable;
                    let cmd = Command::Cordon {
                        node,
                        unschedulable,
                        reason: None,
                        evict: false,
                    };
                    changing.apply(k, &Envelope::new(k, cmd)).expect("a cordon");
                    let start = Instant::now();
                    follower.sync_state(&changing);
                    took += start.elapsed();
                }
                assert_eq!(follower.visited(), 1);
                took
            })
        });
        // The same sync without a usable change log (two copies of the
        // state, a different one each time): a visit of every node, what
        // every round did before the log.
        let twin = changing.clone();
        let mut flip = false;
        group.bench_function(format!("planner_sync_state_full_visit/{label}"), |b| {
            b.iter(|| {
                flip = !flip;
                follower.sync_state(if flip { &twin } else { &changing });
            })
        });
        group.bench_function(format!("leader_round_gang_32x8/{label}"), |b| {
            b.iter(|| {
                let round = leader.plan_round(&state);
                assert_eq!(round.bindings.len(), 1, "the gang fits");
                round
            })
        });
        // Preemption: the cluster nearly full of priority-0 jobs (one a
        // node), a priority-10 gang of 4 × 8 GPUs that does not fit. Each
        // round checks the candidate victims cheapest first (fewest GPUs):
        // here the 256 cheapest never free a whole 8-GPU node, so every
        // round makes all 256 checks and finds no plan, the worst case.
        let full = filled(&cluster, &pods, 0.97);
        let full_snap = snapshot_of(&full, &cluster);
        let mut vip = gang.clone();
        vip.metadata.name = "vip".into();
        vip.spec.tasks[0].replicas = 4;
        vip.spec.priority = 10;
        let full_state = state_of(&full_snap, std::slice::from_ref(&vip));
        let mut kept = Planner::new();
        let round = kept.plan_round(&full_state);
        assert!(round.bindings.is_empty(), "the gang does not fit as it is");
        assert_eq!(round.preemption, None, "no plan within the candidates");
        group.bench_function(format!("leader_round_preempt_4x8/{label}"), |b| {
            b.iter(|| kept.plan_round(&full_state))
        });
        if label == "openb_1213_nodes" {
            // The same round on a model built for each check (seconds a
            // round at 10,000 nodes, so measured on openb only).
            group.bench_function(format!("plan_round_preempt_4x8_cold/{label}"), |b| {
                b.iter(|| plan_round(&full_state))
            });
        }
        if label == "synthetic_10000_nodes" {
            group.bench_function(format!("place_gang_32x8_cold/{label}"), |b| {
                b.iter_batched(
                    || &gang,
                    |g| {
                        let out = place(&snapshot, &[g]);
                        assert_eq!(out.len(), 1, "the gang fits");
                        out
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
