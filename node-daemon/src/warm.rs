//! A task's process made ahead of time: a warm supervisor
//! ([`crate::supervisor::pool`]) forks and execs `gpu-node task-exec`
//! before any task is known. That process joins a cgroup of its own (v1:
//! `.pool.<pid>.<n>`, renamed to the task's when the task comes, see
//! [`crate::isolation::cgroup::TaskCgroup::take_over`]), says `ready`, and
//! waits on its standard input for an [`ExecSpec`]; then it sets up what a
//! forked child would (its own `/tmp`, the task's user, output files) and
//! execs the task's command. The task starts without a fork and without
//! being moved between cgroups, the two slow steps of a start.
//!
//! ```text
//!  supervisor ──spawn `gpu-node task-exec --join <cgroup.procs>...`──► stub (own process group)
//!      ◄── "ready\n" on its stdout ─────────────────────────────────── joined its cgroup
//!  ... task arrives: cgroup renamed, limits written ...
//!      ── ExecSpec as JSON on its stdin, closed ───────────────────────► exec(task)
//!      ◄── EOF on its stdout (close-on-exec copy): started, or one line: why not
//! ```

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use crate::isolation::{self, HookSpec, Limits, TaskCgroup};

/// What the waiting process execs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecSpec {
    pub program: String,
    pub args: Vec<String>,
    /// Set on top of the environment it inherited (the supervisor's).
    pub env: BTreeMap<String, String>,
    /// Empty: the supervisor's.
    pub working_dir: String,
    /// Opened for appending (made, and given to the task's user, before).
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub hook: HookSpec,
}

/// A waiting process, as its supervisor holds it.
#[derive(Debug)]
pub struct Stub {
    child: Option<tokio::process::Child>,
    to: Option<File>,
    from: Option<BufReader<File>>,
    /// The cgroup it waits in (`None`: it joins the task's as it starts).
    pub pool: Option<TaskCgroup>,
}

/// A pipe end handed back by tokio, blocking again.
fn blocking(fd: OwnedFd) -> Result<File, String> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL).map_err(|e| format!("fcntl: {e}"))?;
    let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags)).map_err(|e| format!("fcntl: {e}"))?;
    Ok(File::from(fd))
}

impl Stub {
    /// Start `exe task-exec` in `pool` (made here, with no limits) and
    /// wait until it sits there. Blocking.
    pub fn spawn(exe: &Path, pool: Option<TaskCgroup>) -> Result<Stub, String> {
        if let Some(cg) = &pool {
            cg.create(&Limits::default())?;
        }
        let mut stub = Stub {
            child: None,
            to: None,
            from: None,
            pool,
        };
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("task-exec");
        for p in stub.pool.iter().flat_map(TaskCgroup::procs_files) {
            cmd.arg("--join").arg(p);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {} task-exec: {e}", exe.display()))?;
        let to = child.stdin.take().map(|s| s.into_owned_fd());
        let from = child.stdout.take().map(|s| s.into_owned_fd());
        stub.child = Some(child);
        let (Some(Ok(to)), Some(Ok(from))) = (to, from) else {
            return Err("task-exec has no pipes".into());
        };
        stub.to = Some(blocking(to)?);
        let mut from = BufReader::new(blocking(from)?);
        let mut line = String::new();
        from.read_line(&mut line)
            .map_err(|e| format!("reading from task-exec: {e}"))?;
        if line != "ready\n" {
            return Err(format!("task-exec did not get ready (said {line:?})"));
        }
        stub.from = Some(from);
        Ok(stub)
    }

    /// Hand it `spec`: the task's process once it has exec'd (its pid is
    /// the waiting process's), or why it could not.
    pub fn exec(mut self, spec: &ExecSpec) -> Result<tokio::process::Child, String> {
        let bytes = serde_json::to_vec(spec).map_err(|e| format!("encoding the task: {e}"))?;
        let (Some(mut to), Some(mut from)) = (self.to.take(), self.from.take()) else {
            return Err("the waiting process has no pipes".into());
        };
        to.write_all(&bytes)
            .map_err(|e| format!("handing the task over: {e}"))?;
        drop(to);
        let mut why = String::new();
        from.read_to_string(&mut why)
            .map_err(|e| format!("waiting for the task's exec: {e}"))?;
        if why.is_empty() {
            self.child
                .take()
                .ok_or_else(|| "the waiting process is gone".into())
        } else {
            Err(why.trim_end().to_string())
        }
    }
}

impl Drop for Stub {
    /// Not used (or failed): the waiting process goes, and its cgroup
    /// (a renamed one is not there any more). Blocking, bounded.
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if let Some(cg) = &self.pool {
            cg.remove();
        }
    }
}

/// `gpu-node task-exec`: join `join` (each a `cgroup.procs`), say `ready`,
/// read an [`ExecSpec`] to the end of standard input and exec it. Nothing
/// on standard input: exit quietly (the supervisor went unused).
pub fn stub_main(join: &[PathBuf]) -> ExitCode {
    for p in join {
        if let Err(e) = std::fs::write(p, "0") {
            eprintln!("gpu-node task-exec: joining {}: {e}", p.display());
            return ExitCode::FAILURE;
        }
    }
    // Closed by a successful exec: the supervisor reads EOF.
    let report = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from);
    let Ok(mut report) = report else {
        return ExitCode::FAILURE;
    };
    if report.write_all(b"ready\n").is_err() {
        return ExitCode::FAILURE;
    }
    let mut buf = Vec::new();
    if std::io::stdin().lock().read_to_end(&mut buf).is_err() || buf.is_empty() {
        return ExitCode::SUCCESS;
    }
    let why = match serde_json::from_slice::<ExecSpec>(&buf) {
        Ok(spec) => exec(&spec),
        Err(e) => format!("the task handed over is not valid: {e}"),
    };
    let _ = report.write_all(why.as_bytes());
    ExitCode::from(127)
}

/// Exec `spec`; returns only why it could not.
fn exec(spec: &ExecSpec) -> String {
    let open = |p: &Path| {
        OpenOptions::new()
            .append(true)
            .open(p)
            .map_err(|e| format!("opening {}: {e}", p.display()))
    };
    let files = open(&spec.stdout).and_then(|o| Ok((o, open(&spec.stderr)?)));
    let (out, err) = match files {
        Ok(f) => f,
        Err(e) => return e,
    };
    let hook = match spec.hook.open() {
        Ok(h) => h,
        Err(e) => return e,
    };
    let mut cmd = std::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if !spec.working_dir.is_empty() {
        cmd.current_dir(&spec.working_dir);
    }
    isolation::install_std(&mut cmd, hook);
    cmd.exec().to_string()
}
