//! End to end with a replicated control plane: `gpuctl dev --replicas 3`
//! starts three real `gpu-scheduler` replicas and a `gpu-node`; the test
//! kills the Raft leader five times (SIGKILL), then every replica at once, while a background thread keeps
//! submitting jobs through the `gpuctl` binary, and checks that every
//! acknowledged submission survives exactly once, that every job runs to
//! completion, that the replicas converge, and that all of it is still there
//! after a restart of the whole cluster.
//!
//! The binaries must sit next to `gpuctl` (`cargo build --bins`).

mod support;
use support::{eventually, gpuctl_bin, require_binaries};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpuctl_common::api::{Job, JobPhase};
use serde_json::Value;

const DEV_ARGS: &[&str] = &[
    "--replicas",
    "3",
    "--gpus",
    "4xA100-80GB",
    "--restart-delay",
    "500ms",
];

/// What one `gpuctl` run gave.
#[derive(Debug, Clone)]
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Run `gpuctl ARGS` with the context in `config`, killed after `limit`.
fn gpuctl(config: &Path, args: &[&str], limit: Duration) -> Ran {
    let mut child = Command::new(gpuctl_bin())
        .args(args)
        .env("GPUCTL_CONFIG_DIR", config)
        .env_remove("GPUCTL_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gpuctl");
    let start = Instant::now();
    let deadline = start + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            return Ran {
                ok: false,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: format!(
                    "gpuctl {args:?} still running after {limit:?}; killed. {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                took: start.elapsed(),
            };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

/// A `gpuctl dev` cluster in a temporary folder, stopped on drop.
struct Dev {
    child: Option<Child>,
    root: tempfile::TempDir,
}

impl Dev {
    fn start(root: tempfile::TempDir) -> Dev {
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
            .args(DEV_ARGS)
            .env("GPUCTL_CONFIG_DIR", &config)
            .env_remove("GPUCTL_SERVER")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn gpuctl dev");
        let mut dev = Dev {
            child: Some(child),
            root,
        };
        let ctx = config.join("context.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ctx.exists() {
            if let Some(status) = dev.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("gpuctl dev exited early ({status}):\n{}", dev.log());
            }
            assert!(
                Instant::now() < deadline,
                "gpuctl dev not ready in 60s:\n{}",
                dev.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        dev
    }

    fn config(&self) -> PathBuf {
        self.root.path().join("config")
    }

    fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("dev.log")).unwrap_or_default()
    }

    /// Scheduler logs, for failure messages.
    fn scheduler_logs(&self) -> String {
        (1..=3)
            .map(|i| {
                let p = self.state().join(format!("logs/scheduler-{i}.log"));
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- {} (last 30 lines)\n{}",
                    p.display(),
                    lines[lines.len().saturating_sub(30)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn run(&self, args: &[&str]) -> Ran {
        gpuctl(&self.config(), args, Duration::from_secs(60))
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert!(
            r.ok,
            "gpuctl {args:?} failed:\nstdout: {}\nstderr: {}\ndev log:\n{}",
            r.stdout,
            r.stderr,
            self.log()
        );
        r.stdout
    }

    fn jobs(&self) -> Vec<Job> {
        serde_json::from_str(&self.ok(&["get", "jobs", "-o", "json"]))
            .expect("get jobs -o json is a JSON array of jobs")
    }

    /// `cluster status -o json` rows, whatever the exit code.
    fn status(&self) -> Vec<Value> {
        let r = gpuctl(
            &self.config(),
            &["cluster", "status", "-o", "json"],
            Duration::from_secs(20),
        );
        serde_json::from_str(&r.stdout).unwrap_or_default()
    }

    /// scheduler id → pid, from `cluster.json`.
    fn pids(&self) -> BTreeMap<u64, i32> {
        let text = std::fs::read_to_string(self.state().join("cluster.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        v["schedulers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["id"].as_u64().unwrap(), s["pid"].as_i64().unwrap() as i32))
            .collect()
    }

    /// Stop like Ctrl-C does, and hand back the folder.
    fn stop(mut self) -> tempfile::TempDir {
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

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            support::interrupt(&mut c, Duration::from_secs(15));
        }
    }
}

/// The leader's (id, term) when a leader is reported and all three answer.
fn leader_of(rows: &[Value]) -> Option<(u64, u64)> {
    let leader = rows.iter().find(|r| r["role"] == "Leader")?;
    Some((leader["id"].as_u64()?, leader["term"].as_u64()?))
}

fn all_answer(rows: &[Value]) -> bool {
    rows.len() == 3
        && rows
            .iter()
            .all(|r| r["health"] == "ok" || r["health"] == "lagging")
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[test]
fn leader_failover_keeps_every_acknowledged_job() {
    let started = Instant::now();
    let dev = Dev::start(tempfile::tempdir().unwrap());
    let ctx = std::fs::read_to_string(dev.config().join("context.json")).unwrap();
    let ctx: Value = serde_json::from_str(&ctx).unwrap();
    assert_eq!(
        ctx["server"].as_str().unwrap().split(',').count(),
        3,
        "the context lists every replica: {ctx}"
    );

    // A job that is running while leaders die.
    dev.ok(&["submit", "--name", "sleeper", "--", "sleep", "2"]);
    let waiter = {
        let config = dev.config();
        std::thread::spawn(move || {
            gpuctl(
                &config,
                &["wait", "sleeper", "--timeout", "60s"],
                Duration::from_secs(90),
            )
        })
    };

    // Submit continuously; remember which submissions were acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<(String, Ran)>>> = Arc::default();
    let submitter = {
        let (stop, results, config) = (stop.clone(), results.clone(), dev.config());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let name = format!("s-{n}");
                let r = gpuctl(
                    &config,
                    &["submit", "--name", &name, "--", "true"],
                    Duration::from_secs(30),
                );
                results.lock().unwrap().push((name, r));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let acked_count = || results.lock().unwrap().iter().filter(|(_, r)| r.ok).count();
    // Kill the leader five times in a row.
    let mut kills = Vec::new();
    for round in 1..=5 {
        // Let some submissions through between kills.
        let before = acked_count();
        eventually(
            Duration::from_secs(30),
            "three more acknowledged submissions",
            || (acked_count() >= before + 3).then_some(()),
        );
        let (leader, term) = eventually(
            Duration::from_secs(20),
            "a leader with all three replicas answering",
            || {
                let rows = dev.status();
                all_answer(&rows).then(|| leader_of(&rows)).flatten()
            },
        );
        let pid = dev.pids()[&leader];
        assert!(alive(pid), "round {round}: leader {leader} pid {pid} alive");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let killed_at = Instant::now();
        let (new_leader, new_term) = eventually(
            Duration::from_secs(20),
            "a new leader after the kill",
            || leader_of(&dev.status()).filter(|(_, t)| *t > term),
        );
        let elected_after = killed_at.elapsed();
        let new_pid = eventually(
            Duration::from_secs(30),
            "the killed replica to be restarted (new pid in cluster.json)",
            || {
                let p = dev.pids()[&leader];
                (p != pid && alive(p)).then_some(p)
            },
        );
        kills.push((leader, pid, new_pid, new_leader, new_term, elected_after));
    }
    eprintln!("kills (old leader, pid, new pid, new leader, term, elected after): {kills:?}");

    // The job that ran through it all finished.
    let w = waiter.join().unwrap();
    assert!(
        w.ok,
        "wait sleeper: {} {}\n{}",
        w.stdout,
        w.stderr,
        dev.scheduler_logs()
    );
    assert!(w.stdout.contains("Succeeded"), "{}", w.stdout);

    stop.store(true, Ordering::SeqCst);
    submitter.join().unwrap();
    let results = results.lock().unwrap().clone();
    let acked: Vec<&String> = results
        .iter()
        .filter(|(_, r)| r.ok)
        .map(|(n, _)| n)
        .collect();
    let failed: Vec<(&String, &str)> = results
        .iter()
        .filter(|(_, r)| !r.ok)
        .map(|(n, r)| (n, r.stderr.trim()))
        .collect();
    let slowest = results
        .iter()
        .map(|(_, r)| r.took)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{} submissions, {} acknowledged, slowest {slowest:?}; not acknowledged: {failed:?}",
        results.len(),
        acked.len()
    );
    assert!(acked.len() >= 10, "only {} acknowledged", acked.len());

    // Every acknowledged submission is there exactly once.
    let jobs = dev.jobs();
    for name in &acked {
        let n = jobs.iter().filter(|j| &&j.metadata.name == name).count();
        assert_eq!(
            n,
            1,
            "acknowledged job {name} listed {n} times\n{}",
            dev.scheduler_logs()
        );
    }

    // Every job runs to completion.
    eventually(Duration::from_secs(60), "every job to succeed", || {
        let jobs = dev.jobs();
        jobs.iter()
            .all(|j| j.status.phase == JobPhase::Succeeded)
            .then_some(())
    });
    let jobs = dev.jobs();
    let failed_jobs: Vec<_> = jobs
        .iter()
        .filter(|j| j.status.phase != JobPhase::Succeeded)
        .map(|j| (&j.metadata.name, j.status.phase))
        .collect();
    assert!(failed_jobs.is_empty(), "{failed_jobs:?}");

    // The replicas converge on the same applied index.
    let applied = eventually(
        Duration::from_secs(20),
        "every replica to report the same applied index",
        || {
            let rows = dev.status();
            if !all_answer(&rows) {
                return None;
            }
            let idx: Vec<u64> = rows.iter().filter_map(|r| r["applied"].as_u64()).collect();
            (idx.len() == 3 && idx.iter().all(|i| *i == idx[0])).then(|| idx[0])
        },
    );
    assert!(applied > 0);
    let log = dev.log();
    assert_eq!(
        log.matches("restarting it in 500ms").count(),
        5,
        "five restarts announced:\n{log}"
    );

    // Crash every replica at once (SIGKILL): they come back, elect a leader,
    // and every acknowledged job is still there.
    let before = dev.pids();
    for pid in before.values() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    eventually(
        Duration::from_secs(60),
        "all three replicas restarted with a leader",
        || {
            let now = dev.pids();
            let restarted = before
                .iter()
                .all(|(id, old)| now.get(id).is_some_and(|p| p != old && alive(*p)));
            (restarted && leader_of(&dev.status()).is_some()).then_some(())
        },
    );
    let names: Vec<String> = dev.jobs().into_iter().map(|j| j.metadata.name).collect();
    for name in &acked {
        assert!(
            names.contains(name),
            "{name} lost when every replica crashed"
        );
    }

    // Stop everything and start again on the same state dir.
    let root = dev.stop();
    let dev = Dev::start(root);
    let names: Vec<String> = dev.jobs().into_iter().map(|j| j.metadata.name).collect();
    for name in &acked {
        assert!(
            names.contains(name),
            "{name} lost across a restart of the cluster"
        );
    }
    assert!(names.contains(&"sleeper".to_string()));
    eprintln!("test took {:?}", started.elapsed());
}
