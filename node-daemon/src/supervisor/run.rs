//! The supervisor process (`gpu-node supervise`): one per task. It leaves
//! the daemon's session, reads the task's [`OwnedStartSpec`] from its
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
use super::record::{OwnedStartSpec, ProcId, Ready, State, TaskDir};
use crate::runtime::{self, Exit};

/// The longest SIGTERM → SIGKILL grace when fencing: the task must be gone
/// before the scheduler declares the node lost.
pub const FENCE_GRACE: Duration = Duration::from_secs(1);

/// `gpu-node supervise`'s flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "gpu-node supervise")]
pub struct SuperviseArgs {
    /// The task's folder (meta.json in, state.json and exit.json out).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The daemon's lease file.
    #[arg(long, value_name = "FILE")]
    pub lease: PathBuf,
    /// Stop the task when the lease is older than this; 0: never.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub fence_ms: u64,
    /// SIGTERM → SIGKILL delay when stopping the task.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub kill_grace_ms: u64,
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
fn read_spec() -> Result<OwnedStartSpec, String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading the task from standard input: {e}"))?;
    serde_json::from_slice(&buf)
        .map_err(|e| format!("the task on standard input is not valid: {e}"))
}

async fn supervise(args: SuperviseArgs) -> ExitCode {
    let dir = TaskDir {
        dir: args.dir.clone(),
    };
    let started_ms = now_ms();
    // Before anything else, so that a stop that comes early is not lost.
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => return not_started(&dir, 127, format!("cannot watch SIGTERM: {e}")),
    };
    let Some(me) = ProcId::of(std::process::id()) else {
        return not_started(&dir, 127, "cannot read this process's start time".into());
    };
    let spec = match read_spec() {
        Ok(s) => s,
        Err(message) => return not_started(&dir, 127, message),
    };
    let process = match runtime::start(&spec.borrow()) {
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
