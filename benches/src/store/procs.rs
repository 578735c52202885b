//! Child processes a driver starts and must not leave behind: each writes
//! its output to a log file, and all are stopped (SIGTERM, then SIGKILL
//! after a grace period) by [`Children::stop`] or when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a child gets to exit after SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(10);

struct Proc {
    name: String,
    log: PathBuf,
    child: Child,
}

/// The processes of one cluster.
#[derive(Default)]
pub struct Children {
    procs: Vec<Proc>,
}

impl Children {
    /// Start `cmd` as `name`, its stdout and stderr into `log`.
    pub fn spawn(&mut self, name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<()> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name} ({})", cmd.get_program().display()))?;
        self.procs.push(Proc {
            name: name.to_string(),
            log: log.to_path_buf(),
            child,
        });
        Ok(())
    }

    /// An error naming the first child that has exited, and its log.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            if let Some(status) = p.child.try_wait()? {
                bail!("{} exited ({status}); see {}", p.name, p.log.display());
            }
        }
        Ok(())
    }

    /// SIGTERM to every child, then SIGKILL to those still running after
    /// the grace period.
    pub fn stop(&mut self) {
        for p in &self.procs {
            let pid = nix::unistd::Pid::from_raw(p.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_WITHIN;
        for mut p in self.procs.drain(..) {
            loop {
                match p.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `n` distinct free TCP ports on 127.0.0.1 (each listener is held until
/// all are chosen, then released for the child that will bind it).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding a free port on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Wait until `ready()` says yes, checking that the children still run;
/// an error naming `what` after `within`.
pub fn wait_until(
    children: &mut Children,
    what: &str,
    within: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !ready() {
        children.check_running()?;
        if Instant::now() > deadline {
            bail!("{what} not ready within {}s", within.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_differ() {
        let p = free_ports(6).unwrap();
        let mut q = p.clone();
        q.sort_unstable();
        q.dedup();
        assert_eq!(q.len(), 6, "{p:?}");
        assert!(p.iter().all(|&x| x != 0));
    }

    #[test]
    fn an_exited_child_is_named_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("false.log");
        let mut c = Children::default();
        c.spawn("member-x", Command::new("false"), &log).unwrap();
        let e = wait_until(&mut c, "member-x", Duration::from_secs(10), || false).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("member-x exited"), "{msg}");
        assert!(msg.contains("false.log"), "{msg}");
    }

    #[test]
    fn stop_ends_a_running_child() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Children::default();
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        c.spawn("sleeper", cmd, &dir.path().join("s.log")).unwrap();
        c.check_running().unwrap();
        c.stop();
        assert!(c.procs.is_empty());
    }
}
