//! `gpuctl dev`: a whole cluster on one machine, as child processes.
//!
//! ```text
//! gpuctl dev ─spawn─► gpu-scheduler × R (1, 3 or 5 Raft replicas, all
//!                      given the same --peers) --ready-file DIR/scheduler-i.ready.json
//!            ─spawn─► gpu-node × N  --server URL1,URL2,… --ready-file DIR/node-i.ready.json
//!            ─waits for the ready files, then for every node to be Ready
//!            ─spawn─► gpu-gateway --server URL1,URL2,… --ready-file DIR/gateway.ready.json
//!            ─writes DIR/cluster.json and the CLI context file
//!            ─supervises: Ctrl-C/SIGTERM stops all; a node dying, or the
//!             only scheduler dying, stops all; with R > 1 a scheduler
//!             replica that dies is restarted (same id, port and data dir)
//! ```
//!
//! The replicas' ports are chosen once and kept in `DIR/replicas.json`:
//! Raft stores the membership (ids and addresses) in each data dir, so a
//! later `gpuctl dev` on the same state dir must reuse them.
//!
//! Each child runs in its own process group so that Ctrl-C in the terminal
//! reaches only us, and we stop the children in order: SIGTERM, up to 10 s,
//! then SIGKILL.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gpuctl_common::api::{Job, Manifest, NodePhase};
use gpuctl_proto::v1::{ApplyRequest, GetRequest};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::config::{self, Context, EnvVars};
use crate::error::{Error, Result, EXIT_FAILURE};
use crate::manifest::{self, SubmitArgs};
use crate::{client, out, DevFlags};

/// GPUs of each node when `--gpus` is not given.
pub const DEFAULT_GPUS: &str = "8xA100-80GB";
/// How long a child may take to write its ready file.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the nodes may take to show up Ready in the scheduler.
const NODES_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long children get to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of a child's log shown when it fails.
const LOG_TAIL_LINES: usize = 20;
/// The job `--example` submits.
pub const EXAMPLE_JOB: &str = "hello-example";
/// The file in the state dir that keeps the replicas' ids and ports.
pub const REPLICAS_FILE: &str = "replicas.json";
/// Longest pause before restarting a replica that keeps failing.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// Check `--replicas`: a Raft majority needs an odd number of voters.
pub fn validate_replicas(n: u32) -> Result<u32> {
    match n {
        1 | 3 | 5 => Ok(n),
        _ => Err(Error::Usage(format!(
            "--replicas must be 1, 3 or 5 (a Raft control plane needs an odd number of voters), not {n}"
        ))),
    }
}

/// The scheduler replicas of a state dir, as kept in `replicas.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPlan {
    pub replicas: u32,
    pub schedulers: Vec<ReplicaPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPort {
    pub id: u64,
    /// gRPC port on 127.0.0.1 (0: any free port, for a single replica).
    pub port: u16,
}

impl ReplicaPlan {
    pub fn ports(&self) -> Vec<u16> {
        self.schedulers.iter().map(|s| s.port).collect()
    }
}

/// The replica count a state dir was made for: `replicas.json`, else 1 when
/// it holds a scheduler data dir from before that file existed.
pub fn saved_replica_plan(state_dir: &Path) -> Result<Option<ReplicaPlan>> {
    let path = state_dir.join(REPLICAS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::Other(format!(
                "{} is not a gpuctl replica plan ({e}); fix it, or use a new --state-dir",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let legacy = state_dir.join("scheduler-1");
            let used = std::fs::read_dir(&legacy).is_ok_and(|mut d| d.next().is_some());
            Ok(used.then(|| ReplicaPlan {
                replicas: 1,
                schedulers: vec![ReplicaPort { id: 1, port: 0 }],
            }))
        }
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

/// Whether 127.0.0.1:`port` can be listened on now; the error when not.
fn port_free(port: u16) -> std::result::Result<(), std::io::Error> {
    std::net::TcpListener::bind(("127.0.0.1", port)).map(drop)
}

/// Choose the replicas' ports: those saved for this state dir (which must be
/// free again), else `flag_port`, `flag_port + 1`, …, else free ports picked
/// by the kernel. A single replica keeps today's behaviour: its port is
/// `--scheduler-port` (0: any) on every run.
pub fn plan_ports(
    n: u32,
    flag_port: u16,
    saved: Option<&ReplicaPlan>,
    state_dir: &Path,
) -> Result<ReplicaPlan> {
    if let Some(p) = saved {
        if p.replicas != n {
            return Err(Error::Usage(format!(
                "{} holds a {}-replica control plane (Raft keeps its membership on disk), so it cannot run with --replicas {n}; \
                 run with --replicas {} to use it, or pass a new --state-dir to start a {n}-replica cluster",
                state_dir.display(),
                p.replicas,
                p.replicas
            )));
        }
    }
    if n == 1 {
        return Ok(ReplicaPlan {
            replicas: 1,
            schedulers: vec![ReplicaPort {
                id: 1,
                port: flag_port,
            }],
        });
    }
    let taken = |id: u64, port: u16, e: std::io::Error, whence: &str| {
        Error::Other(format!(
            "port {port} of scheduler replica {id} ({whence}) is in use: {e}; \
             stop whatever listens there, or start a fresh cluster with a new --state-dir"
        ))
    };
    if let Some(p) = saved {
        let ports = p.ports();
        if flag_port != 0 && flag_port != ports[0] {
            return Err(Error::Usage(format!(
                "the replicas in {} listen on ports {}; leave out --scheduler-port or pass --scheduler-port {}",
                state_dir.display(),
                join_ports(&ports),
                ports[0]
            )));
        }
        let whence = format!("kept in {}", state_dir.join(REPLICAS_FILE).display());
        for s in &p.schedulers {
            port_free(s.port).map_err(|e| taken(s.id, s.port, e, &whence))?;
        }
        return Ok(p.clone());
    }
    let ports: Vec<u16> = if flag_port != 0 {
        let ports: Vec<u16> = (0..n)
            .map(|i| flag_port.checked_add(i as u16))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--scheduler-port {flag_port} leaves no room for {n} consecutive ports"
                ))
            })?;
        for (i, &port) in ports.iter().enumerate() {
            port_free(port).map_err(|e| taken(i as u64 + 1, port, e, "from --scheduler-port"))?;
        }
        ports
    } else {
        // Hold every listener until all are chosen, so the ports differ.
        let listeners = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io("cannot find a free port on 127.0.0.1", e))?;
        listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io("cannot find a free port on 127.0.0.1", e))?
    };
    Ok(ReplicaPlan {
        replicas: n,
        schedulers: ports
            .into_iter()
            .enumerate()
            .map(|(i, port)| ReplicaPort {
                id: i as u64 + 1,
                port,
            })
            .collect(),
    })
}

fn join_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `500ms`, `2s`, `1.5s`: a delay as the restart message shows it.
pub fn format_delay(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Everything `gpuctl dev` needs to know, resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    pub state_dir: PathBuf,
    pub gpus: Vec<String>,
    pub nodes: u32,
    pub scheduler_port: u16,
    pub example: bool,
    pub config_dir: Option<PathBuf>,
    /// Scheduler replicas: 1, 3 or 5.
    pub replicas: u32,
    /// Pause before restarting a replica that died (only with replicas > 1).
    pub restart_delay: Duration,
    /// Port of replica `i` at `ports[i - 1]`; filled in by [`plan_ports`]
    /// (until then, `--scheduler-port` for the first).
    pub ports: Vec<u16>,
    /// The inference gateway's port (0: any free one).
    pub gateway_port: u16,
    /// How long the gateway holds a request while an endpoint has no replica.
    pub cold_start_timeout: Duration,
}

impl Plan {
    pub fn from_flags(flags: DevFlags, env: &EnvVars) -> Result<Plan> {
        let state_dir =
            match flags.state_dir.or_else(|| env.dev_state_dir()) {
                Some(d) => d,
                None => return Err(Error::Usage(
                    "cannot pick a state dir: pass --state-dir DIR (or set XDG_DATA_HOME or HOME)"
                        .into(),
                )),
            };
        let gpus = if flags.gpus.is_empty() {
            vec![DEFAULT_GPUS.to_string()]
        } else {
            flags.gpus
        };
        let replicas = validate_replicas(flags.replicas)?;
        Ok(Plan {
            state_dir,
            gpus,
            nodes: flags.nodes,
            scheduler_port: flags.scheduler_port,
            example: flags.example,
            config_dir: env.config_dir(),
            replicas,
            restart_delay: flags.restart_delay.duration,
            ports: vec![flags.scheduler_port],
            gateway_port: flags.gateway_port,
            cold_start_timeout: flags.cold_start_timeout.duration,
        })
    }

    pub fn scheduler_ids(&self) -> std::ops::RangeInclusive<u64> {
        1..=u64::from(self.replicas)
    }
    pub fn scheduler_dir(&self, id: u64) -> PathBuf {
        self.state_dir.join(format!("scheduler-{id}"))
    }
    pub fn scheduler_ready(&self, id: u64) -> PathBuf {
        self.state_dir.join(format!("scheduler-{id}.ready.json"))
    }
    pub fn scheduler_log(&self, id: u64) -> PathBuf {
        self.logs_dir().join(format!("scheduler-{id}.log"))
    }
    fn port(&self, id: u64) -> u16 {
        self.ports
            .get(id as usize - 1)
            .copied()
            .unwrap_or(self.scheduler_port)
    }
    /// `1=127.0.0.1:P1,2=127.0.0.1:P2,…`, the same for every replica.
    pub fn peers_arg(&self) -> String {
        self.scheduler_ids()
            .map(|id| format!("{id}=127.0.0.1:{}", self.port(id)))
            .collect::<Vec<_>>()
            .join(",")
    }
    pub fn node_name(i: u32) -> String {
        format!("dev-node-{i}")
    }
    pub fn node_dir(&self, i: u32) -> PathBuf {
        self.state_dir.join(format!("node-{i}"))
    }
    pub fn node_ready(&self, i: u32) -> PathBuf {
        self.state_dir.join(format!("node-{i}.ready.json"))
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// `gpu-scheduler`'s arguments for replica `id` (from 1); `--peers`
    /// only when there is more than one replica.
    pub fn scheduler_args(&self, id: u64) -> Vec<String> {
        let mut a = vec![
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            self.scheduler_dir(id).display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.port(id)),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--ready-file".into(),
            self.scheduler_ready(id).display().to_string(),
        ];
        if self.replicas > 1 {
            a.push("--peers".into());
            a.push(self.peers_arg());
        }
        a
    }

    /// Where the gateway writes its address once it listens.
    pub fn gateway_ready(&self) -> PathBuf {
        self.state_dir.join("gateway.ready.json")
    }

    /// `gpu-gateway`'s arguments: it follows every scheduler replica.
    pub fn gateway_args(&self, scheduler_urls: &str) -> Vec<String> {
        let timeout_ms = self.cold_start_timeout.as_millis().max(1);
        vec![
            "--server".into(),
            scheduler_urls.into(),
            "--listen".into(),
            "127.0.0.1".into(),
            "--port".into(),
            self.gateway_port.to_string(),
            "--cold-start-timeout-ms".into(),
            timeout_ms.to_string(),
            "--ready-file".into(),
            self.gateway_ready().display().to_string(),
        ]
    }

    /// `gpu-node`'s arguments for node `i` (from 1).
    pub fn node_args(&self, i: u32, scheduler_url: &str) -> Vec<String> {
        let mut a = vec![
            "--server".into(),
            scheduler_url.into(),
            "--name".into(),
            Self::node_name(i),
        ];
        for g in &self.gpus {
            a.push("--gpus".into());
            a.push(g.clone());
        }
        a.extend([
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--work-dir".into(),
            self.node_dir(i).display().to_string(),
            "--artifact-dir".into(),
            self.state_dir.join("artifacts").display().to_string(),
            "--ready-file".into(),
            self.node_ready(i).display().to_string(),
        ]);
        a
    }
}

/// Find `name` next to the running executable (also one level up, for test
/// binaries in `target/debug/deps`), else on `PATH`.
pub fn find_binary(name: &str, exe: Option<&Path>, path_env: Option<&OsStr>) -> Result<PathBuf> {
    let exe_dir = exe.and_then(Path::parent);
    let mut candidates = Vec::new();
    if let Some(d) = exe_dir {
        candidates.push(d.join(name));
        if d.file_name() == Some(OsStr::new("deps")) {
            if let Some(up) = d.parent() {
                candidates.push(up.join(name));
            }
        }
    }
    if let Some(p) = path_env {
        candidates.extend(std::env::split_paths(p).map(|d| d.join(name)));
    }
    if let Some(found) = candidates.into_iter().find(|c| is_executable(c)) {
        return Ok(found);
    }
    let dir = exe_dir.map_or_else(|| "<unknown>".into(), |d| d.display().to_string());
    Err(Error::Other(format!(
        "cannot find {name} next to {dir} or on PATH; build it with \"cargo build --bins\""
    )))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The last `n` lines of a log file, indented, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return format!("    (cannot read {}: {e})", path.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    if tail.is_empty() {
        return "    (the log is empty)".into();
    }
    tail.iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One child process we started.
struct Child {
    label: String,
    pid: i32,
    log: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    /// Set (to how it ended) when the process exited.
    exited: watch::Receiver<Option<String>>,
}

impl Child {
    fn exit_status(&self) -> Option<String> {
        self.exited.borrow().clone()
    }
}

/// The children and the channel that says when one exits.
struct Supervisor {
    children: Vec<Child>,
    exits_tx: mpsc::UnboundedSender<usize>,
    exits: mpsc::UnboundedReceiver<usize>,
}

impl Supervisor {
    fn new() -> Self {
        let (exits_tx, exits) = mpsc::unbounded_channel();
        Supervisor {
            children: Vec::new(),
            exits_tx,
            exits,
        }
    }

    fn spawn(
        &mut self,
        label: &str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<usize> {
        let idx = self.children.len();
        let (pid, exited) = self.start_process(idx, program, args, &log)?;
        self.children.push(Child {
            label: label.to_string(),
            pid,
            log,
            program: program.to_path_buf(),
            args: args.to_vec(),
            exited,
        });
        Ok(idx)
    }

    /// Start child `idx` again with the same program, arguments and log.
    fn respawn(&mut self, idx: usize) -> Result<i32> {
        let c = &self.children[idx];
        let (program, args, log) = (c.program.clone(), c.args.clone(), c.log.clone());
        let (pid, exited) = self.start_process(idx, &program, &args, &log)?;
        let c = &mut self.children[idx];
        c.pid = pid;
        c.exited = exited;
        Ok(pid)
    }

    /// Spawn a process that reports its exit as `idx` on the exits channel.
    fn start_process(
        &self,
        idx: usize,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<(i32, watch::Receiver<Option<String>>)> {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(format!("cannot open {}", log.display()), e))?;
        let _ = writeln!(
            file,
            "==> {} gpuctl dev: starting {} {}",
            crate::render::format_time(gpuctl_common::now_ms()),
            program.display(),
            crate::render::shell_join(args)
        );
        let stderr = file
            .try_clone()
            .map_err(|e| Error::io(format!("cannot open {}", log.display()), e))?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .process_group(0);
        let mut child = tokio::process::Command::from(cmd)
            .spawn()
            .map_err(|e| Error::io(format!("cannot start {}", program.display()), e))?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let (tx, rx) = watch::channel(None);
        let exits_tx = self.exits_tx.clone();
        tokio::spawn(async move {
            let how = match child.wait().await {
                Ok(st) => st.to_string(),
                Err(e) => format!("unknown exit ({e})"),
            };
            let _ = tx.send(Some(how));
            let _ = exits_tx.send(idx);
        });
        Ok((pid, rx))
    }

    /// An error when any child has exited, naming it with its log tail.
    fn check_alive(&self) -> Result<()> {
        for c in &self.children {
            if let Some(how) = c.exit_status() {
                return Err(Error::Other(format!(
                    "{} (pid {}) exited ({how}); the end of {}:\n{}",
                    c.label,
                    c.pid,
                    c.log.display(),
                    log_tail(&c.log, LOG_TAIL_LINES)
                )));
            }
        }
        Ok(())
    }

    /// Wait for child `idx` to write its ready file; return its JSON.
    async fn wait_ready(&self, idx: usize, path: &Path) -> Result<Value> {
        let c = &self.children[idx];
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    if v.is_object() {
                        return Ok(v);
                    }
                }
            }
            self.check_alive()?;
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Other(format!(
                    "{} did not write {} within {}s; the end of {}:\n{}",
                    c.label,
                    path.display(),
                    READY_TIMEOUT.as_secs(),
                    c.log.display(),
                    log_tail(&c.log, LOG_TAIL_LINES)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal_all(&self, sig: Signal) {
        // Nodes (started last) first, so they stop before their scheduler.
        for c in self.children.iter().rev() {
            if c.exit_status().is_none() && c.pid > 0 {
                let _ = kill(Pid::from_raw(c.pid), sig);
            }
        }
    }

    async fn all_exited_within(&self, d: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            if self.children.iter().all(|c| c.exit_status().is_some()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM every child, wait up to [`STOP_GRACE`], then SIGKILL.
    async fn shutdown(&self) {
        self.signal_all(Signal::SIGTERM);
        if !self.all_exited_within(STOP_GRACE).await {
            for c in &self.children {
                if c.exit_status().is_none() {
                    eprintln!(
                        "gpuctl dev: {} (pid {}) did not stop within {}s; killing it",
                        c.label,
                        c.pid,
                        STOP_GRACE.as_secs()
                    );
                }
            }
            self.signal_all(Signal::SIGKILL);
            self.all_exited_within(Duration::from_secs(2)).await;
        }
    }
}

/// What start-up learned.
struct Started {
    /// Every replica's gRPC URL, by id order.
    server_urls: Vec<String>,
    /// Each replica's ready file plus its data dir, as in `cluster.json`.
    schedulers: Vec<Value>,
    nodes: Vec<Value>,
    /// The gateway's ready file (`http`, `url`, `metrics`, `pid`), when it runs.
    gateway: Option<Value>,
}

impl Started {
    fn server_list(&self) -> String {
        self.server_urls.join(",")
    }
}

fn field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("?")
}

/// Write `DIR/cluster.json` (atomically): every process with its addresses
/// and pid, for scripts and tests.
fn write_cluster_file(plan: &Plan, started: &Started) -> Result<()> {
    let cluster = json!({
        "schedulers": started.schedulers,
        "nodes": started.nodes,
        "gateway": started.gateway,
        "stateDir": plan.state_dir,
    });
    config::write_atomic(
        &plan.state_dir.join("cluster.json"),
        serde_json::to_string_pretty(&cluster)
            .expect("json")
            .as_bytes(),
    )
}

/// A replica's ready file as `cluster.json` lists it.
fn scheduler_entry(plan: &Plan, id: u64, ready: &Value) -> Value {
    let mut v = ready.clone();
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), json!(id));
        o.insert("dataDir".into(), json!(plan.scheduler_dir(id)));
    }
    v
}

/// Where a replica that died is on its way back.
enum Restart {
    /// Start it again at this instant.
    Due(tokio::time::Instant),
    /// Started; waiting for its ready file.
    Starting {
        since: tokio::time::Instant,
        warned: bool,
    },
}

/// Run `gpuctl dev` until Ctrl-C (exit 0) or a child dies (exit 1).
pub async fn run(flags: DevFlags, env: &EnvVars) -> Result<u8> {
    let mut plan = Plan::from_flags(flags, env)?;
    std::fs::create_dir_all(&plan.state_dir)
        .map_err(|e| Error::io(format!("cannot create {}", plan.state_dir.display()), e))?;
    plan.state_dir = std::fs::canonicalize(&plan.state_dir).unwrap_or(plan.state_dir);
    let saved = saved_replica_plan(&plan.state_dir)?;
    let replica_plan = plan_ports(
        plan.replicas,
        plan.scheduler_port,
        saved.as_ref(),
        &plan.state_dir,
    )?;
    plan.ports = replica_plan.ports();
    if saved.as_ref() != Some(&replica_plan) {
        config::write_atomic(
            &plan.state_dir.join(REPLICAS_FILE),
            serde_json::to_string_pretty(&replica_plan)
                .expect("json")
                .as_bytes(),
        )?;
    }
    for d in [plan.logs_dir()]
        .into_iter()
        .chain(plan.scheduler_ids().map(|id| plan.scheduler_dir(id)))
        .chain((1..=plan.nodes).map(|i| plan.node_dir(i)))
    {
        std::fs::create_dir_all(&d)
            .map_err(|e| Error::io(format!("cannot create {}", d.display()), e))?;
    }
    let exe = std::env::current_exe().ok();
    let path_env = std::env::var_os("PATH");
    let scheduler_bin = find_binary("gpu-scheduler", exe.as_deref(), path_env.as_deref())?;
    let node_bin = find_binary("gpu-node", exe.as_deref(), path_env.as_deref())?;
    // Without the gateway the cluster still runs jobs; endpoints are not served.
    let gateway_bin = match find_binary("gpu-gateway", exe.as_deref(), path_env.as_deref()) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("gpuctl dev: {e}; starting without the inference gateway");
            None
        }
    };
    remove_stale_ready_files(&plan.state_dir)?;

    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("cannot handle SIGINT", e))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| Error::io("cannot handle SIGTERM", e))?;

    let mut sup = Supervisor::new();
    let what = if plan.replicas == 1 {
        "1 scheduler".to_string()
    } else {
        format!("{} scheduler replicas", plan.replicas)
    };
    out(&format!(
        "gpuctl dev: starting {what} and {} node(s) in {}\n",
        plan.nodes,
        plan.state_dir.display()
    ))?;
    let started = tokio::select! {
        r = start(&mut sup, &plan, &scheduler_bin, &node_bin, gateway_bin.as_deref()) => r,
        _ = sigint.recv() => Err(Error::Other("interrupted".into())),
        _ = sigterm.recv() => Err(Error::Other("interrupted".into())),
    };
    let mut started = match started {
        Ok(s) => s,
        Err(e) => {
            sup.shutdown().await;
            return match e {
                Error::Other(m) if m == "interrupted" => Ok(0),
                e => Err(e),
            };
        }
    };

    let context = Context {
        server: started.server_list(),
        state_dir: Some(plan.state_dir.clone()),
        gateway: started
            .gateway
            .as_ref()
            .map(|g| format!("http://{}", field(g, "http"))),
    };
    let finish = async {
        write_cluster_file(&plan, &started)?;
        let ctx_path = match &plan.config_dir {
            Some(d) => Some(config::write_context(d, &context)?),
            None => None,
        };
        out(&summary(&plan, &started, ctx_path.as_deref()))?;
        if plan.example {
            submit_example(&started.server_urls).await?;
        }
        out("\nPress Ctrl-C to stop the cluster.\n")?;
        Ok::<(), Error>(())
    };
    let code = tokio::select! {
        r = finish => match r {
            Ok(()) => None,
            Err(e) => { eprintln!("error: {e}"); Some(EXIT_FAILURE) }
        },
        _ = sigint.recv() => Some(0),
        _ = sigterm.recv() => Some(0),
    };
    let code = match code {
        Some(c) => c,
        None => supervise(&mut sup, &plan, &mut started, &mut sigint, &mut sigterm).await,
    };
    out("gpuctl dev: stopping...\n").ok();
    sup.shutdown().await;
    if let Some(d) = &plan.config_dir {
        remove_context_if_ours(d, &context);
    }
    out("gpuctl dev: stopped\n").ok();
    Ok(code)
}

/// Watch the children until a signal (0) or a fatal exit (1). With more than
/// one replica, a scheduler that dies is restarted after the restart delay
/// (doubling, up to [`MAX_RESTART_DELAY`], while it keeps dying before it
/// is ready) and `cluster.json` gets its new pid once it is ready again.
async fn supervise(
    sup: &mut Supervisor,
    plan: &Plan,
    started: &mut Started,
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
) -> u8 {
    // Children 0..replicas are the schedulers, replica id = index + 1.
    let replicas = plan.replicas as usize;
    let mut restarts: HashMap<usize, Restart> = HashMap::new();
    let mut failures: HashMap<usize, u32> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = sigint.recv() => return 0,
            _ = sigterm.recv() => return 0,
            Some(idx) = sup.exits.recv() => {
                let c = &sup.children[idx];
                let how = c.exit_status().unwrap_or_default();
                if replicas > 1 && idx < replicas {
                    let id = idx + 1;
                    // Dying again before it was ready: back off.
                    let n = if matches!(restarts.get(&idx), Some(Restart::Starting { .. })) {
                        let n = failures.entry(idx).or_insert(0);
                        *n += 1;
                        *n
                    } else {
                        0
                    };
                    let delay = plan
                        .restart_delay
                        .saturating_mul(1 << n.min(5))
                        .min(MAX_RESTART_DELAY.max(plan.restart_delay));
                    eprintln!(
                        "gpuctl dev: scheduler {id} (pid {}) exited: {how}; restarting it in {}",
                        c.pid,
                        format_delay(delay)
                    );
                    restarts.insert(idx, Restart::Due(tokio::time::Instant::now() + delay));
                    continue;
                }
                eprintln!(
                    "gpuctl dev: {} (pid {}) exited unexpectedly ({how}); stopping the cluster. The end of {}:\n{}",
                    c.label,
                    c.pid,
                    c.log.display(),
                    log_tail(&c.log, LOG_TAIL_LINES)
                );
                return EXIT_FAILURE;
            }
            _ = tick.tick() => {
                let now = tokio::time::Instant::now();
                for (&idx, r) in restarts.iter_mut() {
                    let id = idx as u64 + 1;
                    match r {
                        Restart::Due(at) if now >= *at => {
                            let _ = std::fs::remove_file(plan.scheduler_ready(id));
                            match sup.respawn(idx) {
                                Ok(_) => *r = Restart::Starting { since: now, warned: false },
                                Err(e) => {
                                    eprintln!("gpuctl dev: cannot restart scheduler {id}: {e}; trying again in {}", format_delay(plan.restart_delay));
                                    *at = now + plan.restart_delay;
                                }
                            }
                        }
                        Restart::Due(_) => {}
                        Restart::Starting { since, warned } => {
                            if !*warned && now.duration_since(*since) > READY_TIMEOUT {
                                *warned = true;
                                eprintln!(
                                    "gpuctl dev: scheduler {id} (pid {}) is not ready after {}s; see {}",
                                    sup.children[idx].pid,
                                    READY_TIMEOUT.as_secs(),
                                    sup.children[idx].log.display()
                                );
                            }
                        }
                    }
                }
                // Those whose ready file appeared are back.
                let back: Vec<usize> = restarts
                    .iter()
                    .filter(|(_, r)| matches!(r, Restart::Starting { .. }))
                    .map(|(&i, _)| i)
                    .filter(|&i| read_ready(&plan.scheduler_ready(i as u64 + 1)).is_some())
                    .collect();
                for idx in back {
                    let id = idx as u64 + 1;
                    let ready = read_ready(&plan.scheduler_ready(id)).expect("just read");
                    restarts.remove(&idx);
                    failures.remove(&idx);
                    started.schedulers[idx] = scheduler_entry(plan, id, &ready);
                    if let Err(e) = write_cluster_file(plan, started) {
                        eprintln!("gpuctl dev: {e}");
                    }
                    out(&format!(
                        "gpuctl dev: scheduler {id} is back (pid {})\n",
                        sup.children[idx].pid
                    ))
                    .ok();
                }
            }
        }
    }
}

/// A ready file's JSON object, once it is complete.
fn read_ready(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str::<Value>(&text)
        .ok()
        .filter(Value::is_object)
}

async fn start(
    sup: &mut Supervisor,
    plan: &Plan,
    scheduler_bin: &Path,
    node_bin: &Path,
    gateway_bin: Option<&Path>,
) -> Result<Started> {
    let logs = plan.logs_dir();
    // Start every replica before waiting: none is ready before a majority
    // is up to elect a leader.
    let mut idxs = Vec::new();
    for id in plan.scheduler_ids() {
        let idx = sup.spawn(
            &format!("gpu-scheduler {id}"),
            scheduler_bin,
            &plan.scheduler_args(id),
            plan.scheduler_log(id),
        )?;
        idxs.push((id, idx));
    }
    let mut schedulers = Vec::new();
    let mut server_urls = Vec::new();
    for (id, idx) in idxs {
        let ready = sup.wait_ready(idx, &plan.scheduler_ready(id)).await?;
        let grpc = field(&ready, "grpc");
        let url = config::normalize_url(grpc).map_err(|_| {
            Error::Other(format!(
                "{} has no usable \"grpc\" address: {ready}",
                plan.scheduler_ready(id).display()
            ))
        })?;
        server_urls.push(url);
        schedulers.push(scheduler_entry(plan, id, &ready));
    }
    let server_list = server_urls.join(",");

    let mut idxs = Vec::new();
    for i in 1..=plan.nodes {
        let idx = sup.spawn(
            &Plan::node_name(i),
            node_bin,
            &plan.node_args(i, &server_list),
            logs.join(format!("node-{i}.log")),
        )?;
        idxs.push((i, idx));
    }
    let mut nodes = Vec::new();
    for (i, idx) in idxs {
        nodes.push(sup.wait_ready(idx, &plan.node_ready(i)).await?);
    }

    // Wait until the scheduler lists every node Ready.
    let want: Vec<String> = (1..=plan.nodes).map(Plan::node_name).collect();
    let deadline = tokio::time::Instant::now() + NODES_READY_TIMEOUT;
    let mut conn = client::Conn::new(server_urls.clone());
    let mut missing = want.clone();
    loop {
        sup.check_alive()?;
        let req = GetRequest {
            kind: "nodes".into(),
            name: String::new(),
        };
        if let Ok(resp) = conn
            .call(|mut c| {
                let req = req.clone();
                async move { c.get(req).await }
            })
            .await
        {
            let ready: Vec<String> = resp
                .into_inner()
                .objects_json
                .iter()
                .filter_map(|j| serde_json::from_str::<gpuctl_common::api::Node>(j).ok())
                .filter(|n| n.status.phase == NodePhase::Ready)
                .map(|n| n.metadata.name)
                .collect();
            missing = want
                .iter()
                .filter(|w| !ready.contains(w))
                .cloned()
                .collect();
            if missing.is_empty() {
                break;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Other(format!(
                "the scheduler did not list {} as Ready within {}s; see the logs in {}",
                missing.join(", "),
                NODES_READY_TIMEOUT.as_secs(),
                logs.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gateway = match gateway_bin {
        Some(bin) => {
            let idx = sup.spawn(
                "gpu-gateway",
                bin,
                &plan.gateway_args(&server_list),
                logs.join("gateway.log"),
            )?;
            Some(sup.wait_ready(idx, &plan.gateway_ready()).await?)
        }
        None => None,
    };
    Ok(Started {
        server_urls,
        schedulers,
        nodes,
        gateway,
    })
}

fn remove_stale_ready_files(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".ready.json") {
            std::fs::remove_file(e.path())
                .map_err(|err| Error::io(format!("cannot remove {}", e.path().display()), err))?;
        }
    }
    Ok(())
}

fn remove_context_if_ours(config_dir: &Path, ours: &Context) {
    if let Ok(Some(ctx)) = config::read_context(config_dir) {
        if ctx == *ours {
            let _ = std::fs::remove_file(config_dir.join(config::CONTEXT_FILE));
        }
    }
}

/// What `gpuctl dev` prints once the cluster is up.
fn summary(plan: &Plan, s: &Started, ctx_path: Option<&Path>) -> String {
    let url = |a: &str| format!("http://{a}");
    let mut o = String::from("\ngpuctl dev: cluster is up\n\n");
    for (i, sch) in s.schedulers.iter().enumerate() {
        let label = format!("scheduler {}", i + 1);
        o.push_str(&format!(
            "  {label:<16} gRPC {}   metrics {}/metrics   pid {}\n",
            s.server_urls[i],
            url(field(sch, "metrics")),
            sch.get("pid").map_or("?".into(), |p| p.to_string())
        ));
    }
    for n in &s.nodes {
        o.push_str(&format!(
            "  {:<16} agent {}   metrics {}/metrics   pid {}   GPUs {} ({})\n",
            field(n, "name"),
            url(field(n, "agent")),
            url(field(n, "metrics")),
            n.get("pid").map_or("?".into(), |p| p.to_string()),
            plan.gpus.join(" + "),
            field(n, "inventory"),
        ));
    }
    if let Some(g) = &s.gateway {
        o.push_str(&format!(
            "  {:<16} {}/v2/models/ENDPOINT/infer   metrics {}   pid {}\n",
            "gateway",
            field(g, "url"),
            field(g, "metrics"),
            g.get("pid").map_or("?".into(), |p| p.to_string()),
        ));
    }
    o.push_str(&format!(
        "  state dir        {}\n",
        plan.state_dir.display()
    ));
    o.push_str(&format!(
        "  logs             {}/*.log\n",
        plan.logs_dir().display()
    ));
    o.push_str(&format!(
        "  cluster file     {}\n",
        plan.state_dir.join("cluster.json").display()
    ));
    match ctx_path {
        Some(p) => o.push_str(&format!(
            "  context          {} (gpuctl commands now talk to this cluster)\n",
            p.display()
        )),
        None => o.push_str(&format!(
            "  context          not written (no config dir); use --server {}\n",
            s.server_list()
        )),
    }
    if plan.replicas > 1 {
        o.push_str(&format!(
            "\n{} Raft replicas: a replica that dies is restarted after {}; watch with \"gpuctl cluster status\"\n",
            plan.replicas,
            format_delay(plan.restart_delay)
        ));
    }
    o.push_str(
        "\ntry:\n  gpuctl get nodes\n  gpuctl submit --gpus 1 -- sh -c 'echo hello from rank $RANK on GPUs $CUDA_VISIBLE_DEVICES'\n  gpuctl get jobs\n",
    );
    if plan.replicas > 1 {
        o.push_str("  gpuctl cluster status\n");
    }
    o
}

/// The `--example` job: 2 tasks × 1 GPU that print their rank.
pub fn example_job() -> Result<Job> {
    manifest::build_submit_job(
        &SubmitArgs {
            name: Some(EXAMPLE_JOB.into()),
            gpus: 1.0,
            replicas: 2,
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo rank=$RANK of $WORLD_SIZE on GPUs $CUDA_VISIBLE_DEVICES".into(),
            ],
            ..Default::default()
        },
        || EXAMPLE_JOB.into(),
    )
}

async fn submit_example(urls: &[String]) -> Result<()> {
    let job = example_job()?;
    let mut conn = client::Conn::new(urls.to_vec());
    let req = ApplyRequest {
        object_json: serde_json::to_string(&Manifest::Job(job)).expect("json"),
        source: "<gpuctl dev --example>".into(),
        ..Default::default()
    };
    let r = conn
        .call(|mut c| {
            let req = req.clone();
            async move { c.apply(req).await }
        })
        .await;
    match r {
        Ok(_) => out(&format!("\njob/{EXAMPLE_JOB} created\n"))?,
        Err(client::CallError::Status(s)) if s.code() == tonic::Code::AlreadyExists => out(
            &format!("\njob/{EXAMPLE_JOB} already exists; not submitting it again\n"),
        )?,
        Err(e) => return Err(e.into_error(None, urls)),
    }
    out(&format!(
        "look at it with:\n  gpuctl get jobs\n  gpuctl wait {EXAMPLE_JOB}\n  gpuctl describe job {EXAMPLE_JOB}\n  gpuctl logs {EXAMPLE_JOB} --task 0\n  gpuctl logs {EXAMPLE_JOB} --task 1\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dir: &Path) -> Plan {
        Plan {
            state_dir: dir.to_path_buf(),
            gpus: vec!["4xH100-80GB".into(), "2xA100-40GB".into()],
            nodes: 2,
            scheduler_port: 0,
            example: false,
            config_dir: None,
            replicas: 1,
            restart_delay: Duration::from_secs(2),
            ports: vec![0],
            gateway_port: 0,
            cold_start_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn child_command_lines_follow_the_contract() {
        let p = plan(Path::new("/s"));
        assert_eq!(
            p.scheduler_args(1).join(" "),
            "--id 1 --data-dir /s/scheduler-1 --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --ready-file /s/scheduler-1.ready.json"
        );
        let p3 = Plan {
            replicas: 3,
            ports: vec![7100, 7200, 7300],
            ..plan(Path::new("/s"))
        };
        assert_eq!(
            p3.scheduler_args(2).join(" "),
            "--id 2 --data-dir /s/scheduler-2 --listen 127.0.0.1:7200 --metrics-listen 127.0.0.1:0 --ready-file /s/scheduler-2.ready.json \
             --peers 1=127.0.0.1:7100,2=127.0.0.1:7200,3=127.0.0.1:7300"
        );
        assert_eq!(
            p.node_args(2, "http://127.0.0.1:7000").join(" "),
            "--server http://127.0.0.1:7000 --name dev-node-2 --gpus 4xH100-80GB --gpus 2xA100-40GB --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --work-dir /s/node-2 --artifact-dir /s/artifacts --ready-file /s/node-2.ready.json"
        );
        assert_eq!(
            p.gateway_args("http://127.0.0.1:7000").join(" "),
            "--server http://127.0.0.1:7000 --listen 127.0.0.1 --port 0 --cold-start-timeout-ms 60000 --ready-file /s/gateway.ready.json"
        );
    }

    #[test]
    fn defaults_from_env() {
        let env = EnvVars {
            home: Some("/home/u".into()),
            ..Default::default()
        };
        let flags = DevFlags {
            state_dir: None,
            gpus: vec![],
            nodes: 1,
            scheduler_port: 7000,
            example: false,
            replicas: 1,
            restart_delay: "2s".parse().unwrap(),
            gateway_port: 0,
            cold_start_timeout: "60s".parse().unwrap(),
        };
        let p = Plan::from_flags(flags, &env).unwrap();
        assert_eq!(p.state_dir, Path::new("/home/u/.local/share/gpuctl/dev"));
        assert_eq!(p.gpus, [DEFAULT_GPUS]);
        assert!(p.scheduler_args(1).contains(&"127.0.0.1:7000".to_string()));
        assert!(!p.scheduler_args(1).contains(&"--peers".to_string()));
        assert_eq!(p.replicas, 1);
        assert_eq!(p.config_dir.unwrap(), Path::new("/home/u/.config/gpuctl"));
    }

    #[test]
    fn binaries_are_found_next_to_the_exe_or_on_path() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let deps = dir.path().join("deps");
        std::fs::create_dir(&deps).unwrap();
        let bin = dir.path().join("gpu-node");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A test binary in target/debug/deps finds target/debug/gpu-node.
        let exe = deps.join("gpuctl-1234");
        assert_eq!(find_binary("gpu-node", Some(&exe), None).unwrap(), bin);
        let other = tempfile::tempdir().unwrap();
        let exe = other.path().join("gpuctl");
        let path = std::env::join_paths([other.path(), dir.path()]).unwrap();
        assert_eq!(
            find_binary("gpu-node", Some(&exe), Some(&path)).unwrap(),
            bin
        );
        let e = find_binary("gpu-scheduler", Some(&exe), Some(&path)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot find gpu-scheduler next to {} or on PATH; build it with \"cargo build --bins\"",
                other.path().display()
            )
        );
    }

    #[test]
    fn stale_ready_files_go_and_context_is_removed_only_if_ours() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("scheduler-1.ready.json"), "{}").unwrap();
        std::fs::write(dir.path().join("node-1.ready.json"), "{}").unwrap();
        std::fs::write(dir.path().join("cluster.json"), "{}").unwrap();
        remove_stale_ready_files(dir.path()).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["cluster.json"]);

        let ours = Context {
            server: "http://127.0.0.1:1".into(),
            state_dir: Some(dir.path().into()),
            gateway: None,
        };
        let theirs = Context {
            server: "http://127.0.0.1:2".into(),
            ..ours.clone()
        };
        config::write_context(dir.path(), &theirs).unwrap();
        remove_context_if_ours(dir.path(), &ours);
        assert!(dir.path().join("context.json").exists());
        config::write_context(dir.path(), &ours).unwrap();
        remove_context_if_ours(dir.path(), &ours);
        assert!(!dir.path().join("context.json").exists());
    }

    #[test]
    fn example_job_is_valid() {
        let j = example_job().unwrap();
        assert_eq!(j.metadata.name, EXAMPLE_JOB);
        assert_eq!(j.task_count(), 2);
    }

    #[test]
    fn log_tail_shows_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let t = log_tail(&p, 3);
        assert_eq!(t, "    line 28\n    line 29\n    line 30");
    }

    #[tokio::test]
    async fn supervisor_reports_an_early_exit_and_stops_children() {
        let dir = tempfile::tempdir().unwrap();
        let mut sup = Supervisor::new();
        let sh = Path::new("/bin/sh");
        let dies = sup
            .spawn(
                "dies",
                sh,
                &["-c".into(), "echo boom; exit 3".into()],
                dir.path().join("d.log"),
            )
            .unwrap();
        let e = sup
            .wait_ready(dies, &dir.path().join("never.json"))
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("dies") && msg.contains("boom") && msg.contains('3'),
            "{msg}"
        );

        let mut sup = Supervisor::new();
        sup.spawn(
            "sleeper",
            sh,
            &["-c".into(), "exec sleep 30".into()],
            dir.path().join("s.log"),
        )
        .unwrap();
        let started = std::time::Instant::now();
        sup.shutdown().await;
        assert!(sup.children[0].exit_status().is_some());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn replica_counts() {
        for n in [1, 3, 5] {
            assert_eq!(validate_replicas(n).unwrap(), n);
        }
        for n in [0, 2, 4, 6, 7] {
            let e = validate_replicas(n).unwrap_err();
            assert_eq!(e.exit_code(), crate::EXIT_USAGE);
            assert!(e.to_string().contains("1, 3 or 5"), "{e}");
        }
        let env = EnvVars::default();
        let flags = DevFlags {
            state_dir: Some("/s".into()),
            gpus: vec![],
            nodes: 1,
            scheduler_port: 0,
            example: false,
            replicas: 2,
            restart_delay: "2s".parse().unwrap(),
            gateway_port: 0,
            cold_start_timeout: "60s".parse().unwrap(),
        };
        assert!(Plan::from_flags(flags, &env).is_err());
    }

    #[test]
    fn fresh_ports_are_distinct_and_kept_for_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(saved_replica_plan(dir.path()).unwrap(), None);
        let p = plan_ports(3, 0, None, dir.path()).unwrap();
        assert_eq!(p.replicas, 3);
        assert_eq!(
            p.schedulers.iter().map(|s| s.id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let mut ports = p.ports();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|&p| p != 0));
        config::write_atomic(
            &dir.path().join(REPLICAS_FILE),
            serde_json::to_string(&p).unwrap().as_bytes(),
        )
        .unwrap();
        let saved = saved_replica_plan(dir.path()).unwrap().unwrap();
        assert_eq!(saved, p);
        // The next run reuses them, with or without the matching flag.
        assert_eq!(plan_ports(3, 0, Some(&saved), dir.path()).unwrap(), p);
        assert_eq!(
            plan_ports(3, p.ports()[0], Some(&saved), dir.path()).unwrap(),
            p
        );
        let e = plan_ports(3, 1, Some(&saved), dir.path()).unwrap_err();
        assert!(e.to_string().contains("leave out --scheduler-port"), "{e}");
        // A different count is refused, saying how to get one.
        for n in [1, 5] {
            let e = plan_ports(n, 0, Some(&saved), dir.path()).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("3-replica")
                    && msg.contains("--replicas 3")
                    && msg.contains("new --state-dir"),
                "{msg}"
            );
        }
        // A saved port that is now taken is a clear error.
        let _busy = std::net::TcpListener::bind(("127.0.0.1", p.ports()[1])).unwrap();
        let e = plan_ports(3, 0, Some(&saved), dir.path()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("port {} of scheduler replica 2", p.ports()[1]))
                && msg.contains(REPLICAS_FILE),
            "{msg}"
        );
    }

    #[test]
    fn ports_from_the_flag_are_consecutive() {
        let dir = tempfile::tempdir().unwrap();
        // Find 5 free consecutive ports near a kernel-chosen one.
        let base = (0..50)
            .find_map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
                let b = l.local_addr().ok()?.port();
                drop(l);
                (b < 65000 && (0..5).all(|i| port_free(b + i).is_ok())).then_some(b)
            })
            .unwrap();
        let p = plan_ports(5, base, None, dir.path()).unwrap();
        assert_eq!(p.ports(), (base..base + 5).collect::<Vec<_>>());
        let e = plan_ports(3, 65535, None, dir.path()).unwrap_err();
        assert!(e.to_string().contains("no room"), "{e}");
        // One replica: the flag, as before, and no file needed.
        let p = plan_ports(1, 7000, None, dir.path()).unwrap();
        assert_eq!(p.ports(), [7000]);
    }

    #[test]
    fn an_old_single_replica_state_dir_counts_as_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("scheduler-1")).unwrap();
        assert_eq!(
            saved_replica_plan(dir.path()).unwrap(),
            None,
            "empty: unused"
        );
        std::fs::write(dir.path().join("scheduler-1/CURRENT"), "x").unwrap();
        let saved = saved_replica_plan(dir.path()).unwrap().unwrap();
        assert_eq!(saved.replicas, 1);
        assert!(plan_ports(1, 0, Some(&saved), dir.path()).is_ok());
        assert!(plan_ports(3, 0, Some(&saved), dir.path()).is_err());
        std::fs::write(dir.path().join(REPLICAS_FILE), "{").unwrap();
        assert!(saved_replica_plan(dir.path())
            .unwrap_err()
            .to_string()
            .contains(REPLICAS_FILE));
    }

    #[test]
    fn delays_read_well() {
        assert_eq!(format_delay(Duration::from_millis(500)), "500ms");
        assert_eq!(format_delay(Duration::from_secs(2)), "2s");
        assert_eq!(format_delay(Duration::from_millis(1500)), "1.5s");
    }

    #[tokio::test]
    async fn a_child_can_be_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut sup = Supervisor::new();
        let idx = sup
            .spawn(
                "once",
                Path::new("/bin/sh"),
                &["-c".into(), "echo run; exit 0".into()],
                dir.path().join("o.log"),
            )
            .unwrap();
        assert_eq!(sup.exits.recv().await, Some(idx));
        let first = sup.children[idx].pid;
        let pid = sup.respawn(idx).unwrap();
        assert_ne!(pid, first);
        assert_eq!(sup.exits.recv().await, Some(idx));
        assert!(sup.children[idx].exit_status().is_some());
        let log = std::fs::read_to_string(dir.path().join("o.log")).unwrap();
        assert_eq!(log.matches("run\n").count(), 2, "{log}");
    }
}
