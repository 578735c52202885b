//! cgroupfs, v1 and v2, written by hand (see the module docs of
//! [`crate::isolation`] for why not a crate).
//!
//! Task cgroups are made below the daemon's own cgroup of each controller,
//! never at a hierarchy's root: `<own>/gpuctl/<node>/<job>-<index>-<attempt>`.
//! A daemon that itself runs in a container or a systemd unit thereby stays
//! inside what it was given.
//!
//! Which layout a host has is decided from `/proc/self/mountinfo` and
//! `/proc/self/cgroup` ([`Layout::from_proc`], pure): a v1 `memory`
//! hierarchy wins (hybrid hosts mount v1 controllers next to an unified
//! hierarchy that has none), else the unified (v2) hierarchy when the
//! daemon's cgroup offers `memory`, `cpu` and `pids`.
//!
//! On v2 the controllers are enabled down from the daemon's own cgroup;
//! since a cgroup that holds processes cannot enable them for its children,
//! a daemon alone in its cgroup (a systemd unit with `Delegate=yes`) first
//! moves itself into a leaf `<own>/gpu-node`. The v1 path runs in this
//! crate's tests (hybrid hosts); the v2 path is covered by the layout's
//! unit tests only.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the daemon's own cgroups are: what task cgroups are made under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// The unified hierarchy: one folder for every controller.
    V2 { own: PathBuf },
    /// One hierarchy per controller (or per co-mounted set such as
    /// `cpu,cpuacct`); `None`: that controller is not mounted.
    V1 {
        memory: PathBuf,
        cpu: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
        pids: Option<PathBuf>,
        devices: Option<PathBuf>,
    },
}

/// One line of `/proc/self/mountinfo`, the parts used here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The folder of the hierarchy that is mounted (`/` unless a cgroup
    /// namespace or a bind mount shows only part of it).
    pub root: String,
    pub point: PathBuf,
    pub fstype: String,
    pub super_options: Vec<String>,
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup mounts of a mountinfo text; other lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < dash + 4 || dash < 6 {
            continue;
        }
        let fstype = fields[dash + 1];
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        out.push(Mount {
            root: unescape(fields[3]),
            point: PathBuf::from(unescape(fields[4])),
            fstype: fstype.to_string(),
            super_options: fields[dash + 3].split(',').map(str::to_string).collect(),
        });
    }
    out
}

/// `/proc/self/cgroup` lines: (controllers, path); v2's line has no
/// controllers.
pub fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let controllers = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some((controllers, path.to_string()))
        })
        .collect()
}

/// `path` (a cgroup path as `/proc/self/cgroup` gives it) seen through a
/// mount of `root` at `point`.
fn through(point: &Path, root: &str, path: &str) -> Option<PathBuf> {
    let rel = if root == "/" {
        path.trim_start_matches('/')
    } else {
        let rest = path.strip_prefix(root)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest.trim_start_matches('/')
    };
    Some(if rel.is_empty() {
        point.to_path_buf()
    } else {
        point.join(rel)
    })
}

impl Layout {
    /// The layout from mountinfo and `/proc/self/cgroup` texts;
    /// `v2_controllers` reads a v2 folder's `cgroup.controllers`. Pure
    /// apart from that reader.
    pub fn from_proc(
        mountinfo: &str,
        proc_cgroup: &str,
        v2_controllers: impl Fn(&Path) -> Option<String>,
    ) -> Result<Layout, String> {
        let mounts = parse_mountinfo(mountinfo);
        let cgroups = parse_proc_cgroup(proc_cgroup);
        let v1 = |controller: &str| -> Option<PathBuf> {
            let m = mounts.iter().find(|m| {
                m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller)
            })?;
            let (_, path) = cgroups
                .iter()
                .find(|(cs, _)| cs.iter().any(|c| c == controller))?;
            through(&m.point, &m.root, path)
        };
        if let Some(memory) = v1("memory") {
            return Ok(Layout::V1 {
                memory,
                cpu: v1("cpu"),
                cpuacct: v1("cpuacct"),
                pids: v1("pids"),
                devices: v1("devices"),
            });
        }
        let Some(m) = mounts.iter().find(|m| m.fstype == "cgroup2") else {
            return Err("no cgroup hierarchy with the memory controller is mounted".into());
        };
        let Some((_, path)) = cgroups.iter().find(|(cs, _)| cs.is_empty()) else {
            return Err("/proc/self/cgroup has no cgroup v2 line".into());
        };
        let own = through(&m.point, &m.root, path).ok_or_else(|| {
            format!(
                "this process's cgroup {path:?} is outside the cgroup2 mount at {:?}",
                m.point
            )
        })?;
        let offered = v2_controllers(&own).unwrap_or_default();
        let offered: Vec<&str> = offered.split_whitespace().collect();
        let missing: Vec<&str> = ["memory", "cpu", "pids"]
            .into_iter()
            .filter(|c| !offered.contains(c))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the cgroup v2 folder {own:?} does not offer the {} controller(s) \
                 (cgroup.controllers: {:?})",
                missing.join(", "),
                offered.join(" ")
            ));
        }
        Ok(Layout::V2 { own })
    }

    /// This process's layout.
    pub fn detect() -> Result<Layout, String> {
        let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("reading {p}: {e}"));
        Layout::from_proc(
            &read("/proc/self/mountinfo")?,
            &read("/proc/self/cgroup")?,
            |dir| std::fs::read_to_string(dir.join("cgroup.controllers")).ok(),
        )
    }

    /// The cgroup of one task: `<own>/gpuctl/<node>/<name>` per controller.
    pub fn task(&self, node: &str, name: &str) -> TaskCgroup {
        let under = |own: &Path| own.join("gpuctl").join(node).join(name);
        match self {
            Layout::V2 { own } => TaskCgroup {
                v2: true,
                memory: under(own),
                cpu: Some(under(own)),
                cpuacct: None,
                pids: Some(under(own)),
                devices: None,
                v2_own: Some(own.clone()),
            },
            Layout::V1 {
                memory,
                cpu,
                cpuacct,
                pids,
                devices,
            } => TaskCgroup {
                v2: false,
                memory: under(memory),
                cpu: cpu.as_deref().map(under),
                cpuacct: cpuacct.as_deref().map(under),
                pids: pids.as_deref().map(under),
                devices: devices.as_deref().map(under),
                v2_own: None,
            },
        }
    }

    /// The cgroup of a task that runs in a container, and the path podman
    /// is given as `--cgroup-parent` (podman's cgroupfs manager makes it, and
    /// the container's cgroup below it, in every hierarchy). On v2 it is
    /// the task's usual cgroup, named relative to the cgroup2 mount at
    /// `/sys/fs/cgroup`; on v1, where a daemon's controllers may sit at
    /// different paths, it is `/gpuctl/<node>/<name>` from the root of each
    /// hierarchy under `/sys/fs/cgroup/<controller>`. `None` when the
    /// layout has no such path.
    pub fn container_task(&self, node: &str, name: &str) -> Option<(TaskCgroup, String)> {
        let root = Path::new("/sys/fs/cgroup");
        match self {
            Layout::V2 { .. } => {
                let task = self.task(node, name);
                let rel = task.memory.strip_prefix(root).ok()?;
                Some((task.clone(), format!("/{}", rel.display())))
            }
            Layout::V1 {
                memory,
                cpu,
                cpuacct,
                pids,
                ..
            } => {
                let rel = Path::new("gpuctl").join(node).join(name);
                // `/sys/fs/cgroup/<hierarchy>` of a controller's folder.
                let at = |dir: &Path| -> Option<PathBuf> {
                    let h = dir.strip_prefix(root).ok()?.components().next()?;
                    Some(root.join(h).join(&rel))
                };
                let task = TaskCgroup {
                    v2: false,
                    memory: at(memory)?,
                    cpu: cpu.as_deref().and_then(at),
                    cpuacct: cpuacct.as_deref().and_then(at),
                    pids: pids.as_deref().and_then(at),
                    devices: None,
                    v2_own: None,
                };
                Some((task, format!("/{}", rel.display())))
            }
        }
    }

    /// The folders this daemon's task cgroups of `node` live in (each
    /// controller's `<own>/gpuctl/<node>`).
    pub fn node_dirs(&self, node: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = match self {
            Layout::V2 { own } => vec![own.clone()],
            Layout::V1 {
                memory,
                cpu,
                cpuacct,
                pids,
                devices,
            } => std::iter::once(memory.clone())
                .chain([cpu, cpuacct, pids, devices].into_iter().flatten().cloned())
                .collect(),
        };
        out.sort();
        out.dedup();
        out.into_iter()
            .map(|d| d.join("gpuctl").join(node))
            .collect()
    }

    /// A short description for the daemon's start message.
    pub fn describe(&self) -> String {
        match self {
            Layout::V2 { own } => format!("cgroup v2 under {}", own.display()),
            Layout::V1 { memory, .. } => {
                format!("cgroup v1 (memory under {})", memory.display())
            }
        }
    }
}

/// What a task cgroup is set to; 0 means no limit of that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub pids_max: u64,
    /// v1 `devices.deny` then `devices.allow` lines.
    pub devices: Option<super::devices::Rules>,
}

/// The CFS period; a quota of `cpu_milli` thousandths of a CPU is that much
/// of it (at least the kernel's minimum of 1 ms).
pub const CFS_PERIOD_US: u64 = 100_000;

/// `cpu.cfs_quota_us` (v1) or the first field of `cpu.max` (v2).
pub fn cfs_quota_us(cpu_milli: u64) -> u64 {
    (cpu_milli.saturating_mul(CFS_PERIOD_US) / 1000).max(1000)
}

/// One task's cgroup folders (the same folder for every controller on v2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskCgroup {
    pub v2: bool,
    pub memory: PathBuf,
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    pub devices: Option<PathBuf>,
    /// v2: the daemon's own cgroup, where controllers are enabled for
    /// the folders below it.
    v2_own: Option<PathBuf>,
}

/// CPU time and memory a task used, read from its cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// CPU time of every process of the task, in milliseconds.
    pub cpu_ms: u64,
    /// Memory charged to the task now (at exit: what was left).
    pub memory_bytes: u64,
    /// The most memory charged at any time; 0 where the kernel keeps no
    /// peak (v2 before Linux 5.19).
    pub memory_peak_bytes: u64,
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat keyed file (`memory.events`, `cpu.stat`,
/// `memory.oom_control`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl TaskCgroup {
    /// Each distinct folder once.
    pub fn dirs(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = std::iter::once(self.memory.as_path())
            .chain(
                [&self.cpu, &self.cpuacct, &self.pids, &self.devices]
                    .into_iter()
                    .flatten()
                    .map(PathBuf::as_path),
            )
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The `cgroup.procs` files a process writes `0` to, to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// v2: enable `memory cpu pids` for the folders from the daemon's own
    /// cgroup down to the task's parent. The daemon's own cgroup may hold
    /// no process then (the "no internal processes" rule): the daemon moves
    /// itself into a leaf `<own>/gpu-node` first when it is alone there.
    fn enable_v2(&self) -> Result<(), String> {
        let Some(own) = &self.v2_own else {
            return Ok(());
        };
        let enable = |dir: &Path| {
            let current =
                std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
            let want: Vec<&str> = ["memory", "cpu", "pids"]
                .into_iter()
                .filter(|c| !current.split_whitespace().any(|x| x == *c))
                .collect();
            if want.is_empty() {
                return Ok(());
            }
            let line: Vec<String> = want.iter().map(|c| format!("+{c}")).collect();
            write(&dir.join("cgroup.subtree_control"), &line.join(" "))
        };
        if enable(own).is_err() {
            let procs = std::fs::read_to_string(own.join("cgroup.procs")).unwrap_or_default();
            let me = std::process::id().to_string();
            let others: Vec<&str> = procs.lines().filter(|p| p.trim() != me).collect();
            if !others.is_empty() {
                return Err(format!(
                    "cannot enable the memory, cpu and pids controllers below {}: it holds \
                     other processes ({}); give the daemon a cgroup of its own (systemd: \
                     Delegate=yes)",
                    own.display(),
                    others.join(", ")
                ));
            }
            let leaf = own.join("gpu-node");
            std::fs::create_dir_all(&leaf)
                .map_err(|e| format!("creating {}: {e}", leaf.display()))?;
            write(&leaf.join("cgroup.procs"), &me)?;
            enable(own)?;
        }
        let mut dir = own.clone();
        let parent = self.memory.parent().unwrap_or(own);
        for part in parent
            .strip_prefix(own)
            .unwrap_or(Path::new(""))
            .components()
        {
            dir.push(part);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            enable(&dir)?;
        }
        Ok(())
    }

    /// Create the folders and write `limits`; on failure what was made is
    /// removed again.
    pub fn create(&self, limits: &Limits) -> Result<(), String> {
        let result = self.try_create(limits);
        if result.is_err() {
            self.remove();
        }
        result
    }

    fn try_create(&self, limits: &Limits) -> Result<(), String> {
        if self.v2 {
            self.enable_v2()?;
        }
        for dir in self.dirs() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("creating cgroup {}: {e}", dir.display()))?;
        }
        if self.v2 {
            let d = &self.memory;
            if limits.memory_bytes > 0 {
                write(&d.join("memory.max"), &limits.memory_bytes.to_string())?;
                // Swap would let a task go past its limit unseen.
                let _ = write(&d.join("memory.swap.max"), "0");
            }
            // An OOM kill ends the whole task, not one process of it.
            let _ = write(&d.join("memory.oom.group"), "1");
            if limits.cpu_milli > 0 {
                let quota = cfs_quota_us(limits.cpu_milli);
                write(&d.join("cpu.max"), &format!("{quota} {CFS_PERIOD_US}"))?;
            }
            if limits.pids_max > 0 {
                write(&d.join("pids.max"), &limits.pids_max.to_string())?;
            }
            if let Some(rules) = &limits.devices {
                let guard = super::bpf::Guard {
                    major: super::devices::NVIDIA_MAJOR,
                    minors: rules.minors.clone(),
                };
                super::bpf::guard(d, &[guard])?;
            }
            return Ok(());
        }
        if limits.memory_bytes > 0 {
            let v = limits.memory_bytes.to_string();
            write(&self.memory.join("memory.limit_in_bytes"), &v)?;
            let memsw = self.memory.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &v)?;
            }
        }
        if let (Some(d), true) = (&self.cpu, limits.cpu_milli > 0) {
            write(&d.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
            write(
                &d.join("cpu.cfs_quota_us"),
                &cfs_quota_us(limits.cpu_milli).to_string(),
            )?;
        }
        if let (Some(d), true) = (&self.pids, limits.pids_max > 0) {
            write(&d.join("pids.max"), &limits.pids_max.to_string())?;
        }
        if let (Some(d), Some(rules)) = (&self.devices, &limits.devices) {
            for line in &rules.deny {
                write(&d.join("devices.deny"), line)?;
            }
            for line in &rules.allow {
                write(&d.join("devices.allow"), line)?;
            }
        }
        Ok(())
    }

    /// Rename `pool`'s folders (a warm process's cgroup, with nothing set)
    /// to this task's, in the same parents: what is in it is then in the
    /// task's cgroup without moving (moving a process between v1 cgroups
    /// waits in the kernel). v1 only: cgroup v2 refuses renames. On failure
    /// the folders renamed so far get their names back.
    pub fn take_over(&self, pool: &TaskCgroup) -> Result<(), String> {
        let (from, to) = (pool.dirs(), self.dirs());
        if self.v2 || pool.v2 || from.len() != to.len() {
            return Err(format!(
                "cannot rename cgroup {} to {}: not a v1 cgroup of the same controllers",
                pool.memory.display(),
                self.memory.display()
            ));
        }
        for (i, (f, t)) in from.iter().zip(&to).enumerate() {
            if let Err(e) = std::fs::rename(f, t) {
                for (f, t) in from.iter().zip(&to).take(i) {
                    let _ = std::fs::rename(t, f);
                }
                return Err(format!(
                    "cannot rename cgroup {} to {}: {e}",
                    f.display(),
                    t.display()
                ));
            }
        }
        Ok(())
    }

    /// How many times the kernel's OOM killer killed a process of the task.
    pub fn oom_kills(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        keyed(
            &std::fs::read_to_string(self.memory.join(file)).ok()?,
            "oom_kill",
        )
    }

    /// v1 kernels before 4.13 have no `oom_kill` count: how often the limit
    /// was hit.
    pub fn limit_hits(&self) -> Option<u64> {
        if self.v2 {
            return None;
        }
        // With swap accounting the memory+swap limit (set to the same
        // value) is checked first, and counts the hit instead.
        let memory = read_u64(&self.memory.join("memory.failcnt"));
        let memsw = read_u64(&self.memory.join("memory.memsw.failcnt"));
        match (memory, memsw) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        }
    }

    /// What the task has used so far.
    pub fn usage(&self) -> Usage {
        if self.v2 {
            let stat = std::fs::read_to_string(self.memory.join("cpu.stat")).unwrap_or_default();
            return Usage {
                cpu_ms: keyed(&stat, "usage_usec").unwrap_or(0) / 1000,
                memory_bytes: read_u64(&self.memory.join("memory.current")).unwrap_or(0),
                memory_peak_bytes: read_u64(&self.memory.join("memory.peak")).unwrap_or(0),
            };
        }
        let cpu_ns = self
            .cpuacct
            .as_ref()
            .and_then(|d| read_u64(&d.join("cpuacct.usage")))
            .unwrap_or(0);
        Usage {
            cpu_ms: cpu_ns / 1_000_000,
            memory_bytes: read_u64(&self.memory.join("memory.usage_in_bytes")).unwrap_or(0),
            memory_peak_bytes: read_u64(&self.memory.join("memory.max_usage_in_bytes"))
                .unwrap_or(0),
        }
    }

    /// The processes still in the task's cgroups.
    pub fn pids(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self
            .procs_files()
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A container task's cgroup (see [`Layout::container_task`]): podman
    /// made the folder `parent` in every hierarchy, with the container's
    /// and its monitor's cgroups below it. Kill what is left in each and
    /// remove them all, deepest first, then the node's and gpuctl's
    /// folders above when empty. Bounded.
    pub fn remove_container_tree(&self, parent: &str) {
        remove_container_tree(parent, self.v2);
    }

    /// SIGKILL whatever is left in the cgroup, then remove its folders.
    /// Bounded: gives up (and says so) after about two seconds.
    pub fn remove(&self) {
        if self.v2 {
            let _ = write(&self.memory.join("cgroup.kill"), "1");
        }
        for _ in 0..200 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                if pid > 1 {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for dir in self.dirs() {
            let mut removed = false;
            for _ in 0..50 {
                match std::fs::remove_dir(dir) {
                    Ok(()) => {
                        removed = true;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        removed = true;
                        break;
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
            if !removed {
                tracing::warn!("cannot remove the task cgroup {}", dir.display());
            }
        }
    }
}

/// [`TaskCgroup::remove_container_tree`], for a container task whose
/// cgroup is known only by its `--cgroup-parent` (`v2`: the unified
/// hierarchy at `/sys/fs/cgroup`).
pub fn remove_container_tree(parent: &str, v2: bool) {
    let root = Path::new("/sys/fs/cgroup");
    let rel = parent.trim_start_matches('/');
    let mut tops = vec![root.join(rel)];
    if !v2 {
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    tops.push(e.path().join(rel));
                }
            }
        }
    }
    for top in tops.iter().filter(|t| t.is_dir()) {
        let mut dirs = Vec::new();
        collect_dirs(top, &mut dirs, 0);
        // Children before their parents.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in &dirs {
            let leaf = TaskCgroup {
                v2,
                memory: d.clone(),
                cpu: None,
                cpuacct: None,
                pids: None,
                devices: None,
                v2_own: None,
            };
            leaf.remove();
        }
        for up in top.ancestors().skip(1).take(2) {
            let _ = std::fs::remove_dir(up);
        }
    }
}

/// `dir` and the folders below it (at most 4 levels, 256 folders).
fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if out.len() >= 256 {
        return;
    }
    out.push(dir.to_path_buf());
    if depth >= 4 {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out, depth + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
25 20 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
29 25 0:26 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
30 25 0:27 /docker/abc /sys/fs/cgroup/devices rw,nosuid - cgroup cgroup rw,devices
31 20 8:1 / /my\\040disk rw - ext4 /dev/sda1 rw
";
    const HYBRID_CGROUP: &str = "\
5:devices:/docker/abc/inner
4:memory:/process_api/x1
3:cpu,cpuacct:/
2:pids:/
0::/
";

    #[test]
    fn hybrid_hosts_use_v1_below_the_daemons_own_cgroups() {
        let layout = Layout::from_proc(HYBRID_MOUNTS, HYBRID_CGROUP, |_| None).unwrap();
        assert_eq!(
            layout,
            Layout::V1 {
                memory: "/sys/fs/cgroup/memory/process_api/x1".into(),
                cpu: Some("/sys/fs/cgroup/cpu,cpuacct".into()),
                cpuacct: Some("/sys/fs/cgroup/cpu,cpuacct".into()),
                pids: Some("/sys/fs/cgroup/pids".into()),
                // A mount of part of the hierarchy: its root is left out.
                devices: Some("/sys/fs/cgroup/devices/inner".into()),
            }
        );
        let t = layout.task("n1", "train-0-1");
        assert_eq!(
            t.memory,
            Path::new("/sys/fs/cgroup/memory/process_api/x1/gpuctl/n1/train-0-1")
        );
        // cpu and cpuacct share one folder: it is joined once.
        assert_eq!(t.procs_files().len(), 4);
        assert_eq!(
            layout.node_dirs("n1")[0],
            Path::new("/sys/fs/cgroup/cpu,cpuacct/gpuctl/n1")
        );
    }

    #[test]
    fn pure_v2_needs_its_controllers() {
        let mounts = "25 20 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let cg = "0::/system.slice/gpu-node.service\n";
        let layout = Layout::from_proc(mounts, cg, |dir| {
            assert_eq!(
                dir,
                Path::new("/sys/fs/cgroup/system.slice/gpu-node.service")
            );
            Some("cpuset cpu io memory pids\n".into())
        })
        .unwrap();
        let t = layout.task("n1", "j-0-1");
        assert!(t.v2);
        assert_eq!(t.dirs().len(), 1);
        let e = Layout::from_proc(mounts, cg, |_| Some("cpu io".into())).unwrap_err();
        assert_eq!(
            e,
            "the cgroup v2 folder \"/sys/fs/cgroup/system.slice/gpu-node.service\" does not \
             offer the memory, pids controller(s) (cgroup.controllers: \"cpu io\")"
        );
        let e = Layout::from_proc("", cg, |_| None).unwrap_err();
        assert_eq!(
            e,
            "no cgroup hierarchy with the memory controller is mounted"
        );
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        let m = parse_mountinfo("31 20 8:1 / /a\\040b rw - cgroup cgroup rw,pids\n");
        assert_eq!(m[0].point, Path::new("/a b"));
    }

    #[test]
    fn quotas_and_keyed_files() {
        assert_eq!(cfs_quota_us(500), 50_000);
        assert_eq!(cfs_quota_us(2000), 200_000);
        assert_eq!(cfs_quota_us(1), 1000, "the kernel's minimum");
        let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(keyed(oom, "oom_kill"), Some(2));
        assert_eq!(keyed(oom, "oom"), None);
    }
}
