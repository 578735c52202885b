//! A task's confinement made ready before it starts: its cgroup created
//! with its limits, its `/tmp` folder made, and what the child does
//! between fork and exec ([`HookSpec`], opened into a [`super::Hook`]).

use std::path::PathBuf;

use super::{cstring, prepare_container, Active, Hook, Mounts, TaskCgroup, TaskIsolation};

/// A task's cgroup and `/tmp` made ready, and the hook that puts the child
/// in them.
#[derive(Debug)]
pub struct Prepared {
    pub hook: Hook,
    /// What [`Active::finish`] reads and removes after the task.
    pub active: Active,
}

/// What the child does between fork and exec, as paths and numbers: what
/// [`HookSpec::open`] turns into a [`Hook`], in the process that forks, or
/// in a warm supervisor's waiting process ([`crate::warm`]) that execs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HookSpec {
    /// `cgroup.procs` files to write `0` to (empty: already in them).
    pub procs: Vec<PathBuf>,
    /// A mount namespace of its own.
    pub mounts: Option<MountSpec>,
    /// (groups, gid, uid) to switch to last.
    pub identity: Option<(Vec<u32>, u32, u32)>,
}

/// The mounts of a task's own mount namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountSpec {
    /// (source, target) binds, in order.
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// The folder bound on `/tmp` last.
    pub tmp: Option<PathBuf>,
}

impl HookSpec {
    /// Whether it does anything.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty() && self.mounts.is_none() && self.identity.is_none()
    }

    /// The hook: `cgroup.procs` files opened, paths as C strings.
    pub fn open(&self) -> Result<Hook, String> {
        let mut procs = Vec::new();
        for p in &self.procs {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .map_err(|e| format!("opening {}: {e}", p.display()))?;
            procs.push(f);
        }
        let mounts = match &self.mounts {
            None => None,
            Some(m) => {
                let mut binds = Vec::new();
                for (from, to) in &m.binds {
                    binds.push((cstring(from)?, cstring(to)?));
                }
                Some(Mounts {
                    binds,
                    tmp: m.tmp.as_deref().map(cstring).transpose()?,
                })
            }
        };
        let identity = self.identity.as_ref().map(|(groups, gid, uid)| {
            (
                groups
                    .iter()
                    .copied()
                    .map(nix::unistd::Gid::from_raw)
                    .collect(),
                nix::unistd::Gid::from_raw(*gid),
                nix::unistd::Uid::from_raw(*uid),
            )
        });
        Ok(Hook {
            procs,
            mounts,
            identity,
        })
    }
}

/// `task`'s cgroup created with its limits and its `/tmp` folder made (the
/// user's), and the hook for the child, which switches to `run_as` itself
/// (`uid`, `gid`, groups) after the steps that need root. On failure,
/// nothing is left behind.
pub fn prepare(
    task: &TaskIsolation,
    run_as: Option<&crate::owner::RunAs>,
) -> Result<Prepared, String> {
    let (spec, active) = prepare_spec(task, run_as, None)?;
    match spec.open() {
        Ok(hook) => Ok(Prepared { hook, active }),
        Err(e) => {
            active.discard();
            if let Some(tmp) = &task.tmp {
                tmp.remove();
            }
            Err(e)
        }
    }
}

/// A process made ahead of time for the task ([`crate::warm`]): it waits
/// in `pool` (a cgroup of its own, `None`: none), switches user itself
/// whenever the task changes user, and execs the task.
#[derive(Debug, Clone, Copy)]
pub struct Waiting<'a> {
    pub pool: Option<&'a TaskCgroup>,
}

/// [`prepare`] as paths and numbers. With a `waiting` process its pool
/// cgroup becomes the task's ([`TaskCgroup::take_over`]), so it has none
/// to join; should that fail, it joins the task's as any child would.
pub fn prepare_spec(
    task: &TaskIsolation,
    run_as: Option<&crate::owner::RunAs>,
    waiting: Option<Waiting<'_>>,
) -> Result<(HookSpec, Active), String> {
    let mut spec = HookSpec::default();
    let mut active = Active::default();
    if task.container_parent.is_some() {
        return prepare_container(task, run_as).map(|active| (spec, active));
    }
    if let Some((cg, limits)) = &task.cgroup {
        let taken = match waiting.and_then(|w| w.pool) {
            Some(pool) => match cg.take_over(pool) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("{e}: the task joins its cgroup as it starts");
                    false
                }
            },
            None => false,
        };
        cg.create(limits)?;
        active.cgroup = Some((cg.clone(), limits.memory_bytes));
        if !taken {
            spec.procs = cg.procs_files();
        }
    }
    if let Some(tmp) = &task.tmp {
        match tmp.create(run_as) {
            Ok(()) => {
                spec.mounts = Some(MountSpec {
                    binds: tmp.binds(),
                    tmp: Some(tmp.dir.clone()),
                })
            }
            Err(e) => {
                active.discard();
                tmp.remove();
                return Err(e);
            }
        }
    }
    let switch = spec.procs.len() + usize::from(spec.mounts.is_some()) > 0 || waiting.is_some();
    if let Some(r) = run_as.filter(|r| r.switch && switch) {
        let mut groups = r.groups.clone();
        if groups.is_empty() {
            groups.push(r.gid);
        }
        spec.identity = Some((groups, r.gid, r.uid));
    }
    Ok((spec, active))
}
