//! Task processes: start one in its own process group with its output
//! appended to a log file, wait for it, stop its whole group.
//!
//! A task is `command[0]` run directly (no shell) with `command[1..]` as
//! arguments. It leads a new process group, so stopping the task reaches
//! everything it started (`torchrun` workers, `sh -c` children): SIGTERM to
//! the group, then SIGKILL after a grace period.
//!
//! A task with an owner runs as that owner's Unix identity
//! ([`crate::owner`]); its log file is then the owner's, mode 0600.
//!
//! With a [`TaskIsolation`] the process starts in its own cgroup (limits)
//! and with its own `/tmp` ([`crate::isolation`]), and [`Process::wait`]
//! names an OOM kill, reports the task's CPU time and memory, and removes
//! the cgroup.
//!
//! With a [`ContainerSpec`] the process is `podman run` of the task's image
//! in the foreground ([`crate::container`]): the same log, exit code, stop
//! and cgroup, with the container below the task's cgroup.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::container::{self, ContainerSpec};
use crate::isolation::{self, TaskIsolation, Usage};
use crate::owner::{self, RunAs};

/// Identifies one attempt of one task: what assignments, reports and log
/// files are keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey {
    pub job: String,
    pub task_index: u32,
    pub attempt: u32,
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/task-{}/attempt-{}",
            self.job, self.task_index, self.attempt
        )
    }
}

/// A job name that cannot be a folder name under the log directory.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("job name {0:?} cannot name a log folder (expected a DNS label such as \"train-1\")")]
pub struct BadJobName(pub String);

/// `<logs>/<job>/task-<index>-attempt-<attempt>.log`. Job names are DNS
/// labels; anything that could leave `logs` (`/`, `..`, NUL) is refused.
pub fn log_path(logs: &Path, key: &TaskKey) -> Result<PathBuf, BadJobName> {
    Ok(logs.join(job_dir_name(&key.job)?).join(format!(
        "task-{}-attempt-{}.log",
        key.task_index, key.attempt
    )))
}

/// The folder of a job's logs under the log directory.
pub fn job_dir_name(job: &str) -> Result<&str, BadJobName> {
    let ok = !job.is_empty()
        && job.len() <= 253
        && !job.starts_with('.')
        && job
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(job)
    } else {
        Err(BadJobName(job.to_string()))
    }
}

/// A task that could not be started: reported as `Failed` with this exit code
/// (127, as a shell reports a command it cannot run; 126 when the task may not
/// run here as its owner) and message.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct StartError {
    pub exit_code: i32,
    pub message: String,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct StartSpec<'a> {
    pub command: &'a [String],
    /// Set on top of the daemon's own environment, which the task inherits.
    pub env: &'a BTreeMap<String, String>,
    /// Empty: the daemon's working directory.
    pub working_dir: &'a str,
    /// Created with its folders if missing; output is appended.
    pub log: &'a Path,
    /// Standard output to this file instead of the log (a workflow script
    /// step, whose output is its result); standard error still goes to the log.
    pub stdout: Option<&'a Path>,
    /// Who the process runs as; `None`: the daemon's own user.
    pub run_as: Option<&'a RunAs>,
    /// Its cgroup and `/tmp`; `None`: neither.
    pub isolation: Option<&'a TaskIsolation>,
    /// Run in this image under podman; `None`: a process on the host.
    pub container: Option<&'a ContainerSpec>,
}

/// A started task process.
#[derive(Debug)]
pub struct Process {
    /// Also the id of the process group it leads.
    pub pid: u32,
    child: tokio::process::Child,
    /// Its cgroup, read and removed when it ends.
    isolation: isolation::Active,
    /// The container it runs (`podman run`), removed when it ends.
    container: Option<ContainerSpec>,
}

/// How a task process ended. Serialized: a task's supervisor records it in
/// its folder (`crate::supervisor`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exit {
    /// The exit code, or 128 + signal number when a signal killed it (the
    /// shell convention), -1 when unknown.
    pub code: i32,
    /// Empty on success; otherwise says what happened (`OOMKilled: ...`
    /// when its memory limit killed it).
    pub message: String,
    /// CPU time and memory of the task, from its cgroup; `None` without one.
    pub usage: Option<Usage>,
}

impl Exit {
    pub fn succeeded(&self) -> bool {
        self.code == 0
    }

    fn from_status(status: ExitStatus) -> Exit {
        if let Some(code) = status.code() {
            let message = if code == 0 {
                String::new()
            } else {
                format!("exited with code {code}")
            };
            return Exit {
                code,
                message,
                usage: None,
            };
        }
        if let Some(sig) = status.signal() {
            let name = Signal::try_from(sig)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {sig}"));
            return Exit {
                code: 128 + sig,
                message: format!("killed by {name} (signal {sig})"),
                usage: None,
            };
        }
        Exit {
            code: -1,
            message: format!("ended with unknown status {status}"),
            usage: None,
        }
    }
}

impl StartError {
    pub fn new(exit_code: i32, message: String) -> StartError {
        StartError { exit_code, message }
    }
}

fn start_error(command: &str, why: impl fmt::Display) -> StartError {
    StartError {
        exit_code: 127,
        message: format!("cannot start {command:?}: {why}"),
    }
}

/// Ports the daemon gives serving tasks as `$PORT`: by default below Linux's
/// ephemeral range (32768-60999), so that the kernel does not hand one to an
/// outgoing connection between the daemon's check and the task's bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            first: 20000,
            last: 32767,
        }
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("expected FIRST-LAST, e.g. 20000-32767, got {s:?}"))?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("{p:?} is not a port (1-65535)"))
        };
        let (first, last) = (port(a)?, port(b)?);
        if first > last {
            return Err(format!("{first} is after {last}"));
        }
        Ok(PortRange { first, last })
    }
}

/// A port of `range` free on every interface now, for a serving task's
/// `$PORT`: the first after `after` (wrapping around) that is not in
/// `avoid` (ports of this node's live tasks) and can be bound. Going round
/// the range instead of taking the lowest free port keeps a port that a
/// replica just gave up from going at once to another, which a gateway may
/// still know by the old replica's URL.
pub fn free_port(
    range: PortRange,
    after: u16,
    avoid: &std::collections::HashSet<u16>,
) -> std::io::Result<u16> {
    let n = u32::from(range.last - range.first) + 1;
    let start = if (range.first..=range.last).contains(&after) {
        u32::from(after - range.first) + 1
    } else {
        0
    };
    for k in 0..n {
        let port = range.first + ((start + k) % n) as u16;
        if avoid.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free port in {}-{}", range.first, range.last),
    ))
}

/// gpuctl's own programs (e.g. `gpu-model-server` for endpoint replicas) installed
/// next to the daemon's executable are preferred over `PATH`: a bare program name
/// with such a sibling is replaced by the sibling's path.
pub fn resolve_sibling_program(command: &[String]) -> Vec<String> {
    let mut out = command.to_vec();
    if let Some(first) = out.first_mut() {
        if first.starts_with("gpu-") && !first.contains('/') {
            let sibling = std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(|d| d.join(first.as_str())));
            if let Some(p) = sibling.filter(|p| p.is_file()) {
                *first = p.to_string_lossy().into_owned();
            }
        }
    }
    out
}

/// Start a task process. Returns at once: spawning is a fork and an exec, and
/// the caller waits with [`Process::wait`]. On failure the reason is also
/// appended to the log, so `gpuctl logs` shows it.
pub fn start(spec: &StartSpec<'_>) -> Result<Process, StartError> {
    start_with(spec, None)
}

/// [`start`], by handing the task to a process made ahead of time
/// (`waiting`, see [`crate::warm`]) instead of forking one. A task in a
/// container does not use it (the process is dropped: it goes).
pub fn start_with(
    spec: &StartSpec<'_>,
    waiting: Option<crate::warm::Stub>,
) -> Result<Process, StartError> {
    let Some((program, args)) = spec.command.split_first() else {
        return Err(StartError {
            exit_code: 127,
            message: "cannot start the task: its command is empty".into(),
        });
    };
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| start_error(program, format!("creating log folder {dir:?}: {e}")))?;
    }
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.log)
        .map_err(|e| start_error(program, format!("opening log {:?}: {e}", spec.log)))?;
    if let Some(r) = spec.run_as {
        owner::own_file(&log, r).map_err(|e| {
            start_error(
                program,
                format!("giving log {:?} to uid {}: {e}", spec.log, r.uid),
            )
        })?;
    }
    if let Some(stub) = waiting.filter(|_| spec.container.is_none()) {
        let result = spawn_waiting(program, args, spec, stub);
        if let Err(e) = &result {
            let _ = writeln!(log, "gpu-node: {e}");
            if let Some(tmp) = spec.isolation.and_then(|i| i.tmp.as_ref()) {
                tmp.remove();
            }
        }
        return result;
    }
    let prepared = spec
        .isolation
        .map(|iso| {
            isolation::prepare(iso, spec.run_as).map_err(|e| StartError {
                exit_code: 127,
                message: format!("cannot start {program:?}: confining the task: {e}"),
            })
        })
        .transpose();
    let result = prepared.and_then(|prepared| match spec.container {
        Some(c) => spawn_container(c, spec, &log, prepared),
        None => spawn(program, args, spec, &log, prepared),
    });
    if let Err(e) = &result {
        let _ = writeln!(log, "gpu-node: {e}");
        if let Some(tmp) = spec.isolation.and_then(|i| i.tmp.as_ref()) {
            tmp.remove();
        }
    }
    result
}

fn spawn(
    program: &str,
    args: &[String],
    spec: &StartSpec<'_>,
    log: &std::fs::File,
    prepared: Option<isolation::Prepared>,
) -> Result<Process, StartError> {
    let (hook, active) = match prepared {
        Some(p) if !p.hook.is_empty() => (Some(p.hook), p.active),
        Some(p) => (None, p.active),
        None => (None, isolation::Active::default()),
    };
    let spawned = command(program, args, spec, log, hook)
        .and_then(|mut cmd| cmd.spawn().map_err(|e| start_error(program, e)));
    match spawned {
        Ok(child) => Ok(Process {
            pid: child.id().unwrap_or(0),
            child,
            isolation: active,
            container: None,
        }),
        Err(e) => {
            active.discard();
            Err(e)
        }
    }
}

/// The task exec'd by `stub`, which waits in its pool cgroup (renamed to
/// the task's here) or joins the task's cgroup itself.
fn spawn_waiting(
    program: &str,
    args: &[String],
    spec: &StartSpec<'_>,
    stub: crate::warm::Stub,
) -> Result<Process, StartError> {
    let waiting = isolation::Waiting {
        pool: stub.pool.as_ref(),
    };
    let none = TaskIsolation::default();
    let (hook, active) =
        isolation::prepare_spec(spec.isolation.unwrap_or(&none), spec.run_as, Some(waiting))
            .map_err(|e| StartError {
                exit_code: 127,
                message: format!("cannot start {program:?}: confining the task: {e}"),
            })?;
    let files = (|| {
        if !spec.working_dir.is_empty() && !Path::new(spec.working_dir).is_dir() {
            return Err(start_error(
                program,
                format!("working directory {:?} does not exist", spec.working_dir),
            ));
        }
        if let Some(p) = spec.stdout {
            let f = std::fs::File::create(p)
                .map_err(|e| start_error(program, format!("output file {p:?}: {e}")))?;
            if let Some(r) = spec.run_as {
                owner::own_file(&f, r)
                    .map_err(|e| start_error(program, format!("output file {p:?}: {e}")))?;
            }
        }
        Ok(())
    })();
    if let Err(e) = files {
        active.discard();
        return Err(e);
    }
    let exec = crate::warm::ExecSpec {
        program: program.to_string(),
        args: args.to_vec(),
        env: spec.env.clone(),
        working_dir: spec.working_dir.to_string(),
        stdout: spec.stdout.unwrap_or(spec.log).to_path_buf(),
        stderr: spec.log.to_path_buf(),
        hook,
    };
    match stub.exec(&exec) {
        Ok(child) => Ok(Process {
            pid: child.id().unwrap_or(0),
            child,
            isolation: active,
            container: None,
        }),
        Err(why) => {
            active.discard();
            Err(start_error(program, why))
        }
    }
}

/// `podman run` of the task's image, once the image is here: the podman
/// client leads the task's process group (outside its cgroup: the
/// container goes below it), with the task's variables in its environment
/// for `--env KEY` to pass on, and its output into the log.
fn spawn_container(
    c: &ContainerSpec,
    spec: &StartSpec<'_>,
    log: &std::fs::File,
    prepared: Option<isolation::Prepared>,
) -> Result<Process, StartError> {
    let active = prepared.map(|p| p.active).unwrap_or_default();
    let fail = |message: String, active: isolation::Active| {
        active.discard();
        Err(StartError::new(127, message))
    };
    if let Err(message) = container::ensure_image(c) {
        return fail(message, active);
    }
    let tmp = spec
        .isolation
        .and_then(|i| i.tmp.as_ref())
        .map(|t| (t.dir.as_path(), t.keep.as_slice()));
    let inputs = container::RunInputs {
        command: spec.command,
        env: spec.env,
        working_dir: spec.working_dir,
        tmp,
        user: spec.run_as.filter(|r| r.switch).map(|r| (r.uid, r.gid)),
    };
    let program = c.podman.program.display().to_string();
    let mut cmd = tokio::process::Command::new(&c.podman.program);
    cmd.args(container::run_args(c, &inputs))
        .envs(spec.env)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(dir) = c.client_dir.as_deref().filter(|d| d.is_dir()) {
        cmd.current_dir(dir);
    }
    let out = match spec.stdout {
        Some(p) => std::fs::File::create(p)
            .map_err(|e| start_error(&program, format!("output file {p:?}: {e}"))),
        None => log
            .try_clone()
            .map_err(|e| start_error(&program, format!("log file: {e}"))),
    };
    let err = log
        .try_clone()
        .map_err(|e| start_error(&program, format!("log file: {e}")));
    let (out, err) = match (out, err) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => return fail(e.message, active),
    };
    cmd.stdout(out).stderr(err);
    match cmd.spawn() {
        Ok(child) => Ok(Process {
            pid: child.id().unwrap_or(0),
            child,
            isolation: active,
            container: Some(c.clone()),
        }),
        Err(e) => fail(
            format!(
                "cannot start image {:?} on node {}: running {program:?}: {e}",
                c.image, c.node
            ),
            active,
        ),
    }
}

/// The task's command: identity, environment, process group, working
/// directory, output files, and `hook` for the child.
fn command(
    program: &str,
    args: &[String],
    spec: &StartSpec<'_>,
    log: &std::fs::File,
    hook: Option<isolation::Hook>,
) -> Result<tokio::process::Command, StartError> {
    // The hook switches user itself, after the steps that need root.
    let switches_itself = hook.as_ref().is_some_and(isolation::Hook::switches_user);
    let run_as = if switches_itself { None } else { spec.run_as };
    let mut cmd = owner::command(program, args, run_as);
    if let Some(hook) = hook {
        isolation::install(&mut cmd, hook);
    }
    cmd.envs(spec.env)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(false);
    if !spec.working_dir.is_empty() {
        let dir = Path::new(spec.working_dir);
        if !dir.is_dir() {
            return Err(start_error(
                program,
                format!("working directory {:?} does not exist", spec.working_dir),
            ));
        }
        cmd.current_dir(dir);
    }
    let out = match spec.stdout {
        Some(p) => {
            let f = std::fs::File::create(p)
                .map_err(|e| start_error(program, format!("output file {p:?}: {e}")))?;
            if let Some(r) = spec.run_as {
                owner::own_file(&f, r)
                    .map_err(|e| start_error(program, format!("output file {p:?}: {e}")))?;
            }
            f
        }
        None => log
            .try_clone()
            .map_err(|e| start_error(program, format!("log file: {e}")))?,
    };
    let err = log
        .try_clone()
        .map_err(|e| start_error(program, format!("log file: {e}")))?;
    cmd.stdout(out).stderr(err);
    Ok(cmd)
}

/// Append `gpu-node: <message>` to a task's log (creating it and its
/// folder), so `gpuctl logs` shows why a task never started.
pub fn note_in_log(log: &Path, message: &str) {
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(log) {
        let _ = writeln!(f, "gpu-node: {message}");
    }
}

impl Process {
    /// The container the task runs in, if it does (to stop it).
    pub fn container(&self) -> Option<&ContainerSpec> {
        self.container.as_ref()
    }

    /// Wait for the task's main process to end. Whatever it left running in
    /// its group (and, with a cgroup, anywhere in that) is then killed: a
    /// task is over when its main process is. With a cgroup, the exit names
    /// an OOM kill and carries the task's usage, and the cgroup is removed.
    pub async fn wait(mut self) -> Exit {
        let exit = match self.child.wait().await {
            Ok(status) => Exit::from_status(status),
            Err(e) => Exit {
                code: -1,
                message: format!("waiting for the process failed: {e}"),
                usage: None,
            },
        };
        signal_group(self.pid, Signal::SIGKILL);
        let mut exit = exit;
        if let Some(m) = self
            .container
            .as_ref()
            .and_then(|c| container::exit_message(exit.code, &c.image))
        {
            exit.message = m;
        }
        let active = self.isolation;
        let container = self.container;
        let (code, message) = (exit.code, exit.message.clone());
        let finish = move || {
            // A client killed before its container leaves it behind.
            if let Some(c) = &container {
                container::remove(c);
            }
            active.finish(code, &message)
        };
        match tokio::task::spawn_blocking(finish).await {
            Ok(ended) => Exit {
                message: ended.oom_message.unwrap_or(exit.message),
                usage: ended.usage,
                code: exit.code,
            },
            Err(e) => {
                tracing::warn!("reading the cgroup of process group {}: {e}", self.pid);
                exit
            }
        }
    }
}

/// Send `sig` to the process group `pgid`. A group that is gone is fine.
pub fn signal_group(pgid: u32, sig: Signal) {
    let Ok(raw) = i32::try_from(pgid) else {
        return;
    };
    if raw <= 1 {
        // Never signal our own group or every process.
        return;
    }
    match killpg(Pid::from_raw(raw), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!("sending {sig} to process group {pgid}: {e}"),
    }
}

/// Stop a task's process group: SIGTERM, then SIGKILL if `exited` has not
/// resolved within `grace`.
pub async fn stop_group(pgid: u32, grace: Duration, exited: impl std::future::Future<Output = ()>) {
    signal_group(pgid, Signal::SIGTERM);
    if tokio::time::timeout(grace, exited).await.is_err() {
        tracing::info!("process group {pgid} outlived its {grace:?} grace period: SIGKILL");
        signal_group(pgid, Signal::SIGKILL);
    }
}

/// Records of the task process groups this daemon started, one file per
/// task in `<work-dir>/pids/`, so that a daemon that crashed (and so could not
/// stop its tasks) kills the leftovers when it starts again instead of leaving
/// them on the GPUs the scheduler hands to others.
#[derive(Debug, Clone)]
pub struct PidDir {
    dir: PathBuf,
}

/// Start time of a process in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`): with the pid it names one process, even after the pid
/// is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl PidDir {
    pub fn new(dir: PathBuf) -> Self {
        PidDir { dir }
    }

    fn file(&self, key: &TaskKey) -> Option<PathBuf> {
        let job = job_dir_name(&key.job).ok()?;
        Some(
            self.dir
                .join(format!("{job}.{}.{}", key.task_index, key.attempt)),
        )
    }

    /// Remember that `key` runs as process group `pid`.
    pub fn record(&self, key: &TaskKey, pid: u32) {
        let Some(path) = self.file(key) else {
            return;
        };
        let Some(start) = start_time(pid) else {
            return;
        };
        let result = std::fs::create_dir_all(&self.dir)
            .and_then(|_| std::fs::write(&path, format!("{pid} {start}\n")));
        if let Err(e) = result {
            tracing::warn!("recording pid {pid} of {key} in {path:?}: {e}");
        }
    }

    /// `key`'s process has exited.
    pub fn forget(&self, key: &TaskKey) {
        if let Some(path) = self.file(key) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Kill the process groups a previous run of the daemon left behind;
    /// returns how many were still running.
    pub fn kill_leftovers(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut killed = 0;
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().ok());
            if let (Some(Some(pid)), Some(Some(start))) = (parts.next(), parts.next()) {
                let pid = u32::try_from(pid).unwrap_or(0);
                if pid > 1 && start_time(pid) == Some(start) {
                    tracing::warn!(
                        "killing process group {pid} left over from a previous run ({:?})",
                        entry.file_name()
                    );
                    signal_group(pid, Signal::SIGKILL);
                    killed += 1;
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        killed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_spec(
        dir: &Path,
        command: &[&str],
        working_dir: &str,
    ) -> (Result<Process, StartError>, PathBuf) {
        let log = dir.join("logs/job/task-0-attempt-1.log");
        let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        let mut env = BTreeMap::new();
        env.insert("GREETING".to_string(), "hello".to_string());
        let spec = StartSpec {
            command: &command,
            env: &env,
            working_dir,
            log: &log,
            stdout: None,
            run_as: None,
            isolation: None,
            container: None,
        };
        (start(&spec), log)
    }

    fn alive(pid: i32) -> bool {
        // Signal 0 checks existence; a zombie still counts, so look at its state.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                .unwrap_or(false),
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn output_goes_to_the_log_and_exit_code_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (p, log) = run_spec(
            dir.path(),
            &["sh", "-c", "echo hi $GREETING; echo err >&2; exit 3"],
            "",
        );
        let p = p.unwrap();
        assert!(p.pid > 1);
        let exit = tokio::time::timeout(Duration::from_secs(10), p.wait())
            .await
            .unwrap();
        assert_eq!(exit.code, 3);
        assert_eq!(exit.message, "exited with code 3");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("hi hello\n"), "{text}");
        assert!(text.contains("err\n"), "{text}");
    }

    #[tokio::test]
    async fn stopping_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let (p, log) = run_spec(
            dir.path(),
            &["sh", "-c", "sleep 30 & echo $!; sleep 30"],
            "",
        );
        let p = p.unwrap();
        let pid = p.pid;
        // Learn the background child's pid from the log (bounded wait).
        let mut child = None;
        for _ in 0..200 {
            if let Ok(text) = std::fs::read_to_string(&log) {
                if let Ok(n) = text.trim().parse::<i32>() {
                    child = Some(n);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let child = child.expect("background pid in the log");
        assert!(alive(child));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiter = tokio::spawn(async move {
            let exit = p.wait().await;
            let _ = tx.send(());
            exit
        });
        stop_group(pid, Duration::from_secs(5), async {
            let _ = rx.await;
        })
        .await;
        let exit = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit.code, 128 + 15);
        assert_eq!(exit.message, "killed by SIGTERM (signal 15)");
        let mut gone = false;
        for _ in 0..500 {
            if !alive(child) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gone, "background child {child} survived");
    }

    #[tokio::test]
    async fn sigkill_after_grace() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = run_spec(
            dir.path(),
            &["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"],
            "",
        );
        let p = p.unwrap();
        let pid = p.pid;
        // Give the shell a moment to install its trap.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiter = tokio::spawn(async move {
            let exit = p.wait().await;
            let _ = tx.send(());
            exit
        });
        stop_group(pid, Duration::from_millis(200), async {
            let _ = rx.await;
        })
        .await;
        let exit = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit.code, 128 + 9);
        assert_eq!(exit.message, "killed by SIGKILL (signal 9)");
    }

    #[tokio::test]
    async fn command_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let (p, log) = run_spec(dir.path(), &["no-such-command-gpuctl"], "");
        let err = p.unwrap_err();
        assert_eq!(err.exit_code, 127);
        assert!(
            err.message
                .starts_with("cannot start \"no-such-command-gpuctl\": No such file or directory"),
            "{}",
            err.message
        );
        let text = std::fs::read_to_string(log).unwrap();
        assert!(text.contains(&err.message), "{text}");
    }

    #[tokio::test]
    async fn missing_working_dir() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = run_spec(dir.path(), &["true"], "/no/such/dir");
        let err = p.unwrap_err();
        assert_eq!(err.exit_code, 127);
        assert_eq!(
            err.message,
            "cannot start \"true\": working directory \"/no/such/dir\" does not exist"
        );
    }

    #[tokio::test]
    async fn working_dir_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let wd = dir.path().join("wd");
        std::fs::create_dir(&wd).unwrap();
        let (p, log) = run_spec(dir.path(), &["pwd"], wd.to_str().unwrap());
        let exit = tokio::time::timeout(Duration::from_secs(10), p.unwrap().wait())
            .await
            .unwrap();
        assert!(exit.succeeded());
        let text = std::fs::read_to_string(log).unwrap();
        assert_eq!(text.trim(), wd.canonicalize().unwrap().to_str().unwrap());
    }

    #[test]
    fn empty_command() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = run_spec(dir.path(), &[], "");
        assert_eq!(p.unwrap_err().exit_code, 127);
    }

    #[test]
    fn ports_go_round_the_range_skipping_taken_ones() {
        use std::collections::HashSet;
        let range: PortRange = "20000-32767".parse().unwrap();
        assert_eq!(range, PortRange::default());
        assert!("20000".parse::<PortRange>().is_err());
        assert!("3-2".parse::<PortRange>().is_err());
        assert!("0-10".parse::<PortRange>().is_err());
        assert!("1-70000".parse::<PortRange>().is_err());
        // A busy port (held here) and an avoided one are passed over.
        let held = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let busy = held.local_addr().unwrap().port();
        let r = PortRange {
            first: busy,
            last: busy.saturating_add(40),
        };
        let avoid: HashSet<u16> = [busy + 1].into();
        let p = free_port(r, 0, &avoid).unwrap();
        assert!(p > busy + 1 && p <= r.last, "{p} in {r:?}");
        // The next goes after the last one given, and wraps around.
        let q = free_port(r, p, &avoid).unwrap();
        assert!(q > p || q < p && p == r.last, "{q} after {p}");
        let only = PortRange {
            first: busy,
            last: busy,
        };
        let e = free_port(only, 0, &HashSet::new()).unwrap_err();
        assert_eq!(e.to_string(), format!("no free port in {busy}-{busy}"));
    }

    #[test]
    fn log_paths_stay_inside() {
        let key = |job: &str| TaskKey {
            job: job.into(),
            task_index: 2,
            attempt: 3,
        };
        assert_eq!(
            log_path(Path::new("/w/logs"), &key("train")).unwrap(),
            PathBuf::from("/w/logs/train/task-2-attempt-3.log")
        );
        for bad in ["", "..", ".hidden", "a/b", "../x", "a\0b", "/abs"] {
            assert!(
                log_path(Path::new("/w/logs"), &key(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn leftovers_of_a_crashed_daemon_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = run_spec(dir.path(), &["sleep", "30"], "");
        let p = p.unwrap();
        let pid = p.pid;
        let pids = PidDir::new(dir.path().join("pids"));
        let key = TaskKey {
            job: "job".into(),
            task_index: 0,
            attempt: 1,
        };
        pids.record(&key, pid);
        // A stale record (no such process) is only removed.
        std::fs::write(dir.path().join("pids/old.0.1"), "999999999 1\n").unwrap();
        // The daemon "restarts": a new PidDir over the same folder.
        assert_eq!(PidDir::new(dir.path().join("pids")).kill_leftovers(), 1);
        let exit = tokio::time::timeout(Duration::from_secs(10), p.wait())
            .await
            .unwrap();
        assert_eq!(exit.code, 128 + 9);
        assert_eq!(
            std::fs::read_dir(dir.path().join("pids")).unwrap().count(),
            0
        );
    }
}
