//! Replay an openb trace (Alibaba, from the FGD paper) through the placement
//! engine: per seed, the pod list's pods in a shuffled order, topped up with
//! pods drawn with replacement until the GPUs asked for reach 130% of the
//! cluster's (as the FGD authors' simulator does), arrive; each is placed by
//! `choose_node` in arrival order, nothing departs. Prints the GPU
//! allocation ratio when arrivals reach 100% and 130% of capacity (mean over
//! seeds), pods that failed to place (mean per seed) and the time of one
//! decision (median and p99 over all decisions, microseconds).
//!
//! `trace-replay --nodes ../shared/traces/openb/openb_node_list_gpu_node.csv
//!  --pods ../shared/traces/openb/openb_pod_list_default.csv --policy fgd --seeds 10 --json`

use std::path::PathBuf;

use anyhow::Context;
use benches::gpuspec::{add_model_constraints, SPEC_SEED};
use benches::replay::{
    offered_load, parse_nodes, parse_pods, parse_timed_pods, replay_seed_with, replay_timeline,
    space_to_load, summarize, summarize_timeline, Sampling,
};
use clap::Parser;
use gpuctl_scheduler::placement::{Policy, WorkloadMix};

#[derive(Parser)]
struct Args {
    /// Node list CSV (`sn,cpu_milli,memory_mib,gpu,model`).
    #[arg(long)]
    nodes: PathBuf,
    /// Pod list CSV (`name,cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec,...]`).
    #[arg(long)]
    pods: PathBuf,
    /// firstfit, random, bestfit, fgd or fragaware (the default policy).
    #[arg(long, default_value = "fragaware")]
    policy: String,
    /// Number of seeds (0, 1, ... seeds-1).
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// Stop when the GPUs asked for reach this share of capacity.
    #[arg(long, default_value_t = 1.3)]
    stop: f64,
    /// Override the share of requests the workload mix covers (most popular
    /// shapes first; the policy's own default otherwise: 1.0, every shape).
    #[arg(long)]
    mix_coverage: Option<f64>,
    /// Weigh the mix's shapes by the GPU they ask for, not by count.
    #[arg(long)]
    mix_by_gpu_demand: bool,
    /// How arrivals are drawn: `simulator` (the pod list once, shuffled,
    /// topped up with draws with replacement: the FGD authors' simulator) or
    /// `replacement` (every arrival drawn with replacement).
    #[arg(long, default_value = "simulator")]
    sampling: String,
    /// Weigh each shape of the mix by its count raised to this power.
    #[arg(long)]
    mix_power: Option<f64>,
    /// `snapshot` (the FGD paper's method: arrivals until 130%, nothing
    /// departs) or `timeline` (the pods' creation and deletion times; needs
    /// the `creation_time` and `deletion_time` columns).
    #[arg(long, default_value = "snapshot")]
    mode: String,
    /// Timeline mode: space the pods' creations evenly, in their order,
    /// lifetimes kept, so that the GPU asked for over time is this share of
    /// capacity; the pods' own times otherwise.
    #[arg(long)]
    load: Option<f64>,
    /// Give this share of the GPU pods that name no GPU model a constraint
    /// to one model of the node list (see `benches::gpuspec`; the openb
    /// lists read here leave `gpu_spec` empty, production had about 0.33).
    #[arg(long, default_value_t = 0.0)]
    gpu_spec_share: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let policy = Policy::parse(&args.policy, 0).with_context(|| {
        format!(
            "unknown policy `{}`; one of {}",
            args.policy,
            Policy::NAMES.join(", ")
        )
    })?;
    let sampling = Sampling::parse(&args.sampling).with_context(|| {
        format!(
            "unknown sampling `{}`; one of simulator, replacement",
            args.sampling
        )
    })?;
    let (nf, pf) = (
        args.nodes.display().to_string(),
        args.pods.display().to_string(),
    );
    let nodes = parse_nodes(&nf, &read(&args.nodes)?)?;
    let mut pods = parse_pods(&pf, &read(&args.pods)?)?;
    anyhow::ensure!(!pods.is_empty(), "{pf}: no pods");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.gpu_spec_share),
        "--gpu-spec-share {}: want a share from 0 to 1",
        args.gpu_spec_share
    );
    add_model_constraints(&mut pods, &nodes, args.gpu_spec_share, SPEC_SEED);
    let constrained_pods = pods.iter().filter(|p| !p.models.is_empty()).count();
    // The workload mix comes from the pod list, as the FGD simulator takes
    // its typical pods from the trace it replays.
    let mut opts = policy.mix_options();
    if let Some(c) = args.mix_coverage {
        opts.coverage = c;
        opts.step = 1;
    }
    opts.by_gpu_demand |= args.mix_by_gpu_demand;
    if let Some(p) = args.mix_power {
        opts.power = p;
    }
    let mix = WorkloadMix::from_requests(&pods, opts);
    let gpus: usize = nodes.iter().map(|n| n.gpus.len()).sum();
    match args.mode.as_str() {
        "snapshot" => {}
        "timeline" => {
            let mut timed = parse_timed_pods(&pf, &read(&args.pods)?)?;
            let capacity = gpus as u64 * 1000;
            if let Some(l) = args.load {
                timed = space_to_load(&timed, capacity, l);
            }
            let load = offered_load(&timed, capacity);
            let mut results = Vec::new();
            for seed in 0..args.seeds {
                let policy = match policy {
                    Policy::Random { .. } => Policy::Random { seed },
                    p => p,
                };
                results.push(replay_timeline(&nodes, &timed, &policy, &mix, seed)?);
            }
            let s = summarize_timeline(&policy, &results);
            if args.json {
                let v = serde_json::json!({
                    "policy": s.policy,
                    "mode": "timeline",
                    "nodes_file": nf,
                    "pods_file": pf,
                    "nodes": nodes.len(),
                    "gpus": gpus,
                    "seeds": s.seeds,
                    "pods": s.pods,
                    "offered_load": load,
                    "mix_shapes": mix.entries().len(),
                    "mean_gpu_alloc": s.mean_alloc,
                    "queue_delay_s_p50": s.delay_s_p50,
                    "queue_delay_s_p99": s.delay_s_p99,
                    "waited_share": s.waited_share,
                    "never_placed_pods": s.never_placed,
                    "decision_us_median": s.decision_us_median,
                    "decision_us_p99": s.decision_us_p99,
                });
                println!("{v}");
            } else {
                println!(
                    "policy {} on {} nodes / {gpus} GPUs, pods from {pf} by their creation and deletion times, {} seeds",
                    s.policy, nodes.len(), s.seeds
                );
                println!(
                    "  offered load {:.2}%, mean GPU allocated: {:.2}%",
                    100.0 * load,
                    100.0 * s.mean_alloc
                );
                println!(
                    "  queueing delay of placed pods: p50 {:.0} s, p99 {:.0} s",
                    s.delay_s_p50, s.delay_s_p99
                );
                println!(
                    "  pods that waited: {:.2}% ({:.1} never placed, mean per seed)",
                    100.0 * s.waited_share,
                    s.never_placed
                );
                println!(
                    "  decision time: median {:.1} µs, p99 {:.1} µs",
                    s.decision_us_median, s.decision_us_p99
                );
            }
            return Ok(());
        }
        m => anyhow::bail!("unknown mode `{m}`; one of snapshot, timeline"),
    }
    let mut results = Vec::new();
    for seed in 0..args.seeds {
        let policy = match policy {
            Policy::Random { .. } => Policy::Random { seed },
            p => p,
        };
        results.push(replay_seed_with(
            &nodes, &pods, &policy, &mix, seed, args.stop, sampling,
        )?);
    }
    let s = summarize(&policy, &results);
    if args.json {
        let v = serde_json::json!({
            "policy": s.policy,
            "nodes_file": nf,
            "pods_file": pf,
            "nodes": nodes.len(),
            "gpus": gpus,
            "seeds": s.seeds,
            "mode": "snapshot",
            "sampling": args.sampling,
            "mix_shapes": mix.entries().len(),
            "alloc_at_100": s.alloc_at_100,
            "alloc_at_130": s.alloc_at_130,
            "arrived_pods": s.arrived,
            "failed_pods": s.failed_pods,
            "failed_gpu_pods": s.failed_gpu_pods,
            "failed_pods_is": "mean per seed",
            "decision_us_median": s.decision_us_median,
            "decision_us_p99": s.decision_us_p99,
            "gpu_spec_share": args.gpu_spec_share,
            "constrained_pods_in_list": constrained_pods,
            "constrained_decisions": s.constrained,
            "constrained_us_median": s.constrained_us_median,
            "constrained_us_p99": s.constrained_us_p99,
            "unconstrained_us_median": s.unconstrained_us_median,
            "unconstrained_us_p99": s.unconstrained_us_p99,
        });
        println!("{v}");
    } else {
        println!(
            "policy {} on {} nodes / {gpus} GPUs, pods from {pf}, {} seeds, mix of {} shapes",
            s.policy,
            nodes.len(),
            s.seeds,
            mix.entries().len()
        );
        println!(
            "  GPU allocated at 100% requested: {:.2}%",
            100.0 * s.alloc_at_100
        );
        println!(
            "  GPU allocated at 130% requested: {:.2}%",
            100.0 * s.alloc_at_130
        );
        println!(
            "  pods arrived {:.0}, failed to place {:.1} ({:.1} asking for GPUs), mean per seed",
            s.arrived, s.failed_pods, s.failed_gpu_pods
        );
        println!(
            "  decision time: median {:.1} µs, p99 {:.1} µs",
            s.decision_us_median, s.decision_us_p99
        );
        if constrained_pods > 0 {
            println!(
                "  {constrained_pods} pods of the list name a GPU model; decisions for them: median {:.1} µs, p99 {:.1} µs ({:.0} per seed); for the others: median {:.1} µs, p99 {:.1} µs",
                s.constrained_us_median,
                s.constrained_us_p99,
                s.constrained,
                s.unconstrained_us_median,
                s.unconstrained_us_p99
            );
        }
    }
    Ok(())
}
