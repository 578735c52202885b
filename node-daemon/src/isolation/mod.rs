//! What confines a task on its node: its cgroup (CPU quota, memory limit,
//! pids limit, GPU device rules), its own `/tmp`, and what is read back
//! when it ends (OOM kills, CPU time, memory).
//!
//! ```text
//!  daemon start   Isolation::detect ── cgroup::Layout (v1 | v2 | none), /dev/nvidia*,
//!                                      private /tmp possible?  → notes, said once
//!  task start     Isolation::for_task → TaskIsolation (cgroup + limits, private /tmp)
//!                 runtime::start → prepare(): cgroup made, limits written, /tmp
//!                 folder made, cgroup.procs files opened ─ fork ─► Hook::run in the
//!                 child: join the cgroups, unshare the mount namespace, /
//!                 slave, bind the folder on /tmp, drop to the task's user ─► exec
//!  task end       Process::wait → Active::finish: OOM kills → "OOMKilled: ...",
//!                 usage (runtime puts both in Exit), what is left in the cgroup
//!                 killed, cgroup removed
//!                 (the /tmp folder is removed by the caller once outputs are read)
//! ```
//!
//! The child joins its cgroups before exec (writing `0` to each
//! `cgroup.procs` opened before the fork), so nothing it starts escapes
//! them. This is the one place of the daemon with `unsafe` code:
//! [`install`] hands `Hook::run` to `Command::pre_exec`; the hook only
//! makes system calls (no allocation) on what was prepared before the fork.
//!
//! cgroups are written by hand ([`cgroup`]) rather than with `cgroups-rs`
//! (0.5.1, the maintained crate): it depends unconditionally on `zbus` (an
//! async D-Bus stack, for its systemd manager) and brings a second `nix`
//! (0.25) and a second `thiserror` (1.x), all for about ten cgroupfs files
//! this module reads and writes. It could place v1 cgroups below the
//! daemon's own (`Cgroup::new_with_relative_paths`), but the parts that
//! matter here would still be ours: the `cgroup.procs` files opened before
//! the fork, the v1/v2 OOM counters, and the layout decision on hybrid hosts
//! (v1 controllers next to an unified hierarchy with none, the daemon in
//! `memory:/process_api/<id>` and `/` elsewhere). Its build cost was not
//! measured: the dependency list settled it.
//!
//! GPU device rules ([`devices`]) are applied on v1 only; see that module
//! for what v2 lacks.

pub mod bpf;
pub mod cgroup;
pub mod devices;
pub mod private_tmp;
pub mod start;

use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use cgroup::{Layout, Limits, TaskCgroup, Usage};
pub use private_tmp::PrivateTmp;
pub use start::{prepare, prepare_spec, HookSpec, MountSpec, Prepared, Waiting};

/// Whether tasks get cgroups (`--cgroups`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupMode {
    /// When the host allows it; otherwise the daemon says so once and runs
    /// tasks without limits.
    #[default]
    Auto,
    /// The daemon does not start without them.
    Required,
    /// Never (tasks run without limits).
    Off,
}

impl std::str::FromStr for CgroupMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(CgroupMode::Auto),
            "required" => Ok(CgroupMode::Required),
            "off" => Ok(CgroupMode::Off),
            _ => Err(format!("expected auto, required or off, got {s:?}")),
        }
    }
}

/// The daemon's isolation flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub cgroups: CgroupMode,
    /// `pids.max` of every task; 0: none.
    pub pids_max: u64,
    /// Give each task its own `/tmp` (when the daemon may make mount
    /// namespaces).
    pub private_tmp: bool,
    /// How tasks that name an image run ([`crate::container`]).
    pub runtime: crate::container::Runtime,
    /// Supervisors started ahead of time, each with its task's process
    /// forked and waiting (in a cgroup of its own where it can be renamed
    /// to the task's), so that a task starts without waiting for either
    /// ([`crate::supervisor::pool`]); 0: none.
    pub warm_supervisors: usize,
}

/// The default number of supervisors kept warm.
pub const DEFAULT_WARM_SUPERVISORS: usize = 2;

/// The default `pids.max` of a task.
pub const DEFAULT_PIDS_MAX: u64 = 4096;

impl Default for Options {
    fn default() -> Self {
        Options {
            cgroups: CgroupMode::Auto,
            pids_max: DEFAULT_PIDS_MAX,
            private_tmp: true,
            runtime: crate::container::Runtime::Process,
            warm_supervisors: DEFAULT_WARM_SUPERVISORS,
        }
    }
}

/// What this host allows, found once at start ([`Isolation::detect`]).
#[derive(Debug, Clone, Default)]
pub struct Isolation {
    node: String,
    layout: Option<Layout>,
    pids_max: u64,
    /// Folder of the tasks' `/tmp` folders; `None`: no private `/tmp`.
    tmp_root: Option<PathBuf>,
    /// Kept visible inside a task's `/tmp` (see [`private_tmp`]).
    keep: Vec<PathBuf>,
    devices: Vec<devices::DeviceNode>,
    /// cgroup v2 device programs load here (checked at start).
    v2_devices: bool,
    /// How tasks that name an image run.
    pub runtime: crate::container::Runtime,
    /// What the daemon says about it at start, one line each.
    pub notes: Vec<String>,
    /// What is missing (tasks run without it), said once at start.
    pub warnings: Vec<String>,
}

/// What confines one task.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TaskIsolation {
    pub cgroup: Option<(TaskCgroup, Limits)>,
    pub tmp: Option<PrivateTmp>,
    /// The task runs in a container: its cgroup is podman's
    /// `--cgroup-parent` (this path), which the podman client does not
    /// join, and podman binds the `/tmp` folder itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_parent: Option<String>,
}

/// The folder of a daemon's task cgroups: its node name and a hash of its
/// work folder, `node-1.3fa2c1d0`. Two daemons with one node name (two
/// `gpuctl dev` clusters on a host) never touch each other's tasks, and a
/// daemon restarted over the same work folder finds what it left.
pub fn instance_name(node: &str, work_dir: &Path) -> String {
    // FNV-1a: stable across builds and platforms.
    let hash = work_dir
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("{node}.{:08x}", hash as u32)
}

/// How the cgroups of warm supervisors' waiting processes begin: a dot,
/// which no job name begins with.
pub const POOL_PREFIX: &str = ".pool.";

/// `name-index-attempt`: a task's cgroup and `/tmp` folder name.
pub fn task_name(job: &str, index: u32, attempt: u32) -> String {
    format!("{job}-{index}-{attempt}")
}

impl Isolation {
    /// No isolation: tasks run as plain process groups.
    pub fn none() -> Isolation {
        Isolation::default()
    }

    /// What this host allows under `settings` for the daemon of `node`
    /// working in `work_dir` (tasks' `/tmp` folders go in `<work_dir>/tmp`).
    /// Errors only when cgroups are required and unavailable (the message
    /// says why).
    pub fn detect(settings: &Options, node: &str, work_dir: &Path) -> Result<Isolation, String> {
        let root = nix::unistd::geteuid().is_root();
        let work = work_dir
            .canonicalize()
            .unwrap_or_else(|_| work_dir.to_path_buf());
        let node = &instance_name(node, &work);
        let mut iso = Isolation {
            node: node.clone(),
            pids_max: settings.pids_max,
            runtime: settings.runtime.clone(),
            ..Isolation::default()
        };
        if let crate::container::Runtime::Podman(p) = &settings.runtime {
            let version = p
                .version()
                .map_err(|e| format!("--runtime podman: podman does not run here: {e}"))?;
            iso.notes.push(format!(
                "tasks that name an image run in it under podman {version}"
            ));
        }
        if settings.cgroups != CgroupMode::Off {
            let found = if root {
                Layout::detect().and_then(|l| {
                    for dir in l.node_dirs(node) {
                        std::fs::create_dir_all(&dir)
                            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                    }
                    // A task cgroup can be made (v2: the controllers can be
                    // enabled below the daemon's cgroup).
                    let probe = l.task(node, "probe");
                    probe.create(&Limits::default())?;
                    probe.remove();
                    Ok(l)
                })
            } else {
                Err("the daemon is not root".to_string())
            };
            match found {
                Ok(layout) => {
                    iso.notes.push(format!(
                        "tasks get cgroups: {} (CPU quota, memory limit, pids.max {})",
                        layout.describe(),
                        settings.pids_max
                    ));
                    iso.layout = Some(layout);
                }
                Err(why) if settings.cgroups == CgroupMode::Required => {
                    return Err(format!(
                        "--cgroups required: cgroups are unavailable: {why}"
                    ));
                }
                Err(why) => iso.warnings.push(format!(
                    "cgroups unavailable ({why}): tasks run without CPU, memory and pids limits"
                )),
            }
        } else {
            iso.warnings
                .push("--cgroups off: tasks run without CPU, memory and pids limits".into());
        }
        iso.devices = devices::scan(Path::new("/dev"));
        if !iso.devices.is_empty() {
            match &iso.layout {
                Some(Layout::V1 {
                    devices: Some(_), ..
                }) => iso.notes.push(
                    "GPU device files: each task may open only its own GPUs' (devices cgroup)"
                        .into(),
                ),
                Some(Layout::V2 { .. }) => match bpf::load(&bpf::program(&[])) {
                    Ok(_) => {
                        iso.v2_devices = true;
                        iso.notes.push(
                            "GPU device files: each task may open only its own GPUs' (a BPF \
                             device program on its cgroup)"
                                .into(),
                        );
                    }
                    Err(e) => iso.warnings.push(format!(
                        "GPU device files are not guarded per task here: {e}"
                    )),
                },
                _ => iso.warnings.push(
                    "GPU device files are not guarded per task here (needs the cgroup v1 \
                     devices controller, or tasks' cgroups on cgroup v2)"
                        .into(),
                ),
            }
        }
        if settings.private_tmp {
            match probe_private_tmp(root) {
                Ok(()) => {
                    iso.tmp_root = Some(work.join("tmp"));
                    // The work folder, and the folder of this daemon's own
                    // programs (tasks run siblings such as gpu-model-server).
                    iso.keep = private_tmp::top_of_tmp(&work).into_iter().collect();
                    let exe = std::env::current_exe().ok();
                    private_tmp::keep_tops(&mut iso.keep, exe.as_deref());
                    // Folders of tasks a previous run started go once the
                    // daemon knows which of them it takes back.
                    iso.notes.push("each task gets its own /tmp".into());
                }
                Err(why) => iso
                    .warnings
                    .push(format!("tasks share the host's /tmp: {why}")),
            }
        }
        Ok(iso)
    }

    /// The cgroup of a task, when tasks get cgroups.
    pub fn task_cgroup(&self, job: &str, index: u32, attempt: u32) -> Option<TaskCgroup> {
        let layout = self.layout.as_ref()?;
        Some(layout.task(&self.node, &task_name(job, index, attempt)))
    }

    /// The cgroup a warm supervisor's waiting process sits in, named
    /// `.pool.<daemon pid>.<n>` (never a task's name), renamed to the
    /// task's when it gets one ([`TaskCgroup::take_over`]). Only on v1,
    /// where cgroups can be renamed; `None` elsewhere (the process then
    /// joins the task's cgroup as it starts the task).
    pub fn pool_cgroup(&self, n: u64) -> Option<TaskCgroup> {
        match self.layout.as_ref()? {
            l @ Layout::V1 { .. } => Some(l.task(
                &self.node,
                &format!("{POOL_PREFIX}{}.{n}", std::process::id()),
            )),
            Layout::V2 { .. } => None,
        }
    }

    /// The folder of the tasks' `/tmp` folders, when tasks get their own.
    pub fn tmp_root(&self) -> Option<&Path> {
        self.tmp_root.as_deref()
    }

    /// The cgroup a running task's usage is read from: its own, or, for a
    /// task in a container, the `--cgroup-parent` podman put the
    /// container below (whose counters include the container's). `None`
    /// without cgroups or when neither is there.
    pub fn running_cgroup(&self, job: &str, index: u32, attempt: u32) -> Option<TaskCgroup> {
        let own = self.task_cgroup(job, index, attempt)?;
        if own.memory.is_dir() {
            return Some(own);
        }
        let layout = self.layout.as_ref()?;
        let (cg, _) = layout.container_task(&self.node, &task_name(job, index, attempt))?;
        cg.memory.is_dir().then_some(cg)
    }

    /// The `/tmp` of a task, when tasks get their own.
    pub fn task_tmp(&self, job: &str, index: u32, attempt: u32) -> Option<PrivateTmp> {
        let root = self.tmp_root.as_ref()?;
        Some(PrivateTmp {
            dir: root.join(task_name(job, index, attempt)),
            keep: self.keep.clone(),
        })
    }

    /// What confines a task with these resources and GPUs (0: no limit).
    pub fn for_task(
        &self,
        job: &str,
        index: u32,
        attempt: u32,
        cpu_milli: u64,
        memory_bytes: u64,
        gpus: &[u32],
    ) -> TaskIsolation {
        let cgroup = self.task_cgroup(job, index, attempt).map(|c| {
            let devices = (c.devices.is_some() || (c.v2 && self.v2_devices))
                .then(|| devices::rules(&self.devices, gpus))
                .flatten();
            let limits = Limits {
                cpu_milli,
                memory_bytes,
                pids_max: self.pids_max,
                devices,
            };
            (c, limits)
        });
        TaskIsolation {
            cgroup,
            tmp: self.task_tmp(job, index, attempt),
            container_parent: None,
        }
    }

    /// What confines a task that runs in a container: the same limits, in
    /// the cgroup podman is told to put the container under
    /// ([`Layout::container_task`]); without it, podman's own cgroup and
    /// no limits.
    pub fn for_container(
        &self,
        job: &str,
        index: u32,
        attempt: u32,
        cpu_milli: u64,
        memory_bytes: u64,
    ) -> TaskIsolation {
        let name = task_name(job, index, attempt);
        let found = self
            .layout
            .as_ref()
            .and_then(|l| l.container_task(&self.node, &name));
        let (cgroup, container_parent) = match found {
            Some((cg, parent)) => {
                let limits = Limits {
                    cpu_milli,
                    memory_bytes,
                    pids_max: self.pids_max,
                    devices: None,
                };
                (Some((cg, limits)), Some(parent))
            }
            None => (None, None),
        };
        TaskIsolation {
            cgroup,
            tmp: self.task_tmp(job, index, attempt),
            container_parent,
        }
    }

    /// Whether this host has NVIDIA device files (a task in a container
    /// then gets its GPUs through CDI).
    pub fn has_gpu_devices(&self) -> bool {
        !self.devices.is_empty()
    }

    /// Remove the node's cgroup folders (`<own>/gpuctl/<node>`, and
    /// `<own>/gpuctl` when no other node uses it), and any task cgroup
    /// left in them: when the daemon stops.
    pub fn remove_node_dirs(&self) {
        let Some(layout) = &self.layout else {
            return;
        };
        self.remove_leftovers();
        for dir in layout.node_dirs(&self.node) {
            let _ = std::fs::remove_dir(&dir);
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }

    /// Remove the empty task cgroups a previous run of the daemon left
    /// (those with processes belong to tasks it takes back).
    pub fn remove_leftovers(&self) -> usize {
        let Some(layout) = &self.layout else {
            return 0;
        };
        let mut names = std::collections::BTreeSet::new();
        for dir in layout.node_dirs(&self.node) {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        if let Some(n) = e.file_name().to_str() {
                            names.insert(n.to_string());
                        }
                    }
                }
            }
        }
        // A task whose supervisor outlived the daemon still runs in its
        // cgroup: the daemon takes it back ([`crate::supervisor`]). Only
        // the empty ones are left over, and the cgroups of warm
        // supervisors' waiting processes, which never ran a task.
        let mut removed = 0;
        for n in &names {
            let task = layout.task(&self.node, n);
            if n.starts_with(POOL_PREFIX) || task.pids().is_empty() {
                task.remove();
                removed += 1;
            }
        }
        removed
    }
}

/// Removes the node's cgroup folders ([`Isolation::remove_node_dirs`])
/// when dropped.
#[derive(Debug)]
pub struct RemoveOnDrop(pub std::sync::Arc<Isolation>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.0.remove_node_dirs();
    }
}

/// Whether the daemon can give tasks a mount namespace of their own: a
/// child that makes one and exits.
fn probe_private_tmp(root: bool) -> Result<(), String> {
    if !root {
        return Err("the daemon is not root".into());
    }
    let mut cmd = tokio::process::Command::new("true");
    let hook = Hook {
        procs: Vec::new(),
        mounts: Some(Mounts {
            binds: Vec::new(),
            tmp: None,
        }),
        identity: None,
    };
    install(&mut cmd, hook);
    let status = cmd
        .as_std_mut()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot make a mount namespace: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "cannot make a mount namespace: `true` ended with {status}"
        ))
    }
}

fn cstring(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| format!("path {} has a NUL byte", p.display()))
}

/// Mounts made in the child's own mount namespace.
#[derive(Debug)]
struct Mounts {
    /// (source, target) binds, in order.
    binds: Vec<(CString, CString)>,
    /// The folder bound on `/tmp` last.
    tmp: Option<CString>,
}

/// What the child does between fork and exec, all prepared before the
/// fork. See `Hook::run`.
#[derive(Debug)]
pub struct Hook {
    /// `cgroup.procs` of each of the task's cgroups, open for writing.
    procs: Vec<File>,
    mounts: Option<Mounts>,
    /// (groups, gid, uid) to switch to last, when the task changes user.
    identity: Option<(Vec<nix::unistd::Gid>, nix::unistd::Gid, nix::unistd::Uid)>,
}

impl Hook {
    /// Whether the hook does anything (else the task starts as before).
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty() && self.mounts.is_none()
    }

    /// Whether the hook switches to the task's user (the command must then
    /// start as the daemon's).
    pub fn switches_user(&self) -> bool {
        self.identity.is_some()
    }

    /// In the child: join the cgroups, make the mount namespace, switch
    /// user. System calls only.
    fn run(&self) -> std::io::Result<()> {
        use nix::mount::{mount, MsFlags};
        let os = |e: nix::Error| std::io::Error::from_raw_os_error(e as i32);
        for f in &self.procs {
            nix::unistd::write(f, b"0").map_err(os)?;
        }
        if let Some(m) = &self.mounts {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(os)?;
            // Nothing mounted here reaches the host; the host's new mounts
            // still reach the task.
            mount(
                None::<&std::ffi::CStr>,
                c"/",
                None::<&std::ffi::CStr>,
                MsFlags::MS_REC | MsFlags::MS_SLAVE,
                None::<&std::ffi::CStr>,
            )
            .map_err(os)?;
            for (from, to) in &m.binds {
                mount(
                    Some(from.as_c_str()),
                    to.as_c_str(),
                    None::<&std::ffi::CStr>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&std::ffi::CStr>,
                )
                .map_err(os)?;
            }
            if let Some(dir) = &m.tmp {
                mount(
                    Some(dir.as_c_str()),
                    c"/tmp",
                    None::<&std::ffi::CStr>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&std::ffi::CStr>,
                )
                .map_err(os)?;
            }
        }
        if let Some((groups, gid, uid)) = &self.identity {
            nix::unistd::setgroups(groups).map_err(os)?;
            nix::unistd::setgid(*gid).map_err(os)?;
            nix::unistd::setuid(*uid).map_err(os)?;
        }
        Ok(())
    }
}

/// Run `hook` in `cmd`'s child between fork and exec.
#[allow(unsafe_code)]
pub fn install(cmd: &mut tokio::process::Command, hook: Hook) {
    // SAFETY: `Hook::run` only makes system calls (write, unshare, mount,
    // setgroups, setgid, setuid) on buffers and files prepared before the
    // fork; it allocates nothing and takes no lock, so it is safe in the
    // child of a multi-threaded process.
    unsafe {
        cmd.pre_exec(move || hook.run());
    }
}

/// [`install`] for a process that execs without forking (a warm
/// supervisor's waiting process, [`crate::warm`]).
#[allow(unsafe_code)]
pub fn install_std(cmd: &mut std::process::Command, hook: Hook) {
    use std::os::unix::process::CommandExt;
    // SAFETY: as in `install`; here the hook runs in the process itself,
    // right before its exec.
    unsafe {
        cmd.pre_exec(move || hook.run());
    }
}

/// A container task's cgroup made with its limits (podman puts the
/// container below it) and its `/tmp` folder; nothing for the podman
/// client to join.
pub(crate) fn prepare_container(
    task: &TaskIsolation,
    run_as: Option<&crate::owner::RunAs>,
) -> Result<Active, String> {
    let mut active = Active {
        container_parent: task.container_parent.clone(),
        ..Active::default()
    };
    if let Some((cg, limits)) = &task.cgroup {
        cg.create(limits)?;
        active.cgroup = Some((cg.clone(), limits.memory_bytes));
    }
    if let Some(tmp) = &task.tmp {
        if let Err(e) = tmp.create(run_as) {
            active.discard();
            tmp.remove();
            return Err(e);
        }
    }
    Ok(active)
}

/// A started task's cgroup, read and removed when it ends.
#[derive(Debug, Default)]
pub struct Active {
    /// The cgroup and the memory limit written to it (0: none).
    cgroup: Option<(TaskCgroup, u64)>,
    /// A container task: podman's cgroups below this path go too.
    container_parent: Option<String>,
}

impl Active {
    /// The task never started: remove its cgroup.
    pub fn discard(self) {
        if let Some((cg, _)) = &self.cgroup {
            match &self.container_parent {
                Some(parent) => cg.remove_container_tree(parent),
                None => cg.remove(),
            }
        }
    }

    /// After the task's main process ended with `code` and `message` (and
    /// its group was killed): what its cgroup says, then kill what is left
    /// in the cgroup and remove it. Blocking (bounded): run off the async
    /// threads.
    pub fn finish(self, code: i32, message: &str) -> Ended {
        let Some((cg, limit)) = self.cgroup else {
            return Ended::default();
        };
        let usage = cg.usage();
        let mut hits = cg.limit_hits();
        let mut kills = cg.oom_kills();
        if let Some(parent) = &self.container_parent {
            // v1 counts the kill in the container's own cgroup, gone by
            // now: a SIGKILL after the limit was hit tells it instead. With
            // swap accounting the hit is not counted either, but the peak
            // shows it.
            kills = kills.filter(|&n| n > 0);
            if limit > 0 && usage.memory_peak_bytes >= limit {
                hits = Some(hits.unwrap_or(0).max(1));
            }
            cg.remove_container_tree(parent);
        } else {
            cg.remove();
        }
        let oom_message = oom_message(code, message, kills, hits, limit);
        Ended {
            usage: Some(usage),
            oom_message,
        }
    }
}

/// What a task's cgroup said when the task ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ended {
    /// `None`: the task had no cgroup.
    pub usage: Option<Usage>,
    /// Its memory limit killed it: the message it ends with.
    pub oom_message: Option<String>,
}

/// `64Mi`, `1Gi`, `1536Ki`; bytes that are no whole KiB as `1000B`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [(&str, u32); 5] = [("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];
    for (unit, shift) in UNITS {
        if n >= 1 << shift && n.trailing_zeros() >= shift {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n}B")
}

/// The message of a task that ended with exit `code` and `message` in a
/// cgroup that counted `oom_kills` (None: the kernel keeps no count) and
/// `limit_hits` (v1 `memory.failcnt`), under a memory limit of `limit`
/// bytes (0: none), when its limit killed it: it failed after the OOM
/// killer killed one of its processes, or (without a count) it was
/// SIGKILLed after hitting its limit. `None` otherwise. Pure.
pub fn oom_message(
    code: i32,
    message: &str,
    oom_kills: Option<u64>,
    limit_hits: Option<u64>,
    limit: u64,
) -> Option<String> {
    let killed = match oom_kills {
        Some(n) => n > 0,
        None => limit_hits.unwrap_or(0) > 0 && code == 128 + 9,
    };
    if code == 0 || limit == 0 || !killed {
        return None;
    }
    Some(format!(
        "OOMKilled: the task used more than its memory limit of {} ({message})",
        format_bytes(limit)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_are_named_with_the_limit() {
        let m = oom_message(137, "killed by SIGKILL (signal 9)", Some(1), None, 64 << 20);
        assert_eq!(
            m.as_deref(),
            Some(
                "OOMKilled: the task used more than its memory limit of 64Mi (killed by SIGKILL \
                 (signal 9))"
            )
        );
        // A shell whose child was killed exits with 137 itself.
        let m = oom_message(137, "exited with code 137", Some(2), None, 1 << 30).unwrap();
        assert!(m.starts_with("OOMKilled: "), "{m}");
        assert!(m.contains("limit of 1Gi"), "{m}");
        // Old v1 kernels: no count, the limit was hit and SIGKILL came.
        let m = oom_message(137, "killed by SIGKILL (signal 9)", None, Some(5), 1000).unwrap();
        assert!(m.contains("limit of 1000B"), "{m}");
    }

    #[test]
    fn other_ends_are_left_alone() {
        assert_eq!(oom_message(0, "", Some(1), None, 64 << 20), None);
        let failed = "exited with code 1";
        assert_eq!(oom_message(1, failed, Some(0), Some(3), 64 << 20), None);
        assert_eq!(oom_message(1, failed, Some(1), None, 0), None);
        let term = "killed by SIGTERM (signal 15)";
        assert_eq!(oom_message(143, term, None, Some(3), 64 << 20), None);
    }

    #[test]
    fn bytes_in_binary_units() {
        assert_eq!(format_bytes(64 << 20), "64Mi");
        assert_eq!(format_bytes(3 << 30), "3Gi");
        assert_eq!(format_bytes(1536 << 10), "1536Ki");
        assert_eq!(format_bytes(1000), "1000B");
        assert_eq!(format_bytes(0), "0B");
    }

    #[test]
    fn daemons_sharing_a_node_name_get_their_own_folders() {
        let a = instance_name("node-1", Path::new("/tmp/a/state/node-1"));
        let b = instance_name("node-1", Path::new("/tmp/b/state/node-1"));
        assert_ne!(a, b);
        assert_eq!(a, instance_name("node-1", Path::new("/tmp/a/state/node-1")));
        assert!(
            a.starts_with("node-1.") && a.len() == "node-1.".len() + 8,
            "{a}"
        );
    }

    #[test]
    fn modes_parse() {
        assert_eq!("auto".parse::<CgroupMode>(), Ok(CgroupMode::Auto));
        assert_eq!("off".parse::<CgroupMode>(), Ok(CgroupMode::Off));
        assert_eq!("required".parse::<CgroupMode>(), Ok(CgroupMode::Required));
        assert_eq!(
            "v2".parse::<CgroupMode>(),
            Err("expected auto, required or off, got \"v2\"".into())
        );
    }
}
