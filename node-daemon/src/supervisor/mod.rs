//! A supervisor per task (the conmon / slurmstepd pattern), so that a task
//! outlives its node daemon and a restarted daemon takes it back.
//!
//! ```text
//!  daemon ──fork+exec `gpu-node supervise`, spec as JSON on stdin──► supervisor (own session)
//!    ▲  ◄── one Ready line on stdout ────────────────────────────────   │ runtime::start
//!    │                                                                  ▼
//!    │  <work-dir>/supervisors/<job>.<task>.<attempt>/           task process group
//!    │     meta.json (daemon), state.json, exit.json (supervisor)       │ Process::wait
//!    └── reads exit.json when the supervisor ends (its child), or ◄─────┘
//!        polls it for a supervisor adopted after a restart
//!  daemon ──lease (last acknowledged call)──► every supervisor: too old → stop the task (fenced)
//! ```
//!
//! The daemon stops a task by sending its supervisor SIGTERM; the
//! supervisor stops the task's group (SIGTERM, SIGKILL after the grace) and
//! records how it ended. Nothing here decides what should run: that is the
//! reconciler's.

pub mod lease;
pub mod pool;
pub mod record;
pub mod run;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::runtime::{self, Exit, StartError, StartSpec};
use record::{Meta, OwnedStartSpec, ProcId, Ready, TaskDir};

/// How long a new supervisor may take to say whether its task started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an adopted supervisor's folder is looked at for its exit.
pub const POLL: Duration = Duration::from_millis(100);

/// `8s`, `1.5s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms > 1000 {
        format!("{}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

/// How the daemon starts supervisors.
#[derive(Debug, Clone)]
pub struct Supervisors {
    /// `<work-dir>/supervisors`: one folder per task.
    pub root: PathBuf,
    /// The `gpu-node` executable (`supervise` is its subcommand).
    pub exe: PathBuf,
    /// `<work-dir>/lease`.
    pub lease: PathBuf,
    /// Supervisors stop their task when the lease is older; zero: never.
    pub fence: Duration,
    /// SIGTERM → SIGKILL delay when stopping a task.
    pub kill_grace: Duration,
    /// Supervisors started ahead of time; `None`: each is started for
    /// its task.
    pub warm: Option<std::sync::Arc<pool::Pool>>,
}

/// A supervisor this daemon started (its child).
#[derive(Debug)]
pub struct Launched {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: Option<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// The spec to send on its standard input.
    spec: Vec<u8>,
    dir: TaskDir,
    pid: u32,
    /// How long it may take to say whether the task started: longer for
    /// a task whose image may have to be pulled first.
    ready_timeout: Duration,
    /// A warm supervisor's replacement, should it be gone before it read
    /// its task; `None`: a supervisor started for this task.
    cold: Option<Box<Cold>>,
}

/// How to start a supervisor for a task after all.
#[derive(Debug)]
struct Cold {
    supervisors: Supervisors,
    spec: Vec<u8>,
}

/// Why a supervisor gave no answer.
enum Silence {
    /// Its standard input was closed before the task was written to it:
    /// it cannot have started the task.
    Unread(std::io::Error),
    Lost(String),
}

/// A task found in its folder when the daemon starts.
#[derive(Debug)]
pub enum Found {
    /// Its supervisor still runs.
    Live {
        meta: Meta,
        dir: TaskDir,
        supervisor: ProcId,
        /// `None`: it had not started the task yet.
        task: Option<ProcId>,
    },
    /// Over: recorded by its supervisor, or its supervisor died.
    Ended {
        meta: Meta,
        dir: TaskDir,
        exit: Exit,
    },
    /// A folder without a readable `meta.json`: nothing to report it as.
    Unknown { dir: TaskDir, why: String },
}

impl Supervisors {
    /// Start a supervisor for the task `meta` describes, which will run
    /// `spec`. Returns at once (one fork and exec); [`Launched::ready`]
    /// then says whether the task started.
    pub fn launch(&self, spec: &StartSpec<'_>, meta: &Meta) -> Result<Launched, StartError> {
        let key = meta.key();
        let fail = |why: String| StartError::new(127, format!("cannot start the task: {why}"));
        let dir = TaskDir::new(&self.root, &key)
            .ok_or_else(|| fail(format!("job name {:?} cannot name a folder", key.job)))?;
        let _ = std::fs::remove_dir_all(&dir.dir);
        std::fs::create_dir_all(&dir.dir).map_err(|e| {
            fail(format!(
                "creating its supervisor's folder {:?}: {e}",
                dir.dir
            ))
        })?;
        dir.write_meta(meta)
            .map_err(|e| fail(format!("writing {:?}: {e}", dir.meta())))?;
        let ready_timeout = READY_TIMEOUT + spec_pull_timeout(spec.container);
        // A task in an image runs `podman run`, which makes its own
        // processes and cgroups: a warm one's waiting process is no use.
        let warm = self.warm.as_ref().filter(|_| spec.container.is_none());
        let owned = OwnedStartSpec::new(spec);
        let cold_spec = serde_json::to_vec(&owned)
            .map_err(|e| fail(format!("encoding it for its supervisor: {e}")))?;
        if let Some(m) = warm.and_then(pool::Pool::take) {
            let start = record::WarmStart {
                dir: dir.dir.clone(),
                spec: owned,
            };
            let spec = serde_json::to_vec(&start)
                .map_err(|e| fail(format!("encoding it for its supervisor: {e}")))?;
            return Ok(Launched {
                child: m.child,
                stdin: Some(m.stdin),
                stdout: Some(m.stdout),
                spec,
                dir,
                pid: m.pid,
                ready_timeout,
                cold: Some(Box::new(Cold {
                    supervisors: self.clone(),
                    spec: cold_spec,
                })),
            });
        }
        self.spawn_cold(dir, cold_spec, ready_timeout)
    }

    /// Fork and exec a supervisor for the task whose folder is `dir`; it
    /// reads `spec` on its standard input.
    fn spawn_cold(
        &self,
        dir: TaskDir,
        spec: Vec<u8>,
        ready_timeout: Duration,
    ) -> Result<Launched, StartError> {
        let fail = |why: String| StartError::new(127, format!("cannot start the task: {why}"));
        let log = std::fs::File::create(dir.log())
            .map_err(|e| fail(format!("creating {:?}: {e}", dir.log())))?;
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("supervise")
            .arg("--dir")
            .arg(&dir.dir)
            .arg("--lease")
            .arg(&self.lease)
            .arg("--fence-ms")
            .arg(self.fence.as_millis().to_string())
            .arg("--kill-grace-ms")
            .arg(self.kill_grace.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| {
            fail(format!(
                "starting its supervisor {:?}: {e}",
                self.exe.display()
            ))
        })?;
        let pid = child.id().unwrap_or(0);
        Ok(Launched {
            stdin: child.stdin.take(),
            stdout: child.stdout.take().map(tokio::io::BufReader::new),
            child,
            spec,
            dir,
            pid,
            ready_timeout,
            cold: None,
        })
    }

    /// Every task a previous run of the daemon left in its folder.
    pub fn scan(&self) -> Vec<Found> {
        record::scan(&self.root).into_iter().map(found).collect()
    }
}

/// The longest pull of a task's image before it starts (zero: no image).
fn spec_pull_timeout(c: Option<&crate::container::ContainerSpec>) -> Duration {
    c.map_or(Duration::ZERO, |c| {
        Duration::from_millis(c.podman.pull_timeout_ms)
    })
}

/// What a task folder says, and whether its supervisor lives.
fn found(dir: TaskDir) -> Found {
    let meta = match dir.read_meta() {
        Ok(m) => m,
        Err(e) => {
            return Found::Unknown {
                why: e.to_string(),
                dir,
            }
        }
    };
    let exit = match dir.read_exit() {
        Ok(Some(exit)) => exit,
        Ok(None) => match dir.read_state() {
            Ok(state) if state.supervisor.alive() => {
                return Found::Live {
                    meta,
                    dir,
                    supervisor: state.supervisor,
                    task: state.task,
                }
            }
            // Look again: it may have recorded the exit just before it ended.
            Ok(state) => match dir.read_exit() {
                Ok(Some(exit)) => exit,
                _ => supervisor_died(state.supervisor.pid, state.task, meta.container.as_ref()),
            },
            Err(_) => Exit {
                code: -1,
                message: "the task's supervisor died before it started the task".into(),
                usage: None,
            },
        },
        Err(e) => Exit {
            code: -1,
            message: format!("the task's exit record cannot be read: {e}"),
            usage: None,
        },
    };
    Found::Ended { meta, dir, exit }
}

/// The exit of a task whose supervisor died without recording one: its
/// group (if it still runs) is killed, and its container removed, since
/// nothing would stop them.
fn supervisor_died(
    supervisor: u32,
    task: Option<ProcId>,
    container: Option<&crate::container::ContainerSpec>,
) -> Exit {
    if let Some(t) = task.filter(ProcId::alive) {
        runtime::signal_group(t.pid, Signal::SIGKILL);
    }
    if let Some(c) = container.cloned() {
        // podman may take a while: not on the caller's thread.
        std::thread::spawn(move || {
            crate::container::remove(&c);
            if let Some(parent) = &c.cgroup_parent {
                let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
                crate::isolation::cgroup::remove_container_tree(parent, v2);
            }
        });
    }
    Exit {
        code: -1,
        message: format!(
            "the task's supervisor (pid {supervisor}) died without recording how the task ended"
        ),
        usage: None,
    }
}

/// Send `sig` to a supervisor (SIGTERM: stop your task).
pub fn signal(pid: u32, sig: Signal) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    if raw > 1 {
        let _ = kill(Pid::from_raw(raw), sig);
    }
}

impl Launched {
    /// The supervisor's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Send the spec and wait (bounded) for the supervisor's word: the
    /// task's pid, or why it could not start. A warm supervisor that was
    /// gone before it could read the task (it died after the pool last
    /// looked) is replaced by one started for the task; [`Launched::pid`]
    /// then names the new one.
    pub async fn ready(&mut self) -> Result<u32, StartError> {
        match self.talk().await {
            Err(Silence::Unread(e)) if self.cold.is_some() => {
                let Some(cold) = self.cold.take() else {
                    unreachable!("checked above")
                };
                tracing::warn!(
                    "warm supervisor {} was gone before it read its task ({e}); \
                     starting one for the task",
                    self.pid
                );
                signal(self.pid, Signal::SIGKILL);
                let _ = self.child.wait().await;
                let dir = TaskDir {
                    dir: self.dir.dir.clone(),
                };
                *self = cold
                    .supervisors
                    .spawn_cold(dir, cold.spec, self.ready_timeout)?;
                self.talk().await.map_err(|s| self.silence(s))?
            }
            r => r.map_err(|s| self.silence(s))?,
        }
    }

    /// Why the task did not start, for a supervisor that gave no answer.
    fn silence(&self, s: Silence) -> StartError {
        let why = match s {
            Silence::Unread(e) => format!("could not be reached: {e}"),
            Silence::Lost(why) => why,
        };
        StartError::new(
            127,
            format!(
                "cannot start the task: its supervisor {why} (see {:?})",
                self.dir.log()
            ),
        )
    }

    /// Write the spec, read the answer.
    async fn talk(&mut self) -> Result<Result<u32, StartError>, Silence> {
        let (Some(mut stdin), Some(mut stdout)) = (self.stdin.take(), self.stdout.take()) else {
            return Err(Silence::Lost("has no pipes".into()));
        };
        let spec = std::mem::take(&mut self.spec);
        let talk = async move {
            if let Err(e) = stdin.write_all(&spec).await {
                return Err(Silence::Unread(e));
            }
            drop(stdin);
            let mut line = String::new();
            stdout
                .read_line(&mut line)
                .await
                .map_err(|e| Silence::Lost(format!("could not be reached: {e}")))?;
            Ok(line)
        };
        let limit = self.ready_timeout;
        let line = match tokio::time::timeout(limit, talk).await {
            Err(_) => {
                signal(self.pid, Signal::SIGKILL);
                return Err(Silence::Lost(format!("did not answer within {limit:?}")));
            }
            Ok(Err(s)) => return Err(s),
            Ok(Ok(line)) if line.is_empty() => {
                return Err(Silence::Lost("exited before starting the task".into()))
            }
            Ok(Ok(line)) => line,
        };
        match serde_json::from_str::<Ready>(&line) {
            Ok(Ready::Started { pid }) => Ok(Ok(pid)),
            Ok(Ready::Failed { exit_code, message }) => {
                Ok(Err(StartError::new(exit_code, message)))
            }
            Err(e) => Err(Silence::Lost(format!("answered {line:?} ({e})"))),
        }
    }

    /// Wait for the supervisor to end; the task's exit as it recorded it.
    pub async fn wait(mut self) -> Exit {
        let status = self.child.wait().await;
        match self.dir.read_exit() {
            Ok(Some(exit)) => exit,
            Ok(None) => {
                let task = self.dir.read_state().ok().and_then(|s| s.task);
                let container = self.dir.read_meta().ok().and_then(|m| m.container);
                let mut exit = supervisor_died(self.pid, task, container.as_ref());
                if let Ok(st) = status {
                    exit.message = format!("{} ({st})", exit.message);
                }
                exit
            }
            Err(e) => Exit {
                code: -1,
                message: format!("the task's exit record cannot be read: {e}"),
                usage: None,
            },
        }
    }
}

/// Wait for an adopted supervisor (not this daemon's child) to record its
/// task's exit, looking every [`POLL`]; a supervisor that dies without one
/// makes the task fail with a message that says so.
pub async fn wait_adopted(dir: TaskDir, supervisor: ProcId, task: Option<ProcId>) -> Exit {
    loop {
        match dir.read_exit() {
            Ok(Some(exit)) => return exit,
            Ok(None) => {}
            Err(e) => {
                return Exit {
                    code: -1,
                    message: format!("the task's exit record cannot be read: {e}"),
                    usage: None,
                }
            }
        }
        if !supervisor.alive() {
            if let Ok(Some(exit)) = dir.read_exit() {
                return exit;
            }
            let task = dir.read_state().ok().and_then(|s| s.task).or(task);
            let container = dir.read_meta().ok().and_then(|m| m.container);
            return supervisor_died(supervisor.pid, task, container.as_ref());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Ask a task's supervisor to stop it (it sends SIGTERM to the task's
/// group, SIGKILL after the grace). Should the supervisor not be done a
/// little after the grace, the task's group and the supervisor are killed.
pub async fn stop(
    supervisor: u32,
    pid: Option<u32>,
    grace: Duration,
    mut exited: tokio::sync::watch::Receiver<bool>,
) {
    signal(supervisor, Signal::SIGTERM);
    let done = exited.wait_for(|done| *done);
    if tokio::time::timeout(grace + Duration::from_secs(2), done)
        .await
        .is_err()
    {
        tracing::warn!("supervisor {supervisor} did not stop its task in time: SIGKILL");
        if let Some(pid) = pid {
            runtime::signal_group(pid, Signal::SIGKILL);
        }
        signal(supervisor, Signal::SIGKILL);
    }
}

/// Remove the folders under `root` that are not in `keep` (those of tasks
/// no longer here).
pub fn remove_others(root: &Path, keep: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let p = e.path();
        if !keep.contains(&p) {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}
