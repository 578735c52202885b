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
//! Every task runs under its supervisor process (`gpu-node supervise`); that
//! cannot be turned off. What can: each task's cgroup and private `/tmp`
//! (`--isolation on|off|both`, default both: `gpuctl dev` as it runs by
//! default, and `gpuctl dev --task-isolation off`). `--isolation cold` is
//! "on" without warm supervisors (the node daemons run with
//! `GPU_NODE_WARM_SUPERVISORS=0`): each task's supervisor is started for
//! it and its process moved into its cgroup; `--isolation all` runs on,
//! cold and off. With `--rounds N` the
//! clusters are started N times over, on and off interleaved, so that load
//! from elsewhere on the machine falls on both alike. The probe also
//! records whether it ran in a task cgroup and in a mount namespace of its
//! own, and the driver checks that against the mode.
//!
//! `--runtime podman|both` adds a cluster whose node runs `gpu-node
//! --runtime podman` (isolation on), where each job names an image the
//! bench imports from `/bin/busybox` (Debian's `busybox-static`) and its
//! probe is a busybox shell in the container that records the wall clock
//! (`adjtimex`, microseconds). The image is removed at the end.
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
    /// `on` (each task in its own cgroup, with its own /tmp, as `gpuctl
    /// dev` runs by default), `off` (`gpuctl dev --task-isolation off`) or
    /// `both`.
    #[arg(long, default_value = "both", value_parser = ["on", "off", "cold", "both", "all"])]
    isolation: String,
    /// `process` (tasks as processes), `podman` (each task in an image
    /// under podman, isolation on) or `both`.
    #[arg(long, default_value = "process", value_parser = ["process", "podman", "both"])]
    runtime: String,
    /// Start every cluster this many times, modes interleaved.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Internal: record the current time into FILE and exit (the task).
    #[arg(long, hide = true)]
    probe: Option<PathBuf>,
}

/// Whether tasks get their cgroup and private `/tmp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    On,
    Off,
    /// On, without warm supervisors (`gpu-node --warm-supervisors 0`):
    /// each task's supervisor is started for it and its process moved
    /// into its cgroup.
    Cold,
    /// On, and the task runs in an image under podman.
    Podman,
}

impl Isolation {
    fn label(self) -> &'static str {
        match self {
            Isolation::On => "cgroup + private /tmp",
            Isolation::Cold => "cgroup + private /tmp, no warm supervisors",
            Isolation::Off => "no cgroup, shared /tmp",
            Isolation::Podman => "in an image under podman, cgroup + private /tmp",
        }
    }
    fn dev_args(self) -> &'static [&'static str] {
        match self {
            Isolation::On | Isolation::Cold => &[],
            Isolation::Off => &["--task-isolation", "off"],
            Isolation::Podman => &["--runtime", "podman"],
        }
    }
}

/// The clusters to start, in order: every security mode with every
/// isolation mode (isolation varying fastest), `rounds` times over.
fn clusters(args: &Args) -> Vec<(Security, Isolation)> {
    let security: &[Security] = match args.security.as_str() {
        "on" => &[Security::On],
        "off" => &[Security::Off],
        _ => &[Security::Off, Security::On],
    };
    let isolation: &[Isolation] = match args.isolation.as_str() {
        "on" => &[Isolation::On],
        "off" => &[Isolation::Off],
        "cold" => &[Isolation::Cold],
        "all" => &[Isolation::On, Isolation::Cold, Isolation::Off],
        _ => &[Isolation::On, Isolation::Off],
    };
    let process = args.runtime != "podman";
    let podman = args.runtime != "process";
    let mut out = Vec::new();
    for _ in 0..args.rounds {
        for &s in security {
            for &i in isolation.iter().filter(|_| process) {
                out.push((s, i));
            }
            if podman {
                out.push((s, Isolation::Podman));
            }
        }
    }
    out
}

/// What the probe saw besides the time: whether its process was in a
/// task cgroup of the node daemon, and its mount namespace.
fn probe_record(t: u128) -> String {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .contains("/gpuctl/");
    format!("{t}\n{cgroup}\n{}\n", mount_ns())
}

fn mount_ns() -> String {
    std::fs::read_link("/proc/self/ns/mnt")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// A probe file: the start time, whether in a task cgroup, whether in a
/// mount namespace other than `driver_ns`.
fn parse_probe(text: &str, driver_ns: &str) -> anyhow::Result<(u128, bool, bool)> {
    let mut lines = text.lines();
    let t = lines
        .next()
        .unwrap_or_default()
        .trim()
        .parse()
        .with_context(|| format!("probe file {text:?}: first line is not a time"))?;
    let cgroup = lines.next() == Some("true");
    let ns = lines.next().unwrap_or_default();
    Ok((t, cgroup, !ns.is_empty() && ns != driver_ns))
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// `gpu-node --warm-supervisors` from the environment.
const WARM_ENV: &str = "GPU_NODE_WARM_SUPERVISORS";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.probe {
        let t = now_ns();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, probe_record(t))?;
        std::fs::rename(&tmp, path)?;
        return Ok(());
    }
    let me = std::env::current_exe()?;
    let mut all = Vec::new();
    let plan = clusters(&args);
    let image = if plan.iter().any(|(_, i)| *i == Isolation::Podman) {
        Some(BenchImage::import()?)
    } else {
        None
    };
    for (n, (security, isolation)) in plan.into_iter().enumerate() {
        let root = std::env::temp_dir().join(format!(
            "gpuctl-bench-{}-{n}-{security:?}-{isolation:?}",
            std::process::id()
        ));
        let mut dev_args = vec!["--gpus", &args.gpus];
        dev_args.extend(isolation.dev_args());
        // The node daemons `gpuctl dev` starts read it from the environment.
        if isolation == Isolation::Cold {
            std::env::set_var(WARM_ENV, "0");
        }
        let dev = Dev::start_with(&root, &dev_args, security);
        std::env::remove_var(WARM_ENV);
        let dev = dev?;
        let result = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(run(
                &args,
                &me,
                &root,
                &dev,
                security,
                isolation,
                image.as_ref(),
            ));
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

/// The image podman tasks run in: `/bin/busybox` and its commands,
/// imported for the run and removed when dropped.
struct BenchImage {
    name: String,
}

const PODMAN_GLOBAL: [&str; 4] = ["--runtime", "runc", "--cgroup-manager", "cgroupfs"];

impl BenchImage {
    fn import() -> anyhow::Result<BenchImage> {
        let dir = std::env::temp_dir().join(format!("gpuctl-bench-image-{}", std::process::id()));
        let bin = dir.join("rootfs/bin");
        std::fs::create_dir_all(&bin)?;
        std::fs::create_dir_all(dir.join("rootfs/tmp"))?;
        std::fs::copy("/bin/busybox", bin.join("busybox"))
            .context("copying /bin/busybox (apt-get install busybox-static)")?;
        for cmd in ["sh", "adjtimex", "awk", "grep", "readlink", "mv", "echo"] {
            std::os::unix::fs::symlink("busybox", bin.join(cmd))?;
        }
        let tar = dir.join("rootfs.tar");
        let ok = std::process::Command::new("tar")
            .arg("-C")
            .arg(dir.join("rootfs"))
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()?
            .success();
        let name = format!("localhost/gpuctl-bench-{}:1", std::process::id());
        let imported = ok
            && std::process::Command::new("podman")
                .args(PODMAN_GLOBAL)
                .arg("import")
                .arg(&tar)
                .arg(&name)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()?
                .success();
        let _ = std::fs::remove_dir_all(&dir);
        if !imported {
            bail!("could not import the busybox image {name} into podman");
        }
        Ok(BenchImage { name })
    }
}

impl Drop for BenchImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("podman")
            .args(PODMAN_GLOBAL)
            .args(["rmi", "--force", &self.name])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// The command of a job's task: this binary as the probe, or in an image
/// a busybox shell that writes the same record.
fn probe_command(me: &Path, probe: &Path, image: Option<&BenchImage>) -> Vec<String> {
    let p = probe.display().to_string();
    if image.is_none() {
        return vec![me.display().to_string(), "--probe".into(), p];
    }
    let script = format!(
        "t=$(adjtimex | awk '/tv_sec/{{s=$2}} /tv_usec/{{u=$2}} END{{printf \"%d%06d000\", s, u}}'); \
         {{ echo $t; grep -q /gpuctl/ /proc/self/cgroup && echo true || echo false; \
         readlink /proc/self/ns/mnt; }} > {p}.tmp && mv {p}.tmp {p}"
    );
    vec!["sh".into(), "-c".into(), script]
}

async fn run(
    args: &Args,
    me: &Path,
    root: &Path,
    dev: &Dev,
    security: Security,
    isolation: Isolation,
    image: Option<&BenchImage>,
) -> anyhow::Result<serde_json::Value> {
    let image = image.filter(|_| isolation == Isolation::Podman);
    let mut client = dev.control().await?;
    let driver_ns = mount_ns();
    // Tasks that ran in a task cgroup, and in a mount namespace of their own.
    let (mut in_cgroup, mut own_ns) = (0usize, 0usize);
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
                    command: probe_command(me, &probe, image),
                    env: Default::default(),
                    env_from: Vec::new(),
                    secret_files: Vec::new(),
                    working_dir: None,
                    resources: Resources {
                        gpus: 1.0,
                        ..Default::default()
                    },
                    image: image.map(|i| i.name.clone()),
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
        let limit = Instant::now() + Duration::from_secs(60);
        let started: u128 = loop {
            if let Ok(s) = std::fs::read_to_string(&probe) {
                let (t, cgroup, ns) = parse_probe(&s, &driver_ns)?;
                in_cgroup += usize::from(cgroup);
                own_ns += usize::from(ns);
                break t;
            }
            if Instant::now() > limit {
                bail!("job {name}'s process did not start within 60s");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        latencies_ms.push(started.saturating_sub(returned) as f64 / 1e6);
        from_sent_ms.push(started.saturating_sub(sent_ns) as f64 / 1e6);
        // Let it finish so every job finds the same free capacity.
        let w = client
            .wait(pb::WaitRequest {
                name: name.clone(),
                timeout_ms: 60_000,
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
    if isolation == Isolation::Podman && own_ns < args.jobs {
        bail!("runtime podman, yet only {own_ns} task(s) ran in a mount namespace of their own");
    }
    if isolation == Isolation::Off && (in_cgroup > 0 || own_ns > 0) {
        bail!("isolation off, yet {in_cgroup} task(s) ran in a cgroup and {own_ns} in their own mount namespace");
    }
    let figures = serde_json::json!({
        "security": format!("{security:?}").to_lowercase(),
        "isolation": format!("{isolation:?}").to_lowercase(),
        "tasks_in_cgroup": in_cgroup,
        "tasks_with_own_mount_ns": own_ns,
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
        println!("{}, {}:", security.label(), isolation.label());
        println!(
            "  tasks in a task cgroup: {in_cgroup}/{}; in their own mount namespace: {own_ns}/{}",
            args.jobs, args.jobs
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("submit-latency").chain(extra.iter().copied()))
            .unwrap()
    }

    #[test]
    fn both_modes_interleaved_by_default() {
        let a = args(&["--security", "on"]);
        assert_eq!(a.isolation, "both");
        assert_eq!(
            clusters(&a),
            [
                (Security::On, Isolation::On),
                (Security::On, Isolation::Off)
            ]
        );
        let a = args(&["--security", "on", "--rounds", "2"]);
        let order: Vec<_> = clusters(&a).into_iter().map(|(_, i)| i).collect();
        assert_eq!(
            order,
            [Isolation::On, Isolation::Off, Isolation::On, Isolation::Off]
        );
        assert_eq!(clusters(&args(&[])).len(), 4);
        let a = args(&["--isolation", "off", "--security", "off"]);
        assert_eq!(clusters(&a), [(Security::Off, Isolation::Off)]);
        assert_eq!(Isolation::Off.dev_args(), ["--task-isolation", "off"]);
        assert!(Isolation::On.dev_args().is_empty());
        // Podman clusters come after each security mode's process ones.
        let a = args(&["--security", "on", "--runtime", "both"]);
        assert_eq!(
            clusters(&a),
            [
                (Security::On, Isolation::On),
                (Security::On, Isolation::Off),
                (Security::On, Isolation::Podman)
            ]
        );
        let a = args(&["--security", "off", "--runtime", "podman"]);
        assert_eq!(clusters(&a), [(Security::Off, Isolation::Podman)]);
        assert_eq!(Isolation::Podman.dev_args(), ["--runtime", "podman"]);
    }

    #[test]
    fn a_podman_probe_is_a_busybox_shell_writing_the_record() {
        let image = BenchImage {
            name: "localhost/x:1".into(),
        };
        let c = probe_command(
            Path::new("/me"),
            Path::new("/tmp/b/probes/lat-0"),
            Some(&image),
        );
        assert_eq!(&c[..2], ["sh", "-c"]);
        assert!(
            c[2].contains(
                "> /tmp/b/probes/lat-0.tmp && mv /tmp/b/probes/lat-0.tmp /tmp/b/probes/lat-0"
            ),
            "{}",
            c[2]
        );
        assert!(c[2].contains("printf \"%d%06d000\""), "{}", c[2]);
        std::mem::forget(image);
        let c = probe_command(Path::new("/me"), Path::new("/p"), None);
        assert_eq!(c, ["/me", "--probe", "/p"]);
    }

    #[test]
    fn bad_flags_are_refused_by_name() {
        let e = Args::try_parse_from(["submit-latency", "--isolation", "maybe"])
            .err()
            .unwrap();
        assert!(e.to_string().contains("--isolation"), "{e}");
        let e = Args::try_parse_from(["submit-latency", "--rounds", "0"])
            .err()
            .unwrap();
        assert!(e.to_string().contains("--rounds"), "{e}");
    }

    #[test]
    fn probe_files_are_read_back() {
        let (t, cgroup, ns) = parse_probe("42\ntrue\nmnt:[1]\n", "mnt:[2]").unwrap();
        assert_eq!((t, cgroup, ns), (42, true, true));
        let (_, cgroup, ns) = parse_probe("42\nfalse\nmnt:[2]\n", "mnt:[2]").unwrap();
        assert!(!cgroup && !ns);
        // A file from before the probe wrote more than the time.
        assert_eq!(parse_probe("7", "mnt:[2]").unwrap(), (7, false, false));
        let e = parse_probe("", "x").unwrap_err();
        assert!(format!("{e:#}").contains("probe file"), "{e:#}");
    }
}
