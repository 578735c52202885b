//! The whole control plane at scale: `gpuctl dev` (TLS and tokens, 1 or 3
//! scheduler replicas) plus a hollow fleet (`gpu-node --simulate N`, the
//! openb node mix), then `--jobs` one-task jobs submitted through the API by
//! `--clients` concurrent clients as fast as they are answered, or at a
//! fixed offered rate (`--rate`), with `--gangs` of them gangs of up to
//! `--gang-max` tasks.
//!
//! Reports jobs bound and started per second (first submit to last bind or
//! start), submit→running p50/p99 (the job's creation to its task's
//! Running, both on the scheduler's clock; a gang's when its last task
//! runs), the submit call's p50/p99, `get jobs` and `describe job` (a
//! pending job's, when there is one) p50/p99 under the load, the load
//! average, each scheduler replica's CPU time, RSS, data
//! folder size on disk and a few of its metrics (mean Raft commit time per
//! command, read barriers, synced appends, proposals per append).
//!
//! With several replicas it then measures catch-up: one follower (not the
//! one the clients use) is stopped (SIGSTOP), `--catch-up-jobs` more jobs
//! are submitted without it, and it is killed; `gpuctl dev` restarts it,
//! and the driver times how long the restarted replica takes to answer and
//! to apply everything the leader had committed (from its log, or by
//! snapshot when the leader has compacted past it).
//!
//! Build everything in release first: `cargo build --release --bins`, then
//! `target/release/cluster-scale --nodes 1000 --jobs 10000 --replicas 3`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use benches::dev::{sibling, Dev, Security};
use benches::{percentile, replicas};
use clap::Parser;
use gpuctl_common::api::{Job, JobPhase};
use gpuctl_proto::v1 as pb;

#[derive(Parser)]
struct Args {
    /// Hollow nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: u32,
    /// One-task jobs to submit.
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// Concurrent submitting clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Scheduler replicas (1, 3 or 5).
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// How long each task runs (its GPUCTL_SIM_DURATION).
    #[arg(long, default_value = "1s")]
    task_duration: String,
    /// GPUs each task asks for.
    #[arg(long, default_value_t = 1.0)]
    gpus: f64,
    /// The openb node list [default: ../shared/traces/openb/openb_node_list_gpu_node.csv
    /// beside the repository].
    #[arg(long)]
    node_list: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Jobs submitted while a follower is stopped, before it is restarted
    /// and its catch-up timed (0: no catch-up run; needs 3 or more replicas).
    #[arg(long, default_value_t = 5000)]
    catch_up_jobs: usize,
    /// Offered rate in jobs per second, all clients together (each job is
    /// due at `start + i / rate`; a client that falls behind submits at
    /// once). 0: as fast as the submits are answered.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Gang jobs, mixed in with the one-task jobs (every `jobs / gangs`-th
    /// job is a gang): each a gang of 1 to `--gang-max` tasks of
    /// `--gang-gpus` GPUs, the size drawn with a fixed seed.
    #[arg(long, default_value_t = 0)]
    gangs: usize,
    /// Largest gang.
    #[arg(long, default_value_t = 32)]
    gang_max: u32,
    /// GPUs of each gang task.
    #[arg(long, default_value_t = 8.0)]
    gang_gpus: f64,
    /// How often the driver lists every job (timed: the `get jobs` figure)
    /// and describes one (timed: the `describe` figure).
    #[arg(long, default_value_t = 250)]
    list_every_ms: u64,
    /// Spread the hollow nodes' joins over this long (`gpu-node --ramp`).
    #[arg(long, default_value = "5s")]
    ramp: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let node_list = args.node_list.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/traces/openb/openb_node_list_gpu_node.csv")
    });
    if !node_list.is_file() {
        bail!("node list {} not found (--node-list)", node_list.display());
    }
    let root = std::env::temp_dir().join(format!("gpuctl-scale-{}", std::process::id()));
    let replicas = args.replicas.to_string();
    let dev = Dev::start_with(
        &root,
        &["--gpus", "1xA100-80GB", "--replicas", &replicas],
        Security::On,
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(run(&args, &root, &dev, &node_list));
    dev.stop();
    match result {
        Ok(figures) => {
            let _ = std::fs::remove_dir_all(&root);
            if args.json {
                println!("{figures}");
            }
            Ok(())
        }
        Err(e) => {
            eprintln!(
                "kept {} for inspection (dev.log, fleet.log)",
                root.display()
            );
            Err(e)
        }
    }
}

/// A hollow fleet, stopped (SIGINT, then SIGKILL) when dropped.
struct Fleet(std::process::Child);

impl Drop for Fleet {
    fn drop(&mut self) {
        benches::dev::stop_child(
            &mut self.0,
            nix::sys::signal::Signal::SIGINT,
            Duration::from_secs(10),
        );
    }
}

/// CPU seconds (user + system) and RSS bytes of a process, from /proc.
fn cpu_and_rss(pid: i32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks / 100.0, rss_kb * 1024))
}

async fn get_all(c: &mut benches::dev::ControlClient, kind: &str) -> anyhow::Result<Vec<String>> {
    Ok(c.get(pb::GetRequest {
        kind: kind.into(),
        ..Default::default()
    })
    .await?
    .into_inner()
    .objects_json)
}

/// Every job, read in pages as `gpuctl get jobs` reads them
/// ([`gpuctl::client::list_jobs`]); each page's time is added to `page_ms`.
async fn list_jobs(
    c: &mut benches::dev::ControlClient,
    page_ms: &mut Vec<f64>,
) -> anyhow::Result<Vec<String>> {
    gpuctl::client::list_jobs(async |req: pb::GetRequest| {
        let t = Instant::now();
        let page = c.get(req).await?.into_inner();
        page_ms.push(t.elapsed().as_secs_f64() * 1e3);
        Ok::<_, anyhow::Error>(page)
    })
    .await
}

async fn run(
    args: &Args,
    root: &std::path::Path,
    dev: &Dev,
    node_list: &std::path::Path,
) -> anyhow::Result<serde_json::Value> {
    let state = root.join("state");
    let arg = |p: PathBuf| p.display().to_string();
    let log = std::fs::File::create(root.join("fleet.log"))?;
    let n = args.nodes.to_string();
    let _fleet = Fleet(
        std::process::Command::new(sibling("gpu-node")?)
            .args(["--simulate", &n, "--server", &dev.url("server")?])
            .args(["--node-list", &arg(node_list.to_path_buf())])
            .args(["--join-token-file", &arg(state.join("join.token"))])
            .args(["--tls-cert", &arg(state.join("tls/cluster.pem"))])
            .args(["--tls-key", &arg(state.join("tls/cluster-key.pem"))])
            .args(["--tls-ca", &arg(state.join("tls/ca.pem"))])
            .args(["--work-dir", &arg(root.join("fleet"))])
            .args(["--ramp", &args.ramp])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting gpu-node --simulate")?,
    );
    // Lists of thousands of nodes and jobs are more than tonic's default 4 MiB.
    let mut c = dev.control().await?.max_decoding_message_size(1 << 30);
    let up = Instant::now();
    loop {
        // A replica starved on a busy machine may be between leaders for a
        // moment: ask again (bounded by the deadline below).
        let nodes = match get_all(&mut c, "nodes").await {
            Ok(n) => n,
            Err(e) if transient(&e) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let ready = nodes
            .iter()
            .filter(|j| j.contains("\"gpuctl.io/hollow\":\"true\"") && j.contains("\"Ready\""))
            .count();
        if ready >= args.nodes as usize {
            break;
        }
        if up.elapsed() > Duration::from_secs(600) {
            bail!(
                "{ready} of {} hollow nodes ready after 10 minutes",
                args.nodes
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let fleet_ready_s = up.elapsed().as_secs_f64();
    c.cordon(pb::CordonRequest {
        node: "dev-node-1".into(),
        cordon: true,
        reason: "cluster-scale: runs only hollow nodes".into(),
        evict: false,
    })
    .await?;
    let infos = replicas::replicas(&state)?;
    let cpu0: Vec<f64> = infos
        .iter()
        .map(|r| cpu_and_rss(r.pid).map_or(0.0, |x| x.0))
        .collect();

    let load0 = load_average();
    let start = Instant::now();
    let mut submitters = submit(dev, args, "s", args.jobs).await?;
    // `get jobs` and `describe job` under the load, timed, until every
    // job has ended. The job described is one still pending when there is
    // one (its description says why it waits: the costlier answer).
    let mut list_ms = Vec::new();
    let mut page_ms = Vec::new();
    let mut describe_ms = Vec::new();
    let mut unavailable = 0u32;
    let mut jobs: Vec<Job>;
    loop {
        if start.elapsed() > Duration::from_secs(1800) {
            bail!("not every job ended after 30 minutes");
        }
        let t = Instant::now();
        let raw = match list_jobs(&mut c, &mut page_ms).await {
            Ok(r) => r,
            Err(e) if transient(&e) => {
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(args.list_every_ms)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        list_ms.push(t.elapsed().as_secs_f64() * 1e3);
        jobs = raw
            .iter()
            .map(|j| serde_json::from_str(j))
            .collect::<Result<_, _>>()?;
        let ended = jobs.iter().filter(|j| j.status.phase.is_terminal()).count();
        if jobs.len() == args.jobs && ended == args.jobs {
            break;
        }
        let described = jobs
            .iter()
            .find(|j| j.status.phase == JobPhase::Pending)
            .or(jobs.last());
        if let Some(j) = described {
            let t = Instant::now();
            let r = c
                .get(pb::GetRequest {
                    kind: "job".into(),
                    name: j.metadata.name.clone(),
                    ..Default::default()
                })
                .await;
            match r {
                Ok(_) => describe_ms.push(t.elapsed().as_secs_f64() * 1e3),
                Err(s) if s.code() == tonic::Code::Unavailable => unavailable += 1,
                Err(s) => return Err(s.into()),
            }
        }
        tokio::time::sleep(Duration::from_millis(args.list_every_ms)).await;
    }
    let wall_s = start.elapsed().as_secs_f64();
    let mut submit_ms = Vec::new();
    while let Some(r) = submitters.join_next().await {
        submit_ms.extend(r??);
    }
    let failed = jobs
        .iter()
        .filter(|j| j.status.phase != JobPhase::Succeeded)
        .count();
    let first_submit = jobs
        .iter()
        .filter_map(|j| j.metadata.creation_timestamp_ms)
        .min()
        .unwrap_or(0);
    // A job's start time is when its attempt was bound.
    let bound: Vec<u64> = jobs.iter().filter_map(|j| j.status.start_time_ms).collect();
    let started: Vec<u64> = jobs.iter().filter_map(running_at).collect();
    let per_s = |times: &[u64]| {
        let last = times.iter().max().copied().unwrap_or(first_submit);
        times.len() as f64 / ((last.saturating_sub(first_submit)) as f64 / 1e3).max(1e-3)
    };
    let latency = |gang: bool| {
        let mut ms: Vec<f64> = jobs
            .iter()
            .filter(|j| (j.spec.tasks.iter().map(|t| t.replicas).sum::<u32>() > 1) == gang)
            .filter_map(|j| {
                let created = j.metadata.creation_timestamp_ms?;
                Some(running_at(j)?.saturating_sub(created) as f64)
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        ms
    };
    let to_running = latency(false);
    let gang_to_running = latency(true);
    describe_ms.sort_by(f64::total_cmp);
    submit_ms.sort_by(f64::total_cmp);
    list_ms.sort_by(f64::total_cmp);
    page_ms.sort_by(f64::total_cmp);
    let leader = replicas::status(&mut c).await?.leader_id;
    // `gpuctl dev` serves every /metrics over TLS (its CA in the state folder).
    let metrics_ca = Some(state.join("tls/ca.pem"));
    let replicas: Vec<serde_json::Value> = infos
        .iter()
        .zip(&cpu0)
        .map(|(r, c0)| {
            let (cpu, rss) = cpu_and_rss(r.pid).unwrap_or((0.0, 0));
            let raft = replicas::scrape(&r.metrics, metrics_ca.as_deref())
                .map(|t| replicas::raft_profile(&t))
                .unwrap_or_default();
            serde_json::json!({
                "id": r.id,
                "leader": r.id == leader,
                "cpu_s": cpu - c0,
                "rss_mib": rss >> 20,
                "disk_mib": replicas::dir_size(&r.data_dir) >> 20,
                "raft": raft,
            })
        })
        .collect();
    let figures = serde_json::json!({
        "nodes": args.nodes,
        "replicas": args.replicas,
        "jobs": args.jobs,
        "clients": args.clients,
        "failed": failed,
        "fleet_ready_s": fleet_ready_s,
        "wall_s": wall_s,
        "bound_per_s": per_s(&bound),
        "started_per_s": per_s(&started),
        "submit_to_running_ms_p50": percentile(&to_running, 50.0),
        "submit_to_running_ms_p99": percentile(&to_running, 99.0),
        "submit_rpc_ms_p50": percentile(&submit_ms, 50.0),
        "submit_rpc_ms_p99": percentile(&submit_ms, 99.0),
        "get_jobs_ms_p50": percentile(&list_ms, 50.0),
        "get_jobs_ms_p99": percentile(&list_ms, 99.0),
        "get_jobs_page_ms_p50": percentile(&page_ms, 50.0),
        "get_jobs_page_ms_p99": percentile(&page_ms, 99.0),
        "describe_ms_p50": percentile(&describe_ms, 50.0),
        "describe_ms_p99": percentile(&describe_ms, 99.0),
        "offered_rate": args.rate,
        "gangs": args.gangs,
        "gang_submit_to_running_ms_p50": percentile(&gang_to_running, 50.0),
        "gang_submit_to_running_ms_p99": percentile(&gang_to_running, 99.0),
        "reads_unavailable": unavailable,
        "load_1m_start": load0,
        "load_1m_end": load_average(),
        "schedulers": replicas,
    });
    if !args.json {
        println!(
            "{} hollow nodes (ready in {fleet_ready_s:.1} s), {} replica(s), {} jobs from {} clients, {failed} not succeeded, {wall_s:.1} s",
            args.nodes, args.replicas, args.jobs, args.clients
        );
        println!(
            "  bound {:.0}/s, started {:.0}/s; submit→running p50 {:.0} ms p99 {:.0} ms",
            per_s(&bound),
            per_s(&started),
            percentile(&to_running, 50.0),
            percentile(&to_running, 99.0)
        );
        println!(
            "  submit call p50 {:.1} ms p99 {:.1} ms; get jobs p50 {:.0} ms p99 {:.0} ms ({} lists; a page of {} p50 {:.1} ms p99 {:.1} ms); describe p50 {:.1} ms p99 {:.1} ms",
            percentile(&submit_ms, 50.0),
            percentile(&submit_ms, 99.0),
            percentile(&list_ms, 50.0),
            percentile(&list_ms, 99.0),
            list_ms.len(),
            gpuctl::client::LIST_CHUNK,
            percentile(&page_ms, 50.0),
            percentile(&page_ms, 99.0),
            percentile(&describe_ms, 50.0),
            percentile(&describe_ms, 99.0),
        );
        if unavailable > 0 {
            println!("  {unavailable} reads answered unavailable (no leader for a moment)");
        }
        if args.gangs > 0 {
            println!(
                "  {} gangs: submit→running p50 {:.0} ms p99 {:.0} ms",
                gang_to_running.len(),
                percentile(&gang_to_running, 50.0),
                percentile(&gang_to_running, 99.0)
            );
        }
        println!(
            "  load average (1 min): {load0:.2} at the start, {:.2} at the end",
            load_average()
        );
        for r in &replicas {
            println!("  scheduler {r}");
        }
    }
    let mut figures = figures;
    if args.replicas >= 3 && args.catch_up_jobs > 0 {
        // A follower the clients do not use (they use replica 1).
        let f = infos
            .iter()
            .find(|r| r.id != 1 && r.id != leader)
            .context("a follower other than replica 1")?;
        let urls: Vec<String> = dev.url("server")?.split(',').map(str::to_string).collect();
        let url = urls
            .get(f.id as usize - 1)
            .context("the follower's URL")?
            .clone();
        let load = async {
            let mut s = submit(dev, args, "c", args.catch_up_jobs).await?;
            while let Some(r) = s.join_next().await {
                r??;
            }
            Ok(())
        };
        let cu = replicas::catch_up(dev, f, &url, load).await?;
        figures["catch_up"] = serde_json::json!({
            "replica": f.id,
            "jobs_while_stopped": args.catch_up_jobs,
            "entries_behind": cu.behind,
            "kill_to_serving_s": cu.kill_to_serving.as_secs_f64(),
            "serving_to_caught_up_s": cu.serving_to_caught_up.as_secs_f64(),
        });
        if !args.json {
            println!(
                "  catch-up: replica {} stopped for {} jobs ({} entries behind), answering {:.1} s after SIGKILL, caught up {:.2} s later",
                f.id,
                args.catch_up_jobs,
                cu.behind,
                cu.kill_to_serving.as_secs_f64(),
                cu.serving_to_caught_up.as_secs_f64()
            );
        }
    }
    Ok(figures)
}

/// Submit `total` jobs named `PREFIX-NNNNNN` from `args.clients` tasks, each
/// taking job numbers from a counter; each task answers with its calls'
/// times in ms.
async fn submit(
    dev: &Dev,
    args: &Args,
    prefix: &str,
    total: usize,
) -> anyhow::Result<tokio::task::JoinSet<anyhow::Result<Vec<f64>>>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut submitters = tokio::task::JoinSet::new();
    let begin = tokio::time::Instant::now();
    let mix = Mix {
        gpus: args.gpus,
        duration: args.task_duration.clone(),
        gang_every: (args.gangs > 0).then(|| (total / args.gangs).max(1)),
        gang_max: args.gang_max.max(1),
        gang_gpus: args.gang_gpus,
    };
    for _ in 0..args.clients {
        let next = next.clone();
        let mut c = dev.control().await?;
        let dialer = dev.dialer();
        let mut server = dev.first_server()?;
        let (mix, prefix, rate) = (mix.clone(), prefix.to_string(), args.rate);
        submitters.spawn(async move {
            let mut took = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(took);
                }
                if rate > 0.0 {
                    tokio::time::sleep_until(begin + Duration::from_secs_f64(i as f64 / rate))
                        .await;
                }
                let name = format!("{prefix}-{i:06}");
                let req = pb::ApplyRequest {
                    object_json: mix.job_json(&name, i),
                    source: "<cluster-scale>".into(),
                    // Retried (below) as the same request: applied once.
                    request_id: name.clone(),
                    ..Default::default()
                };
                let t = Instant::now();
                // A replica between leaders answers unavailable: a few
                // retries, as `gpuctl apply` does.
                let mut tries = 0;
                loop {
                    match c.apply(req.clone()).await {
                        Ok(answer) => {
                            // A follower names the leader: send the next
                            // jobs there (no forwarding hop), as the node
                            // daemons do.
                            if let Some(l) = leader_named(answer.metadata(), &server) {
                                c = dialer.control_at(&l).await?;
                                server = l;
                            }
                            break;
                        }
                        Err(s) if s.code() == tonic::Code::Unavailable && tries < 10 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(s) => {
                            return Err(anyhow::Error::from(s))
                                .with_context(|| format!("submitting job {name}"))
                        }
                    }
                }
                took.push(t.elapsed().as_secs_f64() * 1e3);
            }
        });
    }
    Ok(submitters)
}

/// The leader's URL when a following replica's answer names one other
/// than `current` ([`gpuctl_proto::LEADER_HEADER`]).
fn leader_named(answer: &tonic::metadata::MetadataMap, current: &str) -> Option<String> {
    let l = answer.get(gpuctl_proto::LEADER_HEADER)?.to_str().ok()?;
    (l != current).then(|| l.to_string())
}

/// What the submitted jobs ask for.
#[derive(Clone)]
struct Mix {
    gpus: f64,
    duration: String,
    /// Every this many jobs one is a gang.
    gang_every: Option<usize>,
    gang_max: u32,
    gang_gpus: f64,
}

impl Mix {
    /// Job `i` as JSON: a one-task job of `gpus` GPUs, or (every
    /// `gang_every`-th) a gang of 1..=`gang_max` tasks of `gang_gpus`
    /// GPUs, its size drawn from a generator seeded with `i`; the hollow
    /// duration in the env.
    fn job_json(&self, name: &str, i: usize) -> String {
        use rand::{Rng, SeedableRng};
        let gang = self.gang_every.is_some_and(|e| i % e == e - 1);
        let (replicas, gpus) = if gang {
            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
            (rng.gen_range(1..=self.gang_max), self.gang_gpus)
        } else {
            (1, self.gpus)
        };
        serde_json::json!({
            "apiVersion": "gpuctl.io/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {"tasks": [{
                "name": "main",
                "replicas": replicas,
                "command": ["true"],
                "env": {"GPUCTL_SIM_DURATION": self.duration},
                "resources": {"gpus": gpus},
            }]},
        })
        .to_string()
    }
}

/// When every task of the job's current attempt was Running (the last
/// task's start), if all were.
fn running_at(j: &Job) -> Option<u64> {
    if j.status.tasks.is_empty() {
        return None;
    }
    j.status
        .tasks
        .iter()
        .map(|t| t.start_time_ms)
        .try_fold(0, |m, t| Some(m.max(t?)))
}

/// Whether a failed read was a replica between leaders (asked again).
fn transient(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tonic::Status>()
        .is_some_and(|s| s.code() == tonic::Code::Unavailable)
}

/// The 1-minute load average, from /proc/loadavg (NaN if unreadable).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
