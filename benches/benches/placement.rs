//! Placement speed (criterion): one `choose_node` decision with the default
//! policy on the openb cluster (1,213 GPU nodes) half full, the same on a
//! 10,000-node cluster built from the openb node mix, and a 32×8-GPU gang
//! through `place` on the 10,000-node cluster.
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
use gpuctl_common::api::{Job, JobSpec, Resources, TaskSpec};
use gpuctl_scheduler::placement::{
    choose_node, place, ClusterModel, NodeView, PodRequest, Policy, Snapshot, WorkloadMix,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

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
    for (label, cluster) in [
        ("openb_1213_nodes", nodes.clone()),
        ("synthetic_10000_nodes", scale(&nodes, 10_000)),
    ] {
        let m = filled(&cluster, &pods, 0.5);
        let mut rng = StdRng::seed_from_u64(11);
        group.bench_function(format!("choose_node/{label}"), |b| {
            b.iter(|| {
                let p = &pods[rng.gen_range(0..pods.len())];
                choose_node(&m, p, &policy, &mix, &mut rng)
            })
        });
    }
    // A 32-task gang of 8 GPUs each on the half-full 10,000-node cluster.
    let big = scale(&nodes, 10_000);
    let m = filled(&big, &pods, 0.5);
    let snapshot = Snapshot {
        nodes: m
            .nodes()
            .iter()
            .zip(&big)
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
    };
    let mut gang = Job::new(
        "gang",
        JobSpec {
            tasks: vec![TaskSpec {
                name: "worker".into(),
                replicas: 32,
                command: vec!["train".into()],
                env: Default::default(),
                working_dir: None,
                resources: Resources {
                    gpus: 8.0,
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
    gang.status.attempt = 1;
    group.bench_function("place_gang_32x8/synthetic_10000_nodes", |b| {
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
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
