//! The child processes of `gpuctl dev`: starting each in its own process
//! group with its output in a log file, noticing when one exits, waiting for
//! its ready file, starting it again, and stopping them all (SIGTERM, then
//! SIGKILL). It knows nothing of schedulers or nodes.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};
use crate::render::{format_time, shell_join};

/// How long a child may take to write its ready file.
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long children get to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of a child's log shown when it fails.
pub(super) const LOG_TAIL_LINES: usize = 20;

/// The last `n` lines of a log file, indented, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return format!("    (cannot read {}: {e})", path.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    if tail.is_empty() {
        return "    (the log is empty)".into();
    }
    tail.iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One child process we started.
pub(super) struct Child {
    pub(super) label: String,
    pub(super) pid: i32,
    pub(super) log: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    /// Set (to how it ended) when the process exited.
    exited: watch::Receiver<Option<String>>,
}

impl Child {
    pub(super) fn exit_status(&self) -> Option<String> {
        self.exited.borrow().clone()
    }
}

/// The children and the channel that says when one exits.
pub(super) struct Supervisor {
    pub(super) children: Vec<Child>,
    exits_tx: mpsc::UnboundedSender<usize>,
    /// The index of each child that exits, as it exits.
    pub(super) exits: mpsc::UnboundedReceiver<usize>,
}

impl Supervisor {
    pub(super) fn new() -> Self {
        let (exits_tx, exits) = mpsc::unbounded_channel();
        Supervisor {
            children: Vec::new(),
            exits_tx,
            exits,
        }
    }

    pub(super) fn spawn(
        &mut self,
        label: &str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<usize> {
        let idx = self.children.len();
        let (pid, exited) = self.start_process(idx, program, args, &log)?;
        self.children.push(Child {
            label: label.to_string(),
            pid,
            log,
            program: program.to_path_buf(),
            args: args.to_vec(),
            exited,
        });
        Ok(idx)
    }

    /// Start child `idx` again with the same program, arguments and log.
    pub(super) fn respawn(&mut self, idx: usize) -> Result<i32> {
        let c = &self.children[idx];
        let (program, args, log) = (c.program.clone(), c.args.clone(), c.log.clone());
        let (pid, exited) = self.start_process(idx, &program, &args, &log)?;
        let c = &mut self.children[idx];
        c.pid = pid;
        c.exited = exited;
        Ok(pid)
    }

    /// Spawn a process that reports its exit as `idx` on the exits channel.
    fn start_process(
        &self,
        idx: usize,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<(i32, watch::Receiver<Option<String>>)> {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(format!("cannot open {}", log.display()), e))?;
        let _ = writeln!(
            file,
            "==> {} gpuctl dev: starting {} {}",
            format_time(gpuctl_common::now_ms()),
            program.display(),
            shell_join(args)
        );
        let stderr = file
            .try_clone()
            .map_err(|e| Error::io(format!("cannot open {}", log.display()), e))?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .process_group(0);
        let mut child = tokio::process::Command::from(cmd)
            .spawn()
            .map_err(|e| Error::io(format!("cannot start {}", program.display()), e))?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let (tx, rx) = watch::channel(None);
        let exits_tx = self.exits_tx.clone();
        tokio::spawn(async move {
            let how = match child.wait().await {
                Ok(st) => st.to_string(),
                Err(e) => format!("unknown exit ({e})"),
            };
            let _ = tx.send(Some(how));
            let _ = exits_tx.send(idx);
        });
        Ok((pid, rx))
    }

    /// An error when any child has exited, naming it with its log tail.
    pub(super) fn check_alive(&self) -> Result<()> {
        for c in &self.children {
            if let Some(how) = c.exit_status() {
                return Err(Error::Other(format!(
                    "{} (pid {}) exited ({how}); the end of {}:\n{}",
                    c.label,
                    c.pid,
                    c.log.display(),
                    log_tail(&c.log, LOG_TAIL_LINES)
                )));
            }
        }
        Ok(())
    }

    /// Wait for child `idx` to write its ready file; return its JSON.
    pub(super) async fn wait_ready(&self, idx: usize, path: &Path) -> Result<Value> {
        let c = &self.children[idx];
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    if v.is_object() {
                        return Ok(v);
                    }
                }
            }
            self.check_alive()?;
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Other(format!(
                    "{} did not write {} within {}s; the end of {}:\n{}",
                    c.label,
                    path.display(),
                    READY_TIMEOUT.as_secs(),
                    c.log.display(),
                    log_tail(&c.log, LOG_TAIL_LINES)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal_all(&self, sig: Signal) {
        // Nodes (started last) first, so they stop before their scheduler.
        for c in self.children.iter().rev() {
            if c.exit_status().is_none() && c.pid > 0 {
                let _ = kill(Pid::from_raw(c.pid), sig);
            }
        }
    }

    async fn all_exited_within(&self, d: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            if self.children.iter().all(|c| c.exit_status().is_some()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM every child, wait up to [`STOP_GRACE`], then SIGKILL.
    pub(super) async fn shutdown(&self) {
        self.signal_all(Signal::SIGTERM);
        if !self.all_exited_within(STOP_GRACE).await {
            for c in &self.children {
                if c.exit_status().is_none() {
                    eprintln!(
                        "gpuctl dev: {} (pid {}) did not stop within {}s; killing it",
                        c.label,
                        c.pid,
                        STOP_GRACE.as_secs()
                    );
                }
            }
            self.signal_all(Signal::SIGKILL);
            self.all_exited_within(Duration::from_secs(2)).await;
        }
    }
}

/// A ready file's JSON object, once it is complete.
pub(super) fn read_ready(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str::<Value>(&text)
        .ok()
        .filter(Value::is_object)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_shows_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let t = log_tail(&p, 3);
        assert_eq!(t, "    line 28\n    line 29\n    line 30");
    }

    #[tokio::test]
    async fn supervisor_reports_an_early_exit_and_stops_children() {
        let dir = tempfile::tempdir().unwrap();
        let mut sup = Supervisor::new();
        let sh = Path::new("/bin/sh");
        let dies = sup
            .spawn(
                "dies",
                sh,
                &["-c".into(), "echo boom; exit 3".into()],
                dir.path().join("d.log"),
            )
            .unwrap();
        let e = sup
            .wait_ready(dies, &dir.path().join("never.json"))
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("dies") && msg.contains("boom") && msg.contains('3'),
            "{msg}"
        );

        let mut sup = Supervisor::new();
        sup.spawn(
            "sleeper",
            sh,
            &["-c".into(), "exec sleep 30".into()],
            dir.path().join("s.log"),
        )
        .unwrap();
        let started = std::time::Instant::now();
        sup.shutdown().await;
        assert!(sup.children[0].exit_status().is_some());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_child_can_be_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut sup = Supervisor::new();
        let idx = sup
            .spawn(
                "once",
                Path::new("/bin/sh"),
                &["-c".into(), "echo run; exit 0".into()],
                dir.path().join("o.log"),
            )
            .unwrap();
        assert_eq!(sup.exits.recv().await, Some(idx));
        let first = sup.children[idx].pid;
        let pid = sup.respawn(idx).unwrap();
        assert_ne!(pid, first);
        assert_eq!(sup.exits.recv().await, Some(idx));
        assert!(sup.children[idx].exit_status().is_some());
        let log = std::fs::read_to_string(dir.path().join("o.log")).unwrap();
        assert_eq!(log.matches("run\n").count(), 2, "{log}");
    }
}
