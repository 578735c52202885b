//! Submit-to-start latency on `gpuctl dev`.
//!
//! Starts `gpuctl dev` (8 simulated GPUs) in a temporary folder, then submits
//! trivial 1-GPU jobs one at a time through the scheduler's gRPC API. Each
//! job's task is this same binary in `--probe` mode, which records the wall
//! clock the moment its process runs. Latency = probe time − the time the
//! `Apply` call returned. Reports p50/p99 over `--jobs` (default 200), on a
//! cluster with TLS and tokens and on one without (`--security on|off|both`,
//! default both, one after the other in the same run).
//!
//! Build everything in release first: `cargo build --release --bins`, then
//! `target/release/submit-latency [--jobs 200] [--json]`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use benches::dev::{Dev, Security};
use benches::percentile;
use clap::Parser;
use gpuctl_common::api::{Job, JobSpec, Resources, TaskSpec};
use gpuctl_proto::v1 as pb;

#[derive(Parser)]
struct Args {
    /// Number of jobs to submit.
    #[arg(long, default_value_t = 200)]
    jobs: usize,
    /// Simulated GPUs of the dev node.
    #[arg(long, default_value = "8xA100-80GB")]
    gpus: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// `on` (TLS and tokens, as `gpuctl dev` runs by default), `off`
    /// (`--insecure --no-auth`) or `both`.
    #[arg(long, default_value = "both", value_parser = ["on", "off", "both"])]
    security: String,
    /// Internal: record the current time into FILE and exit (the task).
    #[arg(long, hide = true)]
    probe: Option<PathBuf>,
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.probe {
        let t = now_ns();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, t.to_string())?;
        std::fs::rename(&tmp, path)?;
        return Ok(());
    }
    let me = std::env::current_exe()?;
    let modes: &[Security] = match args.security.as_str() {
        "on" => &[Security::On],
        "off" => &[Security::Off],
        _ => &[Security::Off, Security::On],
    };
    let mut all = Vec::new();
    for &security in modes {
        let root =
            std::env::temp_dir().join(format!("gpuctl-bench-{}-{security:?}", std::process::id()));
        let dev = Dev::start_with(&root, &["--gpus", &args.gpus], security)?;
        let result = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(run(&args, &me, &root, &dev, security));
        dev.stop();
        match result {
            Ok(r) => {
                let _ = std::fs::remove_dir_all(&root);
                all.push(r);
            }
            Err(e) => {
                eprintln!("kept {} for inspection (dev.log)", root.display());
                return Err(e);
            }
        }
    }
    if args.json {
        println!("{}", serde_json::Value::Array(all));
    }
    Ok(())
}

async fn run(
    args: &Args,
    me: &Path,
    root: &Path,
    dev: &Dev,
    security: Security,
) -> anyhow::Result<serde_json::Value> {
    let mut client = dev.control().await?;
    let probes = root.join("probes");
    std::fs::create_dir_all(&probes)?;

    let mut latencies_ms = Vec::with_capacity(args.jobs);
    let mut submit_ms = Vec::with_capacity(args.jobs);
    // From the moment the submit call was made (the process may start
    // before the reply reaches the client, which clamps the figure above to 0).
    let mut from_sent_ms = Vec::with_capacity(args.jobs);
    for i in 0..args.jobs {
        let name = format!("lat-{i}");
        let probe = probes.join(&name);
        let job = Job::new(
            &name,
            JobSpec {
                tasks: vec![TaskSpec {
                    name: "main".into(),
                    replicas: 1,
                    command: vec![
                        me.display().to_string(),
                        "--probe".into(),
                        probe.display().to_string(),
                    ],
                    env: Default::default(),
                    env_from: Vec::new(),
                    secret_files: Vec::new(),
                    working_dir: None,
                    resources: Resources {
                        gpus: 1.0,
                        ..Default::default()
                    },
                }],
                min_available: None,
                priority: 0,
                topology: Default::default(),
                max_retries: 0,
                timeout_seconds: None,
                ttl_seconds_after_finished: None,
            },
        );
        let sent = Instant::now();
        let sent_ns = now_ns();
        client
            .apply(pb::ApplyRequest {
                object_json: serde_json::to_string(&job)?,
                source: "<bench>".into(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("submitting {name}"))?;
        let returned = now_ns();
        submit_ms.push(sent.elapsed().as_secs_f64() * 1e3);
        let limit = Instant::now() + Duration::from_secs(30);
        let started: u128 = loop {
            if let Ok(s) = std::fs::read_to_string(&probe) {
                break s.trim().parse()?;
            }
            if Instant::now() > limit {
                bail!("job {name}'s process did not start within 30s");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        latencies_ms.push(started.saturating_sub(returned) as f64 / 1e6);
        from_sent_ms.push(started.saturating_sub(sent_ns) as f64 / 1e6);
        // Let it finish so every job finds the same free capacity.
        let w = client
            .wait(pb::WaitRequest {
                name: name.clone(),
                timeout_ms: 30_000,
            })
            .await?
            .into_inner();
        if w.phase() != pb::RunPhase::Succeeded {
            bail!("job {name} ended {:?}", w.phase());
        }
    }
    latencies_ms.sort_by(f64::total_cmp);
    submit_ms.sort_by(f64::total_cmp);
    from_sent_ms.sort_by(f64::total_cmp);
    let (p50, p99) = (
        percentile(&latencies_ms, 50.0),
        percentile(&latencies_ms, 99.0),
    );
    let max = latencies_ms.last().copied().unwrap_or(f64::NAN);
    let figures = serde_json::json!({
        "security": format!("{security:?}").to_lowercase(),
        "jobs": args.jobs,
        "start_latency_ms_p50": p50,
        "start_latency_ms_p99": p99,
        "start_latency_ms_max": max,
        "from_submit_call_ms_p50": percentile(&from_sent_ms, 50.0),
        "from_submit_call_ms_p99": percentile(&from_sent_ms, 99.0),
        "submit_rpc_ms_p50": percentile(&submit_ms, 50.0),
        "submit_rpc_ms_p99": percentile(&submit_ms, 99.0),
    });
    if !args.json {
        println!("{}:", security.label());
        println!(
            "  submit returned → task process started (0 when it started first), over {} jobs:",
            args.jobs
        );
        println!("    p50 {p50:.2} ms   p99 {p99:.2} ms   max {max:.2} ms");
        println!(
            "  submit called → task process started: p50 {:.2} ms   p99 {:.2} ms",
            percentile(&from_sent_ms, 50.0),
            percentile(&from_sent_ms, 99.0)
        );
        println!(
            "  submit RPC (apply, committed + applied): p50 {:.2} ms   p99 {:.2} ms",
            percentile(&submit_ms, 50.0),
            percentile(&submit_ms, 99.0)
        );
    }
    Ok(figures)
}
