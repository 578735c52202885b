//! Warm supervisors: a few `gpu-node supervise --warm` started before any
//! task needs them, each with its task's process already made and waiting
//! in a cgroup of its own ([`crate::warm`]). A task then starts without
//! the daemon's fork and exec of a supervisor, and without moving its
//! process into its cgroup (on v1 the waiting process's cgroup is renamed
//! to the task's), the two slow steps of a start.
//!
//! ```text
//!  fill ──spawn `supervise --warm [--pool-cgroup ..]`──► member: stub in .pool.<pid>.<n>,
//!       ◄── {"warm":"ready"} ─────────────────────────   waits on stdin
//!  launch: take a ready member, hand it WarmStart {dir, spec}; fill again
//!  close (daemon stops): stdin closed → member and stub exit, the cgroup goes
//! ```
//!
//! A member's standard input is its tie to the daemon: when the daemon
//! goes (stopped, or killed), it reads EOF and leaves with its waiting
//! process and cgroup. The cgroups of members that died otherwise are
//! removed when the daemon starts or stops
//! ([`crate::isolation::Isolation::remove_leftovers`]).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::record::WARM_READY;
use crate::isolation::Isolation;

/// How long a new member may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A ready member.
#[derive(Debug)]
pub struct Member {
    pub child: Child,
    pub stdin: ChildStdin,
    pub stdout: BufReader<ChildStdout>,
    pub pid: u32,
}

/// The daemon's warm supervisors.
#[derive(Debug)]
pub struct Pool {
    size: usize,
    exe: PathBuf,
    /// The flags every supervisor gets (`--lease`, `--fence-ms`,
    /// `--kill-grace-ms`).
    flags: Vec<String>,
    isolation: Arc<Isolation>,
    ready: Mutex<VecDeque<Member>>,
    starting: AtomicUsize,
    next: AtomicU64,
    closed: AtomicBool,
    /// A member that failed to start is said once.
    warned: AtomicBool,
}

impl Pool {
    /// A pool of `size` members started by `exe` with `flags`; none start
    /// before [`Pool::fill`].
    pub fn new(size: usize, exe: PathBuf, flags: Vec<String>, isolation: Arc<Isolation>) -> Pool {
        Pool {
            size,
            exe,
            flags,
            isolation,
            ready: Mutex::new(VecDeque::new()),
            starting: AtomicUsize::new(0),
            next: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            warned: AtomicBool::new(false),
        }
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, VecDeque<Member>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start members (in the background) up to the pool's size. Needs a
    /// tokio runtime; without one it does nothing.
    pub fn fill(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        while !self.closed.load(Ordering::SeqCst)
            && self.ready().len() + self.starting.load(Ordering::SeqCst) < self.size
        {
            self.starting.fetch_add(1, Ordering::SeqCst);
            let pool = self.clone();
            rt.spawn(async move {
                let started = pool.start_one().await;
                match started {
                    Ok(m) if !pool.closed.load(Ordering::SeqCst) => pool.ready().push_back(m),
                    // Its standard input closes: it leaves.
                    Ok(m) => drop(m),
                    Err(e) => {
                        if !pool.warned.swap(true, Ordering::SeqCst) {
                            tracing::warn!("a warm supervisor did not start: {e}");
                        }
                    }
                }
                pool.starting.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    async fn start_one(&self) -> Result<Member, String> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("supervise").arg("--warm").args(&self.flags);
        if let Some(cg) = self.isolation.pool_cgroup(n) {
            let json = serde_json::to_string(&cg).map_err(|e| e.to_string())?;
            cmd.arg("--pool-cgroup").arg(json);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("running {}: {e}", self.exe.display()))?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.start_kill();
            return Err("it has no pipes".into());
        };
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let said = tokio::time::timeout(READY_WITHIN, stdout.read_line(&mut line)).await;
        if !matches!(said, Ok(Ok(_))) || line.trim_end() != WARM_READY {
            drop(stdin);
            let _ = child.start_kill();
            return Err(format!(
                "supervisor {pid} said {line:?} instead of {WARM_READY}"
            ));
        }
        Ok(Member {
            child,
            stdin,
            stdout,
            pid,
        })
    }

    /// How many members are ready now.
    pub fn ready_len(&self) -> usize {
        self.ready().len()
    }

    /// A ready member, if there is one (and more are started).
    pub fn take(self: &Arc<Self>) -> Option<Member> {
        let member = loop {
            let Some(mut m) = self.ready().pop_front() else {
                break None;
            };
            if matches!(m.child.try_wait(), Ok(None)) {
                break Some(m);
            }
        };
        self.fill();
        member
    }

    /// Stop the members: each reads EOF and leaves with its waiting
    /// process and cgroup. Waits (bounded) for them to go.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let members: Vec<Member> = self.ready().drain(..).collect();
        for mut m in members {
            drop(m.stdin);
            let gone = tokio::time::timeout(Duration::from_secs(3), m.child.wait()).await;
            if gone.is_err() {
                let _ = m.child.start_kill();
            }
        }
    }
}
