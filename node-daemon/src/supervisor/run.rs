//! The supervisor process (`gpu-node supervise`): one per task. It leaves
//! the daemon's session, reads the task's [`super::record::OwnedStartSpec`] from its
//! standard input, starts the task with [`runtime::start`], says so on its
//! standard output (one [`Ready`] line), then waits for the task with
//! [`runtime::Process::wait`] and records the exit in its folder. On SIGTERM
//! it stops the task's process group (SIGTERM, SIGKILL after the grace);
//! when the lease is older than the fence timeout it does the same by itself.
//! A task in an image is stopped by `podman stop` as well
//! ([`crate::container::stop`]).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::lease;
use super::record::{ProcId, Ready, State, TaskDir, WarmStart, WARM_READY};
use crate::runtime::{self, Exit};

/// The longest SIGTERM → SIGKILL grace when fencing: the task must be gone
/// before the scheduler declares the node lost.
pub const FENCE_GRACE: Duration = Duration::from_secs(1);

/// `gpu-node supervise`'s flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "gpu-node supervise")]
pub struct SuperviseArgs {
    /// The task's folder (meta.json in, state.json and exit.json out).
    /// Required unless `--warm`.
    #[arg(long, value_name = "DIR", required_unless_present = "warm")]
    pub dir: Option<PathBuf>,
    /// The daemon's lease file.
    #[arg(long, value_name = "FILE")]
    pub lease: PathBuf,
    /// Stop the task when the lease is older than this; 0: never.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub fence_ms: u64,
    /// SIGTERM → SIGKILL delay when stopping the task.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub kill_grace_ms: u64,
    /// Start warm: make the task's process first (`gpu-node task-exec`,
    /// see [`crate::warm`]), say `{"warm":"ready"}` on standard output,
    /// then read the task as a [`WarmStart`] (its folder and its spec).
    #[arg(long)]
    pub warm: bool,
    /// With `--warm`: the cgroup (JSON) the task's process waits in.
    #[arg(long, value_name = "JSON", requires = "warm")]
    pub pool_cgroup: Option<String>,
}

/// Run a supervisor to the end of its task.
pub fn main(args: SuperviseArgs) -> ExitCode {
    // Its own session: the daemon's death, or a signal to its group, does
    // not reach the task through the supervisor.
    let _ = nix::unistd::setsid();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gpu-node supervise: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(supervise(args))
}

fn now_ms() -> u64 {
    gpuctl_common::now_ms()
}

/// Tell the daemon how the start went; it may be gone, which is fine.
fn say(ready: &Ready) {
    let mut line = serde_json::to_string(ready).unwrap_or_default();
    line.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes()).and_then(|_| out.flush());
}

/// Record that the task never started, and say so.
fn not_started(dir: &TaskDir, exit_code: i32, message: String) -> ExitCode {
    eprintln!("gpu-node supervise: {message}");
    let exit = Exit {
        code: exit_code,
        message: message.clone(),
        usage: None,
    };
    if let Err(e) = dir.write_exit(&exit) {
        eprintln!(
            "gpu-node supervise: cannot record the exit in {:?}: {e}",
            dir.exit()
        );
    }
    say(&Ready::Failed { exit_code, message });
    ExitCode::SUCCESS
}

/// The spec, up to the end of standard input: the daemon closes it once
/// written (or by dying), and kills a supervisor that does not answer in
/// time, so this read ends.
fn read_spec<T: serde::de::DeserializeOwned>() -> Result<Option<T>, String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading the task from standard input: {e}"))?;
    if buf.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| format!("the task on standard input is not valid: {e}"))
}

/// A warm supervisor until its task comes: its task's process made, then
/// the task read. `None`: the daemon went (or gave it no task), and the
/// waiting process and its cgroup are gone.
fn warm_start(args: &SuperviseArgs) -> Option<(WarmStart, crate::warm::Stub)> {
    let pool = match args.pool_cgroup.as_deref().map(serde_json::from_str) {
        None => None,
        Some(Ok(cg)) => Some(cg),
        Some(Err(e)) => {
            eprintln!("gpu-node supervise: --pool-cgroup is not valid: {e}");
            return None;
        }
    };
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let stub = match crate::warm::Stub::spawn(&exe, pool) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gpu-node supervise: cannot make the task's process ahead: {e}");
            return None;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        let line = format!("{WARM_READY}\n");
        out.write_all(line.as_bytes())
            .and_then(|_| out.flush())
            .ok()?;
    }
    let start: WarmStart = match read_spec() {
        Ok(Some(s)) => s,
        Ok(None) => return None,
        Err(e) => {
            eprintln!("gpu-node supervise: {e}");
            return None;
        }
    };
    // From now on this supervisor's standard error is its task's.
    let dir = TaskDir {
        dir: start.dir.clone(),
    };
    if let Ok(log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.log())
    {
        let _ = nix::unistd::dup2_stderr(log);
    }
    Some((start, stub))
}

async fn supervise(args: SuperviseArgs) -> ExitCode {
    // Before anything else, so that a stop that comes early is not lost.
    let term = signal(SignalKind::terminate());
    let (dir, spec, stub) = if args.warm {
        match warm_start(&args) {
            Some((start, stub)) => (start.dir, Some(start.spec), Some(stub)),
            None => return ExitCode::SUCCESS,
        }
    } else {
        (args.dir.clone().unwrap_or_default(), None, None)
    };
    let dir = TaskDir { dir };
    let started_ms = now_ms();
    let mut term = match term {
        Ok(s) => s,
        Err(e) => return not_started(&dir, 127, format!("cannot watch SIGTERM: {e}")),
    };
    let Some(me) = ProcId::of(std::process::id()) else {
        return not_started(&dir, 127, "cannot read this process's start time".into());
    };
    let spec = match spec.map_or_else(read_spec, |s| Ok(Some(s))) {
        Ok(Some(s)) => s,
        Ok(None) => return not_started(&dir, 127, "no task on standard input".into()),
        Err(message) => return not_started(&dir, 127, message),
    };
    let process = match runtime::start_with(&spec.borrow(), stub) {
        Ok(p) => p,
        Err(e) => return not_started(&dir, e.exit_code, e.message),
    };
    let pid = process.pid;
    let container = process.container().cloned();
    let state = State {
        supervisor: me,
        task: ProcId::of(pid),
    };
    if let Err(e) = dir.write_state(&state) {
        eprintln!("gpu-node supervise: cannot write {:?}: {e}", dir.state());
    }
    say(&Ready::Started { pid });

    let (exited_tx, exited_rx) = watch::channel(false);
    let mut waiter = tokio::spawn(async move {
        let exit = process.wait().await;
        let _ = exited_tx.send(true);
        exit
    });
    let grace = Duration::from_millis(args.kill_grace_ms);
    let fence = Duration::from_millis(args.fence_ms);
    let stop = |grace: Duration| {
        // A container is stopped by podman: a SIGKILL to its client would
        // leave it running.
        if let Some(c) = &container {
            tokio::spawn(crate::container::stop(c.clone(), grace));
        }
        let mut rx = exited_rx.clone();
        tokio::spawn(runtime::stop_group(pid, grace, async move {
            let _ = rx.wait_for(|done| *done).await;
        }));
    };
    let mut tick = tokio::time::interval(lease::CHECK_EVERY);
    let (mut stopping, mut fenced) = (false, false);
    let mut exit = loop {
        tokio::select! {
            r = &mut waiter => break r.unwrap_or_else(|e| Exit {
                code: -1,
                message: format!("waiting for the task failed: {e}"),
                usage: None,
            }),
            _ = term.recv(), if !stopping => {
                stopping = true;
                stop(grace);
            }
            _ = tick.tick(), if !stopping && !fence.is_zero() => {
                if lease::expired(now_ms(), lease::read(&args.lease), started_ms, fence) {
                    stopping = true;
                    fenced = true;
                    let message = lease::fenced_message(fence);
                    eprintln!("gpu-node supervise: {message}");
                    runtime::note_in_log(&spec.log, &message);
                    stop(grace.min(FENCE_GRACE));
                }
            }
        }
    };
    if fenced {
        exit.message = lease::fenced_message(fence);
        // Stopped, not finished, even if it exited cleanly on SIGTERM.
        if exit.code == 0 {
            exit.code = 128 + 15;
        }
    }
    if let Err(e) = dir.write_exit(&exit) {
        eprintln!(
            "gpu-node supervise: cannot record the exit in {:?}: {e}",
            dir.exit()
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
