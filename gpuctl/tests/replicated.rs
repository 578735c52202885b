//! End to end with a replicated control plane: `gpuctl dev --replicas 3`
//! starts three real `gpu-scheduler` replicas and two `gpu-node`s; the test
//! kills the Raft leader five times (SIGKILL), then every replica at once, while a background thread keeps
//! submitting jobs through the `gpuctl` binary, and checks that every
//! acknowledged submission survives exactly once, that every job runs to
//! completion, that the replicas converge, and that all of it is still there
//! after a restart of the whole cluster.
//!
//! Alongside, three clients read, write and compare-and-set two `Queue`
//! objects (a label as the value, `metadata.resourceVersion` for the
//! compare) through the same binary; the history of their calls and answers
//! is checked for linearizability with the Wing–Gong–Lowe checker of
//! `todc-utils`. Every task records its start in a file, so a task started
//! twice for one attempt (a binding done again by a new leader) is caught.
//!
//! The binaries must sit next to `gpuctl` (`cargo build --bins`).

mod support;
use support::{eventually, gpuctl_bin, DevCluster};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpuctl_common::api::{Job, JobPhase};
use serde_json::Value;
use std::sync::atomic::AtomicU64;
use todc_utils::linearizability::history::{Action, History};
use todc_utils::{Specification, WGLChecker};

const DEV_ARGS: &[&str] = &[
    "--replicas",
    "3",
    "--gpus",
    "4xA100-80GB",
    "--nodes",
    "2",
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
struct Dev(DevCluster);

impl std::ops::Deref for Dev {
    type Target = DevCluster;
    fn deref(&self) -> &DevCluster {
        &self.0
    }
}

impl Dev {
    fn start(root: tempfile::TempDir) -> Dev {
        Dev(DevCluster::start(root, DEV_ARGS, Duration::from_secs(60)))
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

    /// [`eventually`], with the cluster's logs in the failure message.
    fn until<T>(&self, limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out waiting for {what}\n--- gpuctl dev:\n{}\n{}",
                    self.log(),
                    self.scheduler_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop like Ctrl-C does, and hand back the folder.
    fn stop(self) -> tempfile::TempDir {
        self.0.stop()
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

/// What became of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    Ok,
    /// Refused (a conflict, or the object was not there): it did not happen.
    Failed,
    /// No answer (killed, unreachable, timed out): it may or may not have
    /// happened. Its response is put at the end of the history.
    Unknown,
}

/// Operations on one queue, whose value is its `lin` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum LinOp {
    /// A read that saw this value (`None`: no such queue).
    Read(Option<u64>),
    /// Create or replace with this value.
    Write(u64, Outcome),
    /// Replace with `new` if the version read along with `expected` is
    /// still current. Values are unique, so "the version is current" is
    /// "the value is still `expected`".
    Cas {
        expected: u64,
        new: u64,
        outcome: Outcome,
    },
}

struct QueueSpec;

impl Specification for QueueSpec {
    type State = Option<u64>;
    type Operation = LinOp;

    fn init() -> Self::State {
        None
    }

    fn apply(op: &LinOp, state: &Option<u64>) -> (bool, Option<u64>) {
        match *op {
            LinOp::Read(v) => (v == *state, *state),
            LinOp::Write(v, Outcome::Ok | Outcome::Unknown) => (true, Some(v)),
            LinOp::Write(_, Outcome::Failed) => (true, *state),
            LinOp::Cas {
                expected,
                new,
                outcome,
            } => {
                let holds = *state == Some(expected);
                match outcome {
                    Outcome::Ok => (holds, if holds { Some(new) } else { *state }),
                    Outcome::Failed => (!holds, *state),
                    Outcome::Unknown => (true, if holds { Some(new) } else { *state }),
                }
            }
        }
    }
}

/// One operation of the history: when it was called and answered, in one
/// global order (`None`: never answered).
#[derive(Debug, Clone)]
struct Event {
    object: usize,
    call: u64,
    ret: Option<u64>,
    op: LinOp,
}

const LIN_OBJECTS: [&str; 2] = ["lin-a", "lin-b"];

/// Write a Queue manifest whose value is `value`; with `version`, the apply
/// is a compare-and-set on it.
fn queue_file(dir: &Path, name: &str, value: u64, version: Option<u64>) -> PathBuf {
    let path = dir.join(format!("{name}-{value}.yaml"));
    let rv = version.map_or(String::new(), |v| format!("\n  resourceVersion: {v}"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: gpuctl.io/v1\nkind: Queue\nmetadata:\n  name: {name}\n  labels: {{lin: \"{value}\"}}{rv}\nspec:\n  weight: 1\n"
        ),
    )
    .unwrap();
    path
}

/// `gpuctl get queue NAME -o json`: Some((value, version)), Some(None) when
/// there is no such queue, None when the read failed (no information).
fn read_queue(config: &Path, name: &str) -> Option<Option<(u64, u64)>> {
    let r = gpuctl(
        config,
        &["get", "queue", name, "-o", "json"],
        Duration::from_secs(30),
    );
    if !r.ok {
        return r.stderr.contains("not found").then_some(None);
    }
    let v: Value = serde_json::from_str(&r.stdout).ok()?;
    let value = v["metadata"]["labels"]["lin"].as_str()?.parse().ok()?;
    let version = v["metadata"]["resourceVersion"].as_u64()?;
    Some(Some((value, version)))
}

fn write_outcome(r: &Ran) -> Outcome {
    if r.ok {
        Outcome::Ok
    } else if r.stderr.contains("was changed") || r.stderr.contains("does not exist") {
        Outcome::Failed
    } else {
        Outcome::Unknown
    }
}

/// A client: reads, blind writes, and read-then-compare-and-set, on random
/// objects (seeded), until `stop`.
fn lin_client(
    id: u64,
    config: PathBuf,
    files: PathBuf,
    clock: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Event>>>,
) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ id;
    let mut next = || {
        // xorshift64*
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let tick = || clock.fetch_add(1, Ordering::SeqCst);
    let mut seq = 0u64;
    let record = |e: Event| history.lock().unwrap().push(e);
    while !stop.load(Ordering::SeqCst) {
        let object = (next() % LIN_OBJECTS.len() as u64) as usize;
        let name = LIN_OBJECTS[object];
        seq += 1;
        let value = id * 1_000_000 + seq;
        // Apply the queue with this operation's value (a compare-and-set
        // when `version` is given): when it was called, when it was answered
        // (never, if the outcome is unknown), and the outcome.
        let apply = |version: Option<u64>| {
            let file = queue_file(&files, name, value, version);
            let call = tick();
            let r = gpuctl(
                &config,
                &["apply", "-f", file.to_str().unwrap()],
                Duration::from_secs(30),
            );
            let outcome = write_outcome(&r);
            (call, (outcome != Outcome::Unknown).then(tick), outcome)
        };
        match next() % 3 {
            0 => {
                let call = tick();
                if let Some(seen) = read_queue(&config, name) {
                    let ret = tick();
                    record(Event {
                        object,
                        call,
                        ret: Some(ret),
                        op: LinOp::Read(seen.map(|(v, _)| v)),
                    });
                }
            }
            1 => {
                let (call, ret, outcome) = apply(None);
                record(Event {
                    object,
                    call,
                    ret,
                    op: LinOp::Write(value, outcome),
                });
            }
            _ => {
                // Read, then compare-and-set on what was read.
                let call = tick();
                let Some(Some((expected, version))) = read_queue(&config, name) else {
                    continue;
                };
                let ret = tick();
                record(Event {
                    object,
                    call,
                    ret: Some(ret),
                    op: LinOp::Read(Some(expected)),
                });
                let (call, ret, outcome) = apply(Some(version));
                record(Event {
                    object,
                    call,
                    ret,
                    op: LinOp::Cas {
                        expected,
                        new: value,
                        outcome,
                    },
                });
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Check the history of each object (linearizability is compositional).
/// Each operation is its own process: unanswered ones end after everything.
fn check_linearizable(events: &[Event]) -> Vec<String> {
    let mut problems = Vec::new();
    for (object, name) in LIN_OBJECTS.iter().enumerate() {
        let mine: Vec<&Event> = events.iter().filter(|e| e.object == object).collect();
        let end = events.iter().filter_map(|e| e.ret).max().unwrap_or(0) + 1;
        let mut stamped: Vec<(u64, usize, Action<LinOp>)> = Vec::new();
        for (process, e) in mine.iter().enumerate() {
            stamped.push((e.call, process, Action::Call(e.op)));
            let ret = e.ret.unwrap_or(end + process as u64);
            stamped.push((ret, process, Action::Response(e.op)));
        }
        if stamped.is_empty() {
            continue;
        }
        stamped.sort_by_key(|(t, _, _)| *t);
        let actions: Vec<(usize, Action<LinOp>)> =
            stamped.into_iter().map(|(_, p, a)| (p, a)).collect();
        if !WGLChecker::<QueueSpec>::is_linearizable(History::from_actions(actions)) {
            problems.push(format!(
                "the history of queue {name} is not linearizable: {mine:?}"
            ));
        }
    }
    problems
}

#[test]
fn the_checker_tells_linearizable_histories_from_others() {
    let ev = |call, ret, op| Event {
        object: 0,
        call,
        ret,
        op,
    };
    use LinOp::*;
    // Sequential: write 1, CAS 1→2, read 2.
    let good = [
        ev(0, Some(1), Write(1, Outcome::Ok)),
        ev(
            2,
            Some(3),
            Cas {
                expected: 1,
                new: 2,
                outcome: Outcome::Ok,
            },
        ),
        ev(4, Some(5), Read(Some(2))),
    ];
    assert!(check_linearizable(&good).is_empty());
    // A stale read after the CAS was acknowledged.
    let stale = [
        ev(0, Some(1), Write(1, Outcome::Ok)),
        ev(
            2,
            Some(3),
            Cas {
                expected: 1,
                new: 2,
                outcome: Outcome::Ok,
            },
        ),
        ev(4, Some(5), Read(Some(1))),
    ];
    assert_eq!(check_linearizable(&stale).len(), 1);
    // A CAS that failed although nothing changed the value.
    let lost = [
        ev(0, Some(1), Write(1, Outcome::Ok)),
        ev(
            2,
            Some(3),
            Cas {
                expected: 1,
                new: 2,
                outcome: Outcome::Failed,
            },
        ),
    ];
    assert_eq!(check_linearizable(&lost).len(), 1);
    // An unanswered write may have happened: a later read of it is fine,
    // and so is a read that does not see it.
    let maybe = [
        ev(0, None, Write(7, Outcome::Unknown)),
        ev(2, Some(3), Read(Some(7))),
    ];
    assert!(check_linearizable(&maybe).is_empty());
    let maybe_not = [
        ev(0, None, Write(7, Outcome::Unknown)),
        ev(2, Some(3), Read(None)),
    ];
    assert!(check_linearizable(&maybe_not).is_empty());
    // Two compare-and-sets from the same version cannot both win.
    let both = [
        ev(0, Some(1), Write(1, Outcome::Ok)),
        ev(
            2,
            Some(5),
            Cas {
                expected: 1,
                new: 2,
                outcome: Outcome::Ok,
            },
        ),
        ev(
            3,
            Some(6),
            Cas {
                expected: 1,
                new: 3,
                outcome: Outcome::Ok,
            },
        ),
    ];
    assert_eq!(check_linearizable(&both).len(), 1);
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

    // Every task appends "job task attempt" here when it starts.
    let starts = dev.dir().join("starts");
    let record_start = format!(
        "echo \"$GPUCTL_JOB $GPUCTL_TASK_INDEX $GPUCTL_ATTEMPT\" >> '{}'",
        starts.display()
    );
    // A job that is running while leaders die.
    dev.ok(&[
        "submit",
        "--name",
        "sleeper",
        "--",
        "sh",
        "-c",
        &format!("{record_start}; sleep 2"),
    ]);
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
        let record_start = record_start.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let name = format!("s-{n}");
                let r = gpuctl(
                    &config,
                    &["submit", "--name", &name, "--", "sh", "-c", &record_start],
                    Duration::from_secs(30),
                );
                results.lock().unwrap().push((name, r));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // Clients of the linearizability check.
    let clock = Arc::new(AtomicU64::new(0));
    let history: Arc<Mutex<Vec<Event>>> = Arc::default();
    let files = dev.dir().join("queues");
    std::fs::create_dir_all(&files).unwrap();
    let lin_clients: Vec<_> = (1..=3)
        .map(|id| {
            let (config, files, clock, stop, history) = (
                dev.config(),
                files.clone(),
                clock.clone(),
                stop.clone(),
                history.clone(),
            );
            std::thread::spawn(move || lin_client(id, config, files, clock, stop, history))
        })
        .collect();

    let acked_count = || results.lock().unwrap().iter().filter(|(_, r)| r.ok).count();
    // Each replica's web UI URL, which a restart must not move.
    let uis = || -> BTreeMap<u64, String> {
        let text = std::fs::read_to_string(dev.state().join("cluster.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        v["schedulers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_u64().unwrap(),
                    s["ui"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let ui_before = uis();
    assert!(ui_before.values().all(|u| !u.is_empty()), "{ui_before:?}");
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
        let (leader, term) = dev.until(
            Duration::from_secs(20),
            "a leader with all three replicas answering",
            || {
                let rows = dev.status();
                all_answer(&rows).then(|| leader_of(&rows)).flatten()
            },
        );
        let pid = dev.scheduler_pids()[&leader];
        assert!(alive(pid), "round {round}: leader {leader} pid {pid} alive");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let killed_at = Instant::now();
        let (new_leader, new_term) = dev.until(
            Duration::from_secs(20),
            "a new leader after the kill",
            || leader_of(&dev.status()).filter(|(_, t)| *t > term),
        );
        let elected_after = killed_at.elapsed();
        let new_pid = dev.until(
            Duration::from_secs(30),
            "the killed replica to be restarted (new pid in cluster.json)",
            || {
                let p = dev.scheduler_pids()[&leader];
                (p != pid && alive(p)).then_some(p)
            },
        );
        assert_eq!(
            uis()[&leader],
            ui_before[&leader],
            "replica {leader}'s web UI moved when it was restarted"
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
    for c in lin_clients {
        c.join().unwrap();
    }
    let events = history.lock().unwrap().clone();
    let answered = events.iter().filter(|e| e.ret.is_some()).count();
    let cas_ok = events
        .iter()
        .filter(|e| {
            matches!(
                e.op,
                LinOp::Cas {
                    outcome: Outcome::Ok,
                    ..
                }
            )
        })
        .count();
    let cas_failed = events
        .iter()
        .filter(|e| {
            matches!(
                e.op,
                LinOp::Cas {
                    outcome: Outcome::Failed,
                    ..
                }
            )
        })
        .count();
    eprintln!(
        "linearizability history: {} operations, {answered} answered, {cas_ok} compare-and-sets won, {cas_failed} refused",
        events.len()
    );
    assert!(answered >= 30, "too few operations to check: {events:?}");
    assert!(cas_ok > 0, "no compare-and-set won: {events:?}");
    let problems = check_linearizable(&events);
    assert!(problems.is_empty(), "{problems:#?}");
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

    // No task was started twice for one attempt, and each job's task started.
    let text = std::fs::read_to_string(&starts).unwrap();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for line in text.lines() {
        *seen.entry(line).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "started more than once: {twice:?}");
    for j in &jobs {
        let line = format!("{} 0 {}", j.metadata.name, j.status.attempt);
        assert!(
            seen.contains_key(line.as_str()),
            "no start recorded for {line:?}"
        );
    }

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
    let before = dev.scheduler_pids();
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
            let now = dev.scheduler_pids();
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
