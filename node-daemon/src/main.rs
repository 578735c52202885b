//! `gpu-node`: flags in, [`gpuctl_node::Node`] out. See the library docs for
//! what the daemon does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use gpuctl_node::inventory::{self, GpuInventory, NoGpus, NvmlInventory, SimulatedInventory};
use gpuctl_node::{Config, Node};

/// gpuctl node daemon: registers this host's GPUs with the scheduler and runs
/// the tasks it assigns here.
#[derive(Debug, Parser)]
#[command(name = "gpu-node", version)]
struct Cli {
    /// Scheduler gRPC URL(s); a comma-separated list is tried in order.
    #[arg(
        long,
        env = "GPUCTL_SERVER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7000",
        value_name = "URL[,URL...]"
    )]
    server: Vec<String>,

    /// Node name, unique in the cluster [default: the host name].
    #[arg(long)]
    name: Option<String>,

    /// Simulated GPUs, COUNTxMODEL (e.g. 4xA100-80GB); repeat for a mixed
    /// node, each spec being its own NVLink domain.
    #[arg(long = "gpus", value_name = "COUNTxMODEL", conflicts_with = "gpu_file")]
    gpus: Vec<String>,

    /// Simulated GPUs from a YAML file (models, memory, NVLink domains, faults).
    #[arg(long, value_name = "FILE")]
    gpu_file: Option<PathBuf>,

    /// CPU capacity reported, in cores or millicores (8, 0.5, 7500m)
    /// [default: the CPUs this process may use].
    #[arg(long)]
    cpus: Option<String>,

    /// Memory capacity reported (64Gi, 512Mi, bytes) [default: MemTotal].
    #[arg(long)]
    memory: Option<String>,

    /// Address of the NodeAgent (log) gRPC service.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    listen: SocketAddr,

    /// Address of /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    metrics_listen: SocketAddr,

    /// TLS to the scheduler (mutual), for the NodeAgent service and for
    /// /metrics.
    #[command(flatten)]
    tls: gpuctl_security::tls::TlsArgs,

    /// PEM certificate of this node's CA, signed by the cluster CA, with
    /// which the node signs each endpoint replica's certificate (see
    /// `gpuctl admin node-ca`).
    #[arg(long, value_name = "FILE", requires = "replica_ca_key")]
    replica_ca_cert: Option<PathBuf>,
    /// PEM private key of --replica-ca-cert.
    #[arg(long, value_name = "FILE", requires = "replica_ca_cert")]
    replica_ca_key: Option<PathBuf>,

    /// Serve /metrics and /healthz in plain HTTP although TLS is configured.
    #[arg(long)]
    metrics_insecure: bool,

    /// Host other gang members use to reach this node (MASTER_ADDR)
    /// [default: the IP of --listen].
    #[arg(long, value_name = "HOST")]
    address: Option<String>,

    /// Folder for task logs (DIR/logs/JOB/task-I-attempt-A.log) and, for
    /// simulated GPUs, the XIDs to inject (DIR/inject-xid, lines `GPU XID`)
    /// [default: ./gpu-node-NAME].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,

    /// Workflow artifact store: a folder per workflow (nodes of one machine
    /// share it) [default: WORK_DIR/artifacts].
    #[arg(long, value_name = "DIR")]
    artifact_dir: Option<PathBuf>,

    /// How often to look for the artifacts of workflows the cluster has
    /// deleted and remove them (folders unchanged for as long); 0s: never.
    #[arg(
        long,
        env = "GPUCTL_ARTIFACT_SWEEP",
        default_value = "5m",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    artifact_sweep: Duration,

    /// Heartbeat period until the scheduler names one (500ms, 1s, 2m).
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    heartbeat_interval: Duration,

    /// Heartbeat period in milliseconds (instead of --heartbeat-interval).
    #[arg(long, conflicts_with = "heartbeat_interval", value_name = "MS")]
    heartbeat_interval_ms: Option<u64>,

    /// Time between SIGTERM and SIGKILL when stopping a task's process group.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    kill_grace_ms: u64,

    /// Each task's supervisor stops it (SIGTERM, SIGKILL after at most 1s)
    /// when this daemon has not reached the scheduler for this long, so that
    /// a task never runs twice at once when the scheduler declares the node
    /// lost (after 10s) and starts its work elsewhere. `off`: never.
    #[arg(long, default_value = "7s", value_parser = parse_fence, value_name = "DURATION")]
    fence_timeout: Duration,

    /// Ports given to serving tasks (endpoint replicas) as $PORT, FIRST-LAST;
    /// by default below Linux's ephemeral port range.
    #[arg(long, default_value = "20000-32767", value_name = "FIRST-LAST")]
    task_ports: gpuctl_node::runtime::PortRange,

    /// After the first successful registration, write this JSON file
    /// (name, agent, metrics, pid, inventory) atomically.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,

    /// Node label reported to the scheduler; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,

    /// A join token (file holding `gpuctl_<id>_<secret>`): traded with the
    /// scheduler for this node's own credential when --token-file holds none,
    /// or when the scheduler refuses the one it holds.
    #[arg(long, value_name = "FILE")]
    join_token_file: Option<PathBuf>,

    /// Cordon this node once this many of its GPUs are unhealthy (0: never by
    /// count). A GPU that falls off the bus (XID 79) always cordons it.
    #[arg(long, default_value_t = 0, value_name = "N")]
    cordon_after_unhealthy_gpus: u32,

    /// This node's credential, sent with every call to the scheduler; written
    /// (mode 0600) after joining [default: WORK_DIR/node.token].
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Tasks' cgroups (CPU quota from resources.cpu, memory limit from
    /// resources.memory, pids limit, GPU device rules): auto (when this host
    /// allows it; else the daemon says so and runs tasks without limits),
    /// required (do not start without them) or off.
    #[arg(long, default_value = "auto", value_name = "auto|required|off")]
    cgroups: gpuctl_node::isolation::CgroupMode,

    /// Most processes and threads a task may have at once (pids.max); 0: no limit.
    #[arg(long, default_value_t = gpuctl_node::isolation::DEFAULT_PIDS_MAX, value_name = "N")]
    task_pids_max: u64,

    /// Let tasks share the host's /tmp instead of each having its own.
    #[arg(long)]
    no_private_tmp: bool,

    /// Supervisors kept started ahead of tasks, each with its task's process
    /// made and waiting in a cgroup of its own, so that a task starts
    /// without either step; 0: a supervisor is started for each task.
    #[arg(
        long,
        env = "GPU_NODE_WARM_SUPERVISORS",
        default_value_t = gpuctl_node::isolation::DEFAULT_WARM_SUPERVISORS,
        value_name = "N"
    )]
    warm_supervisors: usize,

    /// How tasks that name an image run: process (the command runs in this
    /// host's environment; the task's events say the image was not used) or
    /// podman (in the image, under `podman run`).
    #[arg(long, value_enum, default_value = "process")]
    runtime: gpuctl_node::container::RuntimeKind,

    /// The podman executable (--runtime podman).
    #[arg(long, default_value = "podman", value_name = "PATH")]
    podman: PathBuf,

    /// podman's global options, space-separated (--runtime podman). The
    /// default suits Debian's podman 4.3 on hosts with a hybrid cgroup
    /// layout; "" for none.
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "ARGS",
        default_value = "--runtime runc --cgroup-manager cgroupfs"
    )]
    podman_global_args: String,

    /// Options added to each `podman run`, space-separated (--runtime
    /// podman). The default's lower limits suit hosts without
    /// CAP_SYS_RESOURCE; "" for none.
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "ARGS",
        default_value = "--ulimit nofile=1024:1024 --ulimit nproc=1000:1000"
    )]
    podman_run_args: String,

    /// Longest pull of an image that is not on this node (--runtime podman).
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    image_pull_timeout: Duration,

    /// Run N hollow nodes in this process instead of one real daemon: each
    /// joins, registers, heartbeats, watches its assignments and reports
    /// through the real API, and runs each task as a timer (its env's
    /// GPUCTL_SIM_DURATION, else --task-duration; GPUCTL_SIM_EXIT_CODE).
    /// Nodes are named NAME-00000, NAME-00001, ... (--name, default
    /// "hollow"); each keeps its credential in WORK_DIR/NODE.token.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    simulate: Option<u32>,

    /// With --simulate: a node list (CSV with the columns cpu_milli,
    /// memory_mib, gpu, model, as the openb trace's node lists) whose rows
    /// are dealt to the nodes in turn.
    #[arg(long, value_name = "FILE", requires = "simulate", conflicts_with_all = ["gpus", "gpu_file"])]
    node_list: Option<PathBuf>,

    /// With --simulate: how long a task runs when its env names no
    /// GPUCTL_SIM_DURATION (0: it succeeds at once).
    #[arg(long, default_value = "0", value_parser = gpuctl_node::hollow::tasks::parse_duration, value_name = "DURATION")]
    task_duration: Duration,

    /// With --simulate: spread the nodes' registrations over this long.
    #[arg(long, default_value = "0", value_parser = gpuctl_node::hollow::tasks::parse_duration, value_name = "DURATION")]
    ramp: Duration,

    /// Print this host's GPUs as the daemon would register them (NVML, or
    /// the simulated ones --gpus/--gpu-file give), then a sample of each
    /// one's use and health taken after listening for XID events for
    /// --xid-listen, and exit. Needs no scheduler.
    #[arg(long, conflicts_with = "simulate")]
    print_inventory: bool,

    /// With --print-inventory: how long to listen for XID events first.
    #[arg(long, default_value = "2s", value_parser = gpuctl_node::hollow::tasks::parse_duration, value_name = "DURATION", requires = "print_inventory")]
    xid_listen: Duration,
}

/// The task runtime the flags name.
fn runtime_of(cli: &Cli) -> gpuctl_node::container::Runtime {
    use gpuctl_node::container::{Podman, Runtime, RuntimeKind};
    let words = |s: &str| s.split_whitespace().map(str::to_string).collect();
    match cli.runtime {
        RuntimeKind::Process => Runtime::Process,
        RuntimeKind::Podman => Runtime::Podman(Podman {
            program: cli.podman.clone(),
            global_args: words(&cli.podman_global_args),
            run_args: words(&cli.podman_run_args),
            pull_timeout_ms: cli.image_pull_timeout.as_millis() as u64,
        }),
    }
}

/// `500ms`, `1s`, `1.5s`, `2m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (expected e.g. 500ms, 1s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: use ms, s or m (e.g. 500ms, 1s)"
            ))
        }
    };
    if !(0.001..=3600.0).contains(&secs) {
        return Err(format!("duration {s:?} must be from 1ms to 1h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `--fence-timeout`: a duration, or `off` (zero: never fence).
fn parse_fence(s: &str) -> Result<Duration, String> {
    if matches!(s.trim(), "off" | "0") {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

/// `8`, `0.5`, `7500m` → millicores.
fn parse_cpus(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let cores: f64 = match t.strip_suffix('m') {
        Some(m) => m.parse::<f64>().map(|v| v / 1000.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| anyhow::anyhow!("--cpus {s:?}: expected cores (8, 0.5) or millicores (7500m)"))?;
    if !cores.is_finite() || cores <= 0.0 || cores > 100_000.0 {
        bail!("--cpus {s:?}: must be more than 0 and at most 100000 cores");
    }
    Ok((cores * 1000.0).round() as u64)
}

fn default_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    // A DNS label: the first part of the host name, lower case.
    let label: String = raw
        .trim()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        "node".to_string()
    } else {
        label.chars().take(63).collect()
    }
}

fn mem_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The inventory the flags ask for; a simulated one takes run-time faults
/// from `inject` (see `SimulatedInventory::with_inject_file`).
fn choose_inventory(
    cli: &Cli,
    name: &str,
    inject: PathBuf,
) -> anyhow::Result<Arc<dyn GpuInventory>> {
    if let Some(path) = &cli.gpu_file {
        let inv = SimulatedInventory::from_file(name, path)?;
        return Ok(Arc::new(inv.with_inject_file(inject)));
    }
    if !cli.gpus.is_empty() {
        let inv = SimulatedInventory::from_specs(name, &cli.gpus)?;
        return Ok(Arc::new(inv.with_inject_file(inject)));
    }
    match NvmlInventory::new() {
        Ok(inv) => Ok(Arc::new(inv)),
        Err(e) => {
            let msg = format!(
                "gpu-node: NVML not available ({e}); this node reports no GPUs. \
                 Pass --gpus 4xA100-80GB for a simulated inventory."
            );
            eprintln!("{msg}");
            tracing::warn!("{msg}");
            Ok(Arc::new(NoGpus))
        }
    }
}

/// `--simulate N`: a fleet of hollow nodes.
async fn run_fleet(cli: Cli, count: u32) -> anyhow::Result<()> {
    use gpuctl_node::hollow::{self, FleetConfig, Shapes};
    let prefix = cli.name.clone().unwrap_or_else(|| "hollow".to_string());
    gpuctl_common::api::validate_name("--name", &prefix)?;
    let shapes = if let Some(path) = &cli.node_list {
        Shapes::from_node_list(path)?
    } else if let Some(path) = &cli.gpu_file {
        Shapes::from_yaml_file(path)?
    } else if !cli.gpus.is_empty() {
        SimulatedInventory::from_specs("check", &cli.gpus)?;
        Shapes::Specs(cli.gpus.clone())
    } else {
        bail!("--simulate: describe the nodes' GPUs with --gpus, --gpu-file or --node-list");
    };
    let cpu_milli = match &cli.cpus {
        Some(s) => parse_cpus(s)?,
        None => 64_000,
    };
    let memory_bytes = match &cli.memory {
        Some(s) => {
            gpuctl_common::api::parse_bytes(s).map_err(|e| anyhow::anyhow!("--memory: {e}"))?
        }
        None => 256 << 30,
    };
    let cfg = FleetConfig {
        count: count as usize,
        servers: servers_of(&cli)?,
        shapes,
        cpu_milli,
        memory_bytes,
        labels: labels_of(&cli)?,
        heartbeat_interval: heartbeat_of(&cli)?,
        task_duration: cli.task_duration,
        work_dir: cli
            .work_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("gpu-fleet-{prefix}"))),
        join_token_file: cli.join_token_file.clone(),
        tls: cli.tls.load()?,
        ramp: cli.ramp,
        prefix,
    };
    {
        use std::io::Write;
        let banner = format!(
            "gpu-node: {count} hollow node(s) {}..{} with {}\n",
            hollow::node_name(&cfg.prefix, 0),
            hollow::node_name(&cfg.prefix, cfg.count - 1),
            cfg.servers.join(",")
        );
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|_| out.flush());
    }
    hollow::run_fleet(cfg, shutdown_signal())
        .await
        .context("starting the hollow fleet")?;
    Ok(())
}

fn labels_of(cli: &Cli) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for l in &cli.labels {
        let Some((k, v)) = l.split_once('=') else {
            bail!("--label {l:?}: expected KEY=VALUE");
        };
        if k.is_empty() {
            bail!("--label {l:?}: the key must not be empty");
        }
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(labels)
}

fn servers_of(cli: &Cli) -> anyhow::Result<Vec<String>> {
    let servers: Vec<String> = cli
        .server
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if servers.is_empty() {
        bail!("--server: give at least one scheduler URL, e.g. http://127.0.0.1:7000");
    }
    Ok(servers)
}

fn heartbeat_of(cli: &Cli) -> anyhow::Result<Duration> {
    Ok(match cli.heartbeat_interval_ms {
        Some(0) => bail!("--heartbeat-interval-ms must be more than 0"),
        Some(ms) => Duration::from_millis(ms),
        None => cli.heartbeat_interval,
    })
}

/// `--print-inventory`: this host's GPUs and a sample of each, no scheduler.
async fn print_inventory(cli: &Cli) -> anyhow::Result<()> {
    let name = cli.name.clone().unwrap_or_else(default_name);
    let work_dir = cli.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let inventory = choose_inventory(cli, &name, work_dir.join("inject-xid"))?;
    // A first sample drains XID events already pending; the second, after
    // listening, reports what came meanwhile.
    inventory.metrics();
    tokio::time::sleep(cli.xid_listen).await;
    let samples = inventory.metrics();
    print!("{}", inventory::report(inventory.as_ref(), &samples));
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(n) = cli.simulate {
        return run_fleet(cli, n).await;
    }
    if cli.print_inventory {
        return print_inventory(&cli).await;
    }
    let tls = cli.tls.load()?;
    let replica_ca = match (&cli.replica_ca_cert, &cli.replica_ca_key) {
        (Some(c), Some(k)) if tls.is_some() => Some(std::sync::Arc::new(
            gpuctl_security::replica::ReplicaIssuer::load(c, k)
                .context("--replica-ca-cert/--replica-ca-key")?,
        )),
        (Some(_), _) => anyhow::bail!("--replica-ca-cert needs TLS: drop --insecure"),
        _ => None,
    };
    let name = match &cli.name {
        Some(n) => {
            gpuctl_common::api::validate_name("--name", n)?;
            n.clone()
        }
        None => default_name(),
    };
    let work_dir = cli
        .work_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("gpu-node-{name}")));
    let inventory = choose_inventory(&cli, &name, work_dir.join("inject-xid"))?;
    tracing::info!("{}", inventory::describe(inventory.as_ref()));
    let cpu_milli = match &cli.cpus {
        Some(s) => parse_cpus(s)?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()) as u64 * 1000,
    };
    let memory_bytes = match &cli.memory {
        Some(s) => {
            gpuctl_common::api::parse_bytes(s).map_err(|e| anyhow::anyhow!("--memory: {e}"))?
        }
        None => mem_total().unwrap_or(0),
    };
    let labels = labels_of(&cli)?;
    let servers = servers_of(&cli)?;
    let heartbeat_interval = heartbeat_of(&cli)?;
    let config = Config {
        work_dir,
        artifact_dir: cli.artifact_dir.clone(),
        artifact_sweep: Some(cli.artifact_sweep).filter(|d| !d.is_zero()),
        name: name.clone(),
        servers,
        listen: cli.listen,
        metrics_listen: cli.metrics_listen,
        address: cli.address.clone(),
        cpu_milli,
        memory_bytes,
        labels,
        cordon_after_unhealthy_gpus: cli.cordon_after_unhealthy_gpus,
        heartbeat_interval,
        kill_grace: Duration::from_millis(cli.kill_grace_ms),
        task_ports: cli.task_ports,
        fence_timeout: cli.fence_timeout,
        supervisor_exe: None,
        ready_file: cli.ready_file.clone(),
        token_file: cli.token_file.clone(),
        join_token_file: cli.join_token_file.clone(),
        tls,
        replica_ca,
        metrics_insecure: cli.metrics_insecure,
        isolation: gpuctl_node::isolation::Options {
            cgroups: cli.cgroups,
            pids_max: cli.task_pids_max,
            private_tmp: !cli.no_private_tmp,
            warm_supervisors: cli.warm_supervisors,
            runtime: runtime_of(&cli),
        },
    };
    let work_dir = config.work_dir.clone();
    let node = Node::bind(config, inventory.clone())
        .await
        .context("starting gpu-node")?;
    // Never panic on a closed stdout (a supervisor that stopped reading).
    let banner = format!(
        "gpu-node {name}: agent {} ({})\n\
         gpu-node {name}: metrics {}://{}/metrics\n\
         gpu-node {name}: {}\n\
         gpu-node {name}: logs in {}\n\
         gpu-node {name}: scheduler {}\n",
        node.agent_addr(),
        node.identity().agent_endpoint,
        node.metrics_scheme(),
        node.metrics_addr(),
        inventory::describe(inventory.as_ref()),
        work_dir.join("logs").display(),
        cli.server.join(","),
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|_| out.flush());
    }
    tracing::info!(
        "node {name}: agent {}, metrics {}, address {}",
        node.agent_addr(),
        node.metrics_addr(),
        node.identity().address
    );
    node.run(shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM ({e}); stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `gpu-node task-exec`'s flags.
#[derive(Debug, clap::Parser)]
#[command(name = "gpu-node task-exec")]
struct TaskExecArgs {
    /// A `cgroup.procs` file to join first (repeated).
    #[arg(long, value_name = "FILE")]
    join: Vec<std::path::PathBuf>,
}

fn main() -> ExitCode {
    // `gpu-node supervise ...`: the supervisor of one task, which the
    // daemon starts (see gpuctl_node::supervisor); not for people to run.
    if std::env::args_os().nth(1).is_some_and(|a| a == "supervise") {
        let args =
            gpuctl_node::supervisor::run::SuperviseArgs::parse_from(std::env::args_os().skip(1));
        return gpuctl_node::supervisor::run::main(args);
    }
    // `gpu-node task-exec ...`: a task's process made ahead of time by a
    // warm supervisor (see gpuctl_node::warm); not for people to run.
    if std::env::args_os().nth(1).is_some_and(|a| a == "task-exec") {
        let args = TaskExecArgs::parse_from(std::env::args_os().skip(1));
        return gpuctl_node::warm::stub_main(&args.join);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gpu-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("1").unwrap_err().contains("use ms, s or m"));
        assert!(parse_duration("0s").unwrap_err().contains("from 1ms to 1h"));
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("8").unwrap(), 8000);
        assert_eq!(parse_cpus("0.5").unwrap(), 500);
        assert_eq!(parse_cpus("7500m").unwrap(), 7500);
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("lots").is_err());
    }

    #[test]
    fn cli_parses() {
        let cli = Cli::try_parse_from([
            "gpu-node",
            "--server",
            "http://a:7000,http://b:7000",
            "--gpus",
            "4xA100-80GB",
            "--gpus",
            "2xT4-16GB",
            "--heartbeat-interval-ms",
            "250",
            "--join-token-file",
            "/etc/gpuctl/join.token",
        ])
        .unwrap();
        assert_eq!(
            cli.join_token_file.as_deref(),
            Some(std::path::Path::new("/etc/gpuctl/join.token"))
        );
        assert_eq!(cli.token_file, None, "default: WORK_DIR/node.token");
        assert_eq!(cli.server, vec!["http://a:7000", "http://b:7000"]);
        assert_eq!(cli.gpus.len(), 2);
        assert_eq!(cli.heartbeat_interval_ms, Some(250));
        assert_eq!(cli.fence_timeout, Duration::from_secs(7));
        let off = Cli::try_parse_from(["gpu-node", "--fence-timeout", "off"]).unwrap();
        assert_eq!(off.fence_timeout, Duration::ZERO);
        assert!(Cli::try_parse_from(["gpu-node", "--fence-timeout", "soon"]).is_err());
        assert!(
            Cli::try_parse_from(["gpu-node", "--gpus", "1xA100", "--gpu-file", "x.yaml"]).is_err()
        );
    }
}
