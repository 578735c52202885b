//! `gpuctl dev`: a whole cluster on one machine, as child processes.
//!
//! ```text
//! gpuctl dev ─spawn─► gpu-scheduler --ready-file DIR/scheduler-1.ready.json
//!            ─spawn─► gpu-node × N  --ready-file DIR/node-i.ready.json
//!            ─waits for the ready files, then for every node to be Ready
//!            ─writes DIR/cluster.json and the CLI context file
//!            ─supervises: Ctrl-C/SIGTERM stops all; a child dying stops all
//! ```
//!
//! Each child runs in its own process group so that Ctrl-C in the terminal
//! reaches only us, and we stop the children in order: SIGTERM, up to 10 s,
//! then SIGKILL.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gpuctl_common::api::{Job, Manifest, NodePhase};
use gpuctl_proto::v1::{ApplyRequest, GetRequest};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
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

/// Everything `gpuctl dev` needs to know, resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    pub state_dir: PathBuf,
    pub gpus: Vec<String>,
    pub nodes: u32,
    pub scheduler_port: u16,
    pub example: bool,
    pub config_dir: Option<PathBuf>,
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
        Ok(Plan {
            state_dir,
            gpus,
            nodes: flags.nodes,
            scheduler_port: flags.scheduler_port,
            example: flags.example,
            config_dir: env.config_dir(),
        })
    }

    pub fn scheduler_dir(&self) -> PathBuf {
        self.state_dir.join("scheduler-1")
    }
    pub fn scheduler_ready(&self) -> PathBuf {
        self.state_dir.join("scheduler-1.ready.json")
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

    /// `gpu-scheduler`'s arguments.
    pub fn scheduler_args(&self) -> Vec<String> {
        vec![
            "--id".into(),
            "1".into(),
            "--data-dir".into(),
            self.scheduler_dir().display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.scheduler_port),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--ready-file".into(),
            self.scheduler_ready().display().to_string(),
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
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
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
        let idx = self.children.len();
        let exits_tx = self.exits_tx.clone();
        tokio::spawn(async move {
            let how = match child.wait().await {
                Ok(st) => st.to_string(),
                Err(e) => format!("unknown exit ({e})"),
            };
            let _ = tx.send(Some(how));
            let _ = exits_tx.send(idx);
        });
        self.children.push(Child {
            label: label.to_string(),
            pid,
            log,
            exited: rx,
        });
        Ok(idx)
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
    server_url: String,
    scheduler: Value,
    nodes: Vec<Value>,
}

fn field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("?")
}

/// Run `gpuctl dev` until Ctrl-C (exit 0) or a child dies (exit 1).
pub async fn run(flags: DevFlags, env: &EnvVars) -> Result<u8> {
    let mut plan = Plan::from_flags(flags, env)?;
    for d in [
        plan.state_dir.clone(),
        plan.logs_dir(),
        plan.scheduler_dir(),
    ]
    .into_iter()
    .chain((1..=plan.nodes).map(|i| plan.node_dir(i)))
    {
        std::fs::create_dir_all(&d)
            .map_err(|e| Error::io(format!("cannot create {}", d.display()), e))?;
    }
    plan.state_dir = std::fs::canonicalize(&plan.state_dir).unwrap_or(plan.state_dir);
    let exe = std::env::current_exe().ok();
    let path_env = std::env::var_os("PATH");
    let scheduler_bin = find_binary("gpu-scheduler", exe.as_deref(), path_env.as_deref())?;
    let node_bin = find_binary("gpu-node", exe.as_deref(), path_env.as_deref())?;
    remove_stale_ready_files(&plan.state_dir)?;

    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("cannot handle SIGINT", e))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| Error::io("cannot handle SIGTERM", e))?;

    let mut sup = Supervisor::new();
    out(&format!(
        "gpuctl dev: starting 1 scheduler and {} node(s) in {}\n",
        plan.nodes,
        plan.state_dir.display()
    ))?;
    let started = tokio::select! {
        r = start(&mut sup, &plan, &scheduler_bin, &node_bin) => r,
        _ = sigint.recv() => Err(Error::Other("interrupted".into())),
        _ = sigterm.recv() => Err(Error::Other("interrupted".into())),
    };
    let started = match started {
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
        server: started.server_url.clone(),
        state_dir: Some(plan.state_dir.clone()),
    };
    let finish = async {
        let cluster = json!({
            "schedulers": [started.scheduler],
            "nodes": started.nodes,
            "stateDir": plan.state_dir,
        });
        config::write_atomic(
            &plan.state_dir.join("cluster.json"),
            serde_json::to_string_pretty(&cluster)
                .expect("json")
                .as_bytes(),
        )?;
        let ctx_path = match &plan.config_dir {
            Some(d) => Some(config::write_context(d, &context)?),
            None => None,
        };
        out(&summary(&plan, &started, ctx_path.as_deref()))?;
        if plan.example {
            submit_example(&started.server_url).await?;
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
        None => tokio::select! {
            _ = sigint.recv() => 0,
            _ = sigterm.recv() => 0,
            Some(idx) = sup.exits.recv() => {
                let c = &sup.children[idx];
                eprintln!(
                    "gpuctl dev: {} (pid {}) exited unexpectedly ({}); stopping the cluster. The end of {}:\n{}",
                    c.label,
                    c.pid,
                    c.exit_status().unwrap_or_default(),
                    c.log.display(),
                    log_tail(&c.log, LOG_TAIL_LINES)
                );
                EXIT_FAILURE
            }
        },
    };
    out("gpuctl dev: stopping...\n").ok();
    sup.shutdown().await;
    if let Some(d) = &plan.config_dir {
        remove_context_if_ours(d, &context);
    }
    out("gpuctl dev: stopped\n").ok();
    Ok(code)
}

async fn start(
    sup: &mut Supervisor,
    plan: &Plan,
    scheduler_bin: &Path,
    node_bin: &Path,
) -> Result<Started> {
    let logs = plan.logs_dir();
    let idx = sup.spawn(
        "gpu-scheduler 1",
        scheduler_bin,
        &plan.scheduler_args(),
        logs.join("scheduler-1.log"),
    )?;
    let scheduler = sup.wait_ready(idx, &plan.scheduler_ready()).await?;
    let grpc = field(&scheduler, "grpc");
    let server_url = config::normalize_url(grpc).map_err(|_| {
        Error::Other(format!(
            "{} has no usable \"grpc\" address: {scheduler}",
            plan.scheduler_ready().display()
        ))
    })?;

    let mut idxs = Vec::new();
    for i in 1..=plan.nodes {
        let idx = sup.spawn(
            &Plan::node_name(i),
            node_bin,
            &plan.node_args(i, &server_url),
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
    let mut c = client::connect(std::slice::from_ref(&server_url), client::CONNECT_TIMEOUT).await?;
    let mut missing = want.clone();
    loop {
        sup.check_alive()?;
        if let Ok(resp) = c
            .get(GetRequest {
                kind: "nodes".into(),
                name: String::new(),
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
    Ok(Started {
        server_url,
        scheduler,
        nodes,
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
    o.push_str(&format!(
        "  scheduler 1      gRPC {}   metrics {}/metrics   pid {}\n",
        s.server_url,
        url(field(&s.scheduler, "metrics")),
        s.scheduler.get("pid").map_or("?".into(), |p| p.to_string())
    ));
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
            s.server_url
        )),
    }
    o.push_str(
        "\ntry:\n  gpuctl get nodes\n  gpuctl submit --gpus 1 -- sh -c 'echo hello from rank $RANK on GPUs $CUDA_VISIBLE_DEVICES'\n  gpuctl get jobs\n",
    );
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

async fn submit_example(server_url: &str) -> Result<()> {
    let job = example_job()?;
    let urls = [server_url.to_string()];
    let mut c = client::connect(&urls, client::CONNECT_TIMEOUT).await?;
    let req = ApplyRequest {
        object_json: serde_json::to_string(&Manifest::Job(job)).expect("json"),
        source: "<gpuctl dev --example>".into(),
    };
    match c.apply(req).await {
        Ok(_) => out(&format!("\njob/{EXAMPLE_JOB} created\n"))?,
        Err(s) if s.code() == tonic::Code::AlreadyExists => out(&format!(
            "\njob/{EXAMPLE_JOB} already exists; not submitting it again\n"
        ))?,
        Err(s) => return Err(client::status_error(s, None, &urls)),
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
        }
    }

    #[test]
    fn child_command_lines_follow_the_contract() {
        let p = plan(Path::new("/s"));
        assert_eq!(
            p.scheduler_args().join(" "),
            "--id 1 --data-dir /s/scheduler-1 --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --ready-file /s/scheduler-1.ready.json"
        );
        assert_eq!(
            p.node_args(2, "http://127.0.0.1:7000").join(" "),
            "--server http://127.0.0.1:7000 --name dev-node-2 --gpus 4xH100-80GB --gpus 2xA100-40GB --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --work-dir /s/node-2 --ready-file /s/node-2.ready.json"
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
        };
        let p = Plan::from_flags(flags, &env).unwrap();
        assert_eq!(p.state_dir, Path::new("/home/u/.local/share/gpuctl/dev"));
        assert_eq!(p.gpus, [DEFAULT_GPUS]);
        assert!(p.scheduler_args().contains(&"127.0.0.1:7000".to_string()));
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
}
