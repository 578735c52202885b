//! Workflow step overhead on `gpuctl dev`.
//!
//! Starts `gpuctl dev` (8 simulated GPUs) in a temporary folder and runs two
//! Argo workflows through the `gpuctl` binary:
//!
//! - **chain**: `--chain` steps (default 100), each depending on the one
//!   before. Every step writes `date +%s%N` when its process starts and just
//!   before it exits; the gap is the next step's start minus this step's end
//!   (process exit → dependent's process start). Reports p50/p99/max.
//! - **fan-out**: one `withItems` task of `--fan-out` items (default 1,000)
//!   of a trivial step requesting 0.1 GPU (80 at a time on 8 GPUs). Reports
//!   the wall time from `apply` to `wait` returning, and the run's own
//!   start → finish time from its status, with the scheduler's CPU time
//!   over the fan-out and its peak resident memory (from /proc).
//!
//! Build first (`cargo build --release --bins`, or debug), then
//! `target/release/pipeline-overhead [--chain 100] [--fan-out 1000] [--json]`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use benches::dev::Dev;
use benches::percentile;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Steps in the chain.
    #[arg(long, default_value_t = 100)]
    chain: usize,
    /// Items of the fan-out (0 skips it).
    #[arg(long, default_value_t = 1000)]
    fan_out: usize,
    /// GPU share each fan-out step requests.
    #[arg(long, default_value_t = 0.1)]
    share: f64,
    /// Simulated GPUs of the dev node.
    #[arg(long, default_value = "8xA100-80GB")]
    gpus: String,
    /// How long `gpuctl wait` waits for each workflow.
    #[arg(long, default_value = "600s")]
    wait_timeout: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The scheduler's (user + system) CPU seconds and peak resident bytes,
/// from /proc, by the pid `gpuctl dev` records in `state/cluster.json`.
fn scheduler_usage(root: &Path) -> Option<(f64, u64)> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("state/cluster.json")).ok()?).ok()?;
    let pid = v["schedulers"].as_array()?.first()?["pid"].as_i64()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after ")".
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks / 100.0, hwm_kb * 1024))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = std::env::temp_dir().join(format!("gpuctl-pipeline-bench-{}", std::process::id()));
    let dev = Dev::start(&root, &["--gpus", &args.gpus])?;
    let result = run(&args, &dev, &root);
    dev.stop();
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&root);
    } else {
        eprintln!("kept {} for inspection (dev.log)", root.display());
    }
    result
}

fn chain_yaml(n: usize, dir: &Path) -> String {
    let mut y = String::from(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: chain}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n",
    );
    for i in 0..n {
        let deps = if i == 0 {
            String::new()
        } else {
            format!(", dependencies: [s{}]", i - 1)
        };
        let _ = writeln!(
            y,
            "      - {{name: s{i}, template: step{deps}, arguments: {{parameters: [{{name: i, value: \"{i}\"}}]}}}}"
        );
    }
    let d = dir.display();
    let _ = write!(
        y,
        "  - name: step\n    inputs: {{parameters: [{{name: i}}]}}\n    container:\n      image: busybox\n      command: [sh, -c]\n      args: [\"date +%s%N > {d}/start-{{{{inputs.parameters.i}}}}; date +%s%N > {d}/end-{{{{inputs.parameters.i}}}}\"]\n"
    );
    y
}

fn fan_yaml(n: usize, share: f64) -> String {
    let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {{name: fan}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n      - name: f\n        template: step\n        withItems: [{}]\n  - name: step\n    container:\n      image: busybox\n      command: [\"true\"]\n      resources: {{limits: {{nvidia.com/gpu: {share}}}}}\n",
        items.join(", ")
    )
}

fn read_ns(p: &Path) -> anyhow::Result<f64> {
    let s = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(s.trim().parse::<f64>()?)
}

fn run(args: &Args, dev: &Dev, root: &Path) -> anyhow::Result<()> {
    let stamps = root.join("stamps");
    std::fs::create_dir_all(&stamps)?;

    // The chain.
    let file: PathBuf = root.join("chain.yaml");
    std::fs::write(&file, chain_yaml(args.chain, &stamps))?;
    let t0 = Instant::now();
    dev.gpuctl(&["apply", "-f", file.to_str().unwrap_or("")])?;
    dev.gpuctl(&["wait", "chain", "--timeout", &args.wait_timeout])?;
    let chain_wall = t0.elapsed().as_secs_f64();
    let mut gaps_ms = Vec::new();
    for i in 1..args.chain {
        let end = read_ns(&stamps.join(format!("end-{}", i - 1)))?;
        let start = read_ns(&stamps.join(format!("start-{i}")))?;
        gaps_ms.push((start - end) / 1e6);
    }
    gaps_ms.sort_by(|a, b| a.total_cmp(b));

    // The fan-out.
    let (mut fan_wall, mut fan_run) = (f64::NAN, f64::NAN);
    let (mut fan_cpu, mut peak_rss) = (f64::NAN, 0u64);
    if args.fan_out > 0 {
        let file = root.join("fan.yaml");
        std::fs::write(&file, fan_yaml(args.fan_out, args.share))?;
        let cpu0 = scheduler_usage(root).map_or(f64::NAN, |u| u.0);
        let t0 = Instant::now();
        dev.gpuctl(&["apply", "-f", file.to_str().unwrap_or("")])?;
        dev.gpuctl(&["wait", "fan", "--timeout", &args.wait_timeout])?;
        fan_wall = t0.elapsed().as_secs_f64();
        if let Some((cpu, rss)) = scheduler_usage(root) {
            fan_cpu = cpu - cpu0;
            peak_rss = rss;
        }
        let doc: serde_json::Value =
            serde_json::from_str(&dev.gpuctl(&["get", "wf", "fan", "-o", "json"])?)?;
        let st = &doc["status"];
        if let (Some(s), Some(f)) = (st["startedMs"].as_f64(), st["finishedMs"].as_f64()) {
            fan_run = (f - s) / 1000.0;
        }
        if st["phase"] != "Succeeded" || st["progress"] != format!("{0}/{0}", args.fan_out) {
            bail!("fan-out ended {} {}", st["phase"], st["progress"]);
        }
    }

    let (p50, p99, max) = (
        percentile(&gaps_ms, 50.0),
        percentile(&gaps_ms, 99.0),
        gaps_ms.last().copied().unwrap_or(f64::NAN),
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "chain_steps": args.chain,
                "gap_ms_p50": p50, "gap_ms_p99": p99, "gap_ms_max": max,
                "chain_wall_s": chain_wall,
                "fan_out": args.fan_out, "fan_out_share": args.share,
                "fan_out_wall_s": fan_wall, "fan_out_run_s": fan_run,
                "scheduler_cpu_s_fan_out": fan_cpu,
                "scheduler_peak_rss_mib": peak_rss as f64 / 1048576.0,
            })
        );
    } else {
        println!(
            "chain of {}: step exit → next step start p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; whole chain {chain_wall:.2} s",
            args.chain
        );
        if args.fan_out > 0 {
            println!(
                "fan-out of {} × {} GPU on {}: {fan_wall:.2} s apply → wait ({fan_run:.2} s by the run's own clock); scheduler CPU {fan_cpu:.1} s over it, peak RSS {:.0} MiB",
                args.fan_out, args.share, args.gpus, peak_rss as f64 / 1048576.0
            );
        }
    }
    Ok(())
}
