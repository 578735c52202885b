//! Tasks that name an `image`, run in it under podman (`gpu-node --runtime
//! podman`).
//!
//! The task's supervisor runs `podman run` in the foreground as the task's
//! process, so the process path stays the same: the supervisor waits for
//! it, records its exit code, and stops it; re-adoption and fencing see one
//! process group as before.
//!
//! ```text
//!  supervisor ── podman image exists IMAGE (missing: podman pull, bounded) ──► error naming image and node
//!      │
//!      └─ podman GLOBAL run --rm --replace --name gpuctl-JOB-I-A --cgroup-parent /gpuctl/NODE/JOB-I-A
//!           --network host --env KEY... -v TMP:/tmp -v FOLDER:FOLDER... [-w DIR] [--user UID:GID]
//!           [--device nvidia.com/gpu=UUID...] RUN_ARGS IMAGE COMMAND...
//!         its output → the task's log; its exit code → the task's
//!  stop       podman stop --time GRACE NAME (and SIGTERM to the client, which forwards it)
//!  after      podman rm -f NAME (a client killed before its container), cgroup read and removed
//! ```
//!
//! Limits: the task's cgroup ([`crate::isolation`]) is made by the daemon as
//! for a process, at a path podman can name (`--cgroup-parent`), and the
//! container is created below it: CPU quota, memory limit and pids limit
//! hold for everything podman starts for the task, and the OOM kill and the
//! usage are read from it when the task ends. The podman client itself stays
//! outside it.
//!
//! Pure apart from [`ensure_image`], [`remove`] and [`stop`], which run podman.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How the daemon runs tasks (`--runtime`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Runtime {
    /// Every task is a process group on the host; a task's `image` is not
    /// used (its Running report says so).
    #[default]
    Process,
    /// Tasks that name an image run in it under podman; the others as
    /// processes.
    Podman(Podman),
}

/// `process` or `podman`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    Process,
    Podman,
}

/// podman and the options it needs on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Podman {
    /// The podman executable.
    pub program: PathBuf,
    /// Options before `run` (and every other podman command).
    pub global_args: Vec<String>,
    /// Options added to each `podman run`, before the image.
    pub run_args: Vec<String>,
    /// Longest time a missing image may take to pull.
    pub pull_timeout_ms: u64,
}

/// The global options that work on Debian bookworm's podman 4.3 on a
/// hybrid cgroup host (crun refuses it; podman's systemd manager needs a
/// systemd that is not there).
pub const DEFAULT_GLOBAL_ARGS: [&str; 4] = ["--runtime", "runc", "--cgroup-manager", "cgroupfs"];
/// podman raises the open-files and processes limits by default, which a
/// host without CAP_SYS_RESOURCE refuses; these are lower.
pub const DEFAULT_RUN_ARGS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1000:1000",
];
/// Default longest pull of a missing image.
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(600);

impl Default for Podman {
    fn default() -> Self {
        Podman {
            program: "podman".into(),
            global_args: DEFAULT_GLOBAL_ARGS.map(String::from).to_vec(),
            run_args: DEFAULT_RUN_ARGS.map(String::from).to_vec(),
            pull_timeout_ms: DEFAULT_PULL_TIMEOUT.as_millis() as u64,
        }
    }
}

impl Podman {
    /// `podman GLOBAL ARGS...`, its input closed.
    fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.global_args).args(args).stdin(Stdio::null());
        cmd
    }

    /// `podman version`'s client version, to check at start that podman
    /// runs here.
    pub fn version(&self) -> Result<String, String> {
        let out = self
            .command(["version", "--format", "{{.Client.Version}}"])
            .output()
            .map_err(|e| format!("cannot run {:?}: {e}", self.program))?;
        if !out.status.success() {
            return Err(format!(
                "{:?} version failed: {}",
                self.program,
                last_line(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// What a task in an image needs besides its process spec; travels to the
/// supervisor with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub image: String,
    /// The container's name, `gpuctl-<job>-<index>-<attempt>`.
    pub name: String,
    /// This node's name, for error messages.
    pub node: String,
    /// CDI names of the task's GPUs (`nvidia.com/gpu=UUID`); empty on
    /// hosts without NVIDIA devices (simulated GPUs).
    pub devices: Vec<String>,
    /// Host folders the task uses, bound at the same path (its step or
    /// task folder, its secret files).
    pub binds: Vec<PathBuf>,
    /// `--cgroup-parent`: the task's cgroup as podman names it; `None`:
    /// no cgroup (podman's own, unlimited).
    pub cgroup_parent: Option<String>,
    pub podman: Podman,
    /// The working directory of the podman client (the task's supervisor
    /// folder): podman's container monitor writes files such as `oom`
    /// there. `None`: the supervisor's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_dir: Option<PathBuf>,
}

/// `gpuctl-<job>-<index>-<attempt>`: job names are DNS labels, so this is a
/// valid container name.
pub fn container_name(job: &str, index: u32, attempt: u32) -> String {
    format!("gpuctl-{job}-{index}-{attempt}")
}

/// The parts of a task's start spec that become `podman run` options.
#[derive(Debug, Clone, Copy)]
pub struct RunInputs<'a> {
    pub command: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    /// The image's folder to start in; empty: the image's own.
    pub working_dir: &'a str,
    /// The task's own `/tmp` on the host (bound on `/tmp`) and the host
    /// folders under `/tmp` kept visible in it.
    pub tmp: Option<(&'a Path, &'a [PathBuf])>,
    /// `uid:gid` to run as; `None`: the image's user.
    pub user: Option<(u32, u32)>,
}

/// The arguments of `podman` that run the task (after the program name).
/// Variables are named, not valued (`--env KEY`): podman takes the values
/// from its own environment, where the caller puts them, so that secrets
/// never show in the process list. Pure.
pub fn run_args(c: &ContainerSpec, t: &RunInputs<'_>) -> Vec<String> {
    let mut a: Vec<String> = c.podman.global_args.clone();
    a.extend(
        [
            "run",
            "--rm",
            "--replace",
            "--name",
            &c.name,
            // Host network: torchrun rendezvous and $PORT work as for processes.
            "--network",
            "host",
            "--log-driver",
            "none",
        ]
        .map(String::from),
    );
    if let Some(parent) = &c.cgroup_parent {
        a.push("--cgroup-parent".into());
        a.push(parent.clone());
    }
    for k in t.env.keys() {
        a.push("--env".into());
        a.push(k.clone());
    }
    // Inside, the task's GPUs are the container's only ones, numbered from 0.
    if !c.devices.is_empty() {
        let visible: Vec<String> = (0..c.devices.len()).map(|i| i.to_string()).collect();
        a.push("--env".into());
        a.push(format!("CUDA_VISIBLE_DEVICES={}", visible.join(",")));
        a.push("--env".into());
        a.push("NVIDIA_VISIBLE_DEVICES=void".into());
    }
    for d in &c.devices {
        a.push("--device".into());
        a.push(d.clone());
    }
    // Destination → source, each destination once (podman refuses twins).
    let mut binds: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    if let Some((dir, keep)) = t.tmp {
        binds.insert("/tmp".into(), dir.to_path_buf());
        for k in keep {
            binds.insert(k.clone(), k.clone());
        }
    }
    for b in &c.binds {
        binds.insert(b.clone(), b.clone());
    }
    for (to, from) in &binds {
        a.push("--volume".into());
        a.push(format!("{}:{}", from.display(), to.display()));
    }
    if !t.working_dir.is_empty() {
        a.push("--workdir".into());
        a.push(t.working_dir.to_string());
    }
    if let Some((uid, gid)) = t.user {
        a.push("--user".into());
        a.push(format!("{uid}:{gid}"));
    }
    a.extend(c.podman.run_args.iter().cloned());
    a.push(c.image.clone());
    a.extend(t.command.iter().cloned());
    a
}

/// The last non-empty line of a command's output, for error messages.
fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no output)")
        .to_string()
}

/// Run `cmd` to its end or until `limit`, then kill it. Its output, or why not.
fn run_bounded(mut cmd: Command, limit: Duration) -> Result<std::process::Output, String> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.map_err(|e| e.to_string()),
        Err(_) => {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err(format!("gave up after {}s", limit.as_secs()))
        }
    }
}

/// Make sure the task's image is on this node: `podman image exists`, and
/// when it is not, `podman pull` within the pull timeout. The error names
/// the image and the node.
pub fn ensure_image(c: &ContainerSpec) -> Result<(), String> {
    let start = Instant::now();
    let exists = c
        .podman
        .command(["image", "exists", &c.image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| {
            format!(
                "cannot run {:?} on node {} to look for image {:?}: {e}",
                c.podman.program, c.node, c.image
            )
        })?;
    if exists.success() {
        return Ok(());
    }
    let limit = Duration::from_millis(c.podman.pull_timeout_ms);
    let why = match run_bounded(c.podman.command(["pull", "--quiet", &c.image]), limit) {
        Ok(out) if out.status.success() => return Ok(()),
        Ok(out) => last_line(&out.stderr),
        Err(e) => e,
    };
    Err(format!(
        "image {:?} is not on node {} and could not be pulled ({}ms): {why}",
        c.image,
        c.node,
        start.elapsed().as_millis()
    ))
}

/// Remove the task's container if it is still there (its client was killed
/// before it): bounded, best effort.
pub fn remove(c: &ContainerSpec) {
    let cmd = c
        .podman
        .command(["rm", "--force", "--ignore", "--time", "0", &c.name]);
    match run_bounded(cmd, Duration::from_secs(30)) {
        Ok(out) if out.status.success() => {}
        Ok(out) => tracing::warn!("removing container {}: {}", c.name, last_line(&out.stderr)),
        Err(e) => tracing::warn!("removing container {}: {e}", c.name),
    }
}

/// Stop the task's container: SIGTERM, SIGKILL after `grace` (podman's own
/// `stop`). Returns when podman is done; bounded by the grace and a margin.
pub async fn stop(c: ContainerSpec, grace: Duration) {
    let secs = grace.as_millis().div_ceil(1000).to_string();
    let mut cmd = tokio::process::Command::from(
        c.podman
            .command(["stop", "--ignore", "--time", &secs, &c.name]),
    );
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let run = async {
        match cmd.status().await {
            Ok(s) if s.success() => {}
            Ok(s) => tracing::warn!("podman stop {}: {s}", c.name),
            Err(e) => tracing::warn!("podman stop {}: {e}", c.name),
        }
    };
    let _ = tokio::time::timeout(grace + Duration::from_secs(10), run).await;
}

/// The message of a container task that ended with `code`, where podman's
/// own codes are told apart from the task's.
pub fn exit_message(code: i32, image: &str) -> Option<String> {
    match code {
        125 => Some(format!(
            "podman could not run the container of image {image:?} (exit code 125; podman's error is in the task's log)"
        )),
        126 => Some(format!(
            "the command cannot be run in image {image:?} (exit code 126)"
        )),
        127 => Some(format!(
            "the command was not found in image {image:?} (exit code 127)"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(devices: &[&str]) -> ContainerSpec {
        ContainerSpec {
            image: "localhost/train:1".into(),
            name: container_name("train", 0, 1),
            node: "node-1".into(),
            devices: devices.iter().map(|d| d.to_string()).collect(),
            binds: vec!["/w/steps/train-1".into()],
            cgroup_parent: Some("/gpuctl/node-1.abcd/train-0-1".into()),
            podman: Podman::default(),
            client_dir: None,
        }
    }

    #[test]
    fn the_run_line_carries_env_names_folders_limits_and_gpus() {
        let env: BTreeMap<String, String> = [
            ("CUDA_VISIBLE_DEVICES".to_string(), "3,5".to_string()),
            ("TOKEN".to_string(), "secret".to_string()),
        ]
        .into();
        let command = vec!["python".to_string(), "train.py".to_string()];
        let keep = vec![PathBuf::from("/tmp/.tmpAbc")];
        let inputs = RunInputs {
            command: &command,
            env: &env,
            working_dir: "/w/steps/train-1",
            tmp: Some((Path::new("/w/tmp/train-0-1"), &keep)),
            user: Some((1001, 1001)),
        };
        let c = spec(&["nvidia.com/gpu=GPU-aaa", "nvidia.com/gpu=GPU-bbb"]);
        let a = run_args(&c, &inputs).join(" ");
        assert_eq!(
            a,
            "--runtime runc --cgroup-manager cgroupfs run --rm --replace --name gpuctl-train-0-1 \
             --network host --log-driver none --cgroup-parent /gpuctl/node-1.abcd/train-0-1 \
             --env CUDA_VISIBLE_DEVICES --env TOKEN \
             --env CUDA_VISIBLE_DEVICES=0,1 --env NVIDIA_VISIBLE_DEVICES=void \
             --device nvidia.com/gpu=GPU-aaa --device nvidia.com/gpu=GPU-bbb \
             --volume /w/tmp/train-0-1:/tmp --volume /tmp/.tmpAbc:/tmp/.tmpAbc \
             --volume /w/steps/train-1:/w/steps/train-1 --workdir /w/steps/train-1 \
             --user 1001:1001 --ulimit nofile=1024:1024 --ulimit nproc=1000:1000 \
             localhost/train:1 python train.py"
        );
        assert!(!a.contains("secret"), "values stay out of the command line");
    }

    #[test]
    fn without_gpus_tmp_or_user_the_image_decides() {
        let env = BTreeMap::new();
        let command = vec!["true".to_string()];
        let inputs = RunInputs {
            command: &command,
            env: &env,
            working_dir: "",
            tmp: None,
            user: None,
        };
        let mut c = spec(&[]);
        c.binds.clear();
        c.cgroup_parent = None;
        let a = run_args(&c, &inputs);
        for absent in [
            "--device",
            "--volume",
            "--workdir",
            "--user",
            "--cgroup-parent",
            "--env",
        ] {
            assert!(!a.iter().any(|x| x == absent), "{absent} in {a:?}");
        }
        assert_eq!(&a[a.len() - 2..], ["localhost/train:1", "true"]);
    }

    #[test]
    fn a_twin_destination_is_bound_once() {
        let env = BTreeMap::new();
        let command = vec!["true".to_string()];
        let keep = vec![PathBuf::from("/w/steps/train-1")];
        let inputs = RunInputs {
            command: &command,
            env: &env,
            working_dir: "",
            tmp: Some((Path::new("/w/tmp/x"), &keep)),
            user: None,
        };
        let a = run_args(&spec(&[]), &inputs);
        let n = a
            .iter()
            .filter(|x| x.ends_with(":/w/steps/train-1"))
            .count();
        assert_eq!(n, 1, "{a:?}");
    }

    #[test]
    fn podmans_own_exit_codes_are_named() {
        assert!(exit_message(125, "x")
            .unwrap()
            .contains("podman could not run"));
        assert!(exit_message(127, "x")
            .unwrap()
            .contains("not found in image \"x\""));
        assert_eq!(exit_message(3, "x"), None);
    }

    #[test]
    fn names_are_container_names() {
        assert_eq!(container_name("wf-a-1", 2, 3), "gpuctl-wf-a-1-2-3");
    }
}
