//! Helpers shared by the end-to-end tests that drive the real binaries.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod gateway;

/// The `gpuctl` binary under test; `gpu-scheduler` and `gpu-node` sit beside it.
pub fn gpuctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gpuctl"))
}

pub fn require_binaries() {
    let dir = gpuctl_bin().parent().unwrap().to_path_buf();
    for b in ["gpu-scheduler", "gpu-node"] {
        assert!(
            dir.join(b).exists(),
            "{b} is not built next to gpuctl in {}; run `cargo build --bins` or `cargo test --workspace`",
            dir.display()
        );
    }
}

/// Poll `f` until it returns Some, for at most `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGINT a `gpuctl dev` child as Ctrl-C would, wait up to `grace`, then
/// SIGKILL it. Returns whether it stopped on its own.
pub fn interrupt(child: &mut Child, grace: Duration) -> bool {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// A `gpuctl dev` cluster in a folder of its own (state in `state/`, the
/// CLI context in `config/`, everything it prints in `dev.log`), stopped
/// like Ctrl-C on drop. Test files wrap it for their own helpers.
pub struct DevCluster {
    child: Option<Child>,
    root: tempfile::TempDir,
}

impl DevCluster {
    /// `gpuctl dev --state-dir ROOT/state ARGS`, ready once it wrote the
    /// context (at most `ready_within`).
    pub fn start(root: tempfile::TempDir, args: &[&str], ready_within: Duration) -> DevCluster {
        require_binaries();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.path().join("dev.log"))
            .unwrap();
        let config = root.path().join("config");
        let _ = std::fs::remove_file(config.join("context.json"));
        let child = Command::new(gpuctl_bin())
            .arg("dev")
            .arg("--state-dir")
            .arg(root.path().join("state"))
            .args(args)
            .env("GPUCTL_CONFIG_DIR", &config)
            .env_remove("GPUCTL_SERVER")
            .env_remove("GPUCTL_TOKEN")
            // Nodes look for deleted workflows' artifacts every second (not
            // every 5 minutes), so tests see them go.
            .env("GPUCTL_ARTIFACT_SWEEP", "1s")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn gpuctl dev");
        let mut dev = DevCluster {
            child: Some(child),
            root,
        };
        let ctx = config.join("context.json");
        let deadline = Instant::now() + ready_within;
        while !ctx.exists() {
            if let Some(status) = dev.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("gpuctl dev exited early ({status}):\n{}", dev.log());
            }
            assert!(
                Instant::now() < deadline,
                "gpuctl dev not ready in {ready_within:?}:\n{}",
                dev.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        dev
    }

    pub fn dir(&self) -> &Path {
        self.root.path()
    }

    pub fn config(&self) -> PathBuf {
        self.dir().join("config")
    }

    pub fn state(&self) -> PathBuf {
        self.dir().join("state")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("dev.log")).unwrap_or_default()
    }

    /// `gpuctl ARGS` against this cluster (found through its context).
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(gpuctl_bin())
            .args(args)
            .env("GPUCTL_CONFIG_DIR", self.config())
            .env_remove("GPUCTL_SERVER")
            .env_remove("GPUCTL_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("run gpuctl")
    }

    /// [`DevCluster::run`] that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "gpuctl {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndev log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl DevCluster {
    /// Scheduler replica id → pid, from the `cluster.json` `gpuctl dev` writes.
    pub fn scheduler_pids(&self) -> std::collections::BTreeMap<u64, i32> {
        let text = std::fs::read_to_string(self.state().join("cluster.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["schedulers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["id"].as_u64().unwrap(), s["pid"].as_i64().unwrap() as i32))
            .collect()
    }

    /// SIGKILL scheduler replica `id` (`gpuctl dev` restarts it later).
    pub fn kill_scheduler(&self, id: u64) {
        let pid = self.scheduler_pids()[&id];
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
}

impl DevCluster {
    /// Stop like Ctrl-C does (it must exit 0 within 20 s), and hand back
    /// the folder, e.g. to start again on the same state.
    pub fn stop(mut self) -> tempfile::TempDir {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = c.try_wait() {
                    assert!(status.success(), "gpuctl dev after SIGINT: {status}");
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!(
                        "gpuctl dev did not stop within 20s of SIGINT:\n{}",
                        self.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        std::mem::replace(&mut self.root, tempfile::tempdir().unwrap())
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            interrupt(&mut c, Duration::from_secs(20));
        }
        // A failed test shows how its cluster ended: the tail of every log.
        if std::thread::panicking() {
            self.print_log_tails(60);
        }
    }
}

impl DevCluster {
    /// The last `lines` lines of `gpuctl dev`'s log and of each process's log
    /// (`STATE/logs`: schedulers, nodes, gateway), to standard error.
    fn print_log_tails(&self, lines: usize) {
        let mut logs = vec![self.dir().join("dev.log")];
        let mut own: Vec<PathBuf> = std::fs::read_dir(self.state().join("logs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        own.sort();
        logs.extend(own);
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            eprintln!("==> {} (last {} lines) <==", log.display(), tail.len());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}
