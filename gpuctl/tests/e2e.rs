//! End to end, as a new user would try it: `gpuctl dev` starts the real
//! `gpu-scheduler` and `gpu-node` binaries on loopback with simulated GPUs,
//! and every other step is the `gpuctl` binary.
//!
//! The binaries must sit next to `gpuctl` (`cargo test --workspace` builds
//! them all; `cargo build --bins` does too).

mod support;
use support::{eventually, DevCluster};

use std::time::Duration;

use gpuctl_common::api::{Job, JobPhase};

/// A `gpuctl dev` cluster in a temporary folder, stopped on drop.
struct Dev(DevCluster);

impl std::ops::Deref for Dev {
    type Target = DevCluster;
    fn deref(&self) -> &DevCluster {
        &self.0
    }
}

impl Dev {
    fn start(root: tempfile::TempDir, extra: &[&str]) -> Dev {
        Dev(DevCluster::start(root, extra, Duration::from_secs(60)))
    }

    fn stop(self) -> tempfile::TempDir {
        self.0.stop()
    }

    fn jobs(&self) -> Vec<Job> {
        serde_json::from_str(&self.ok(&["get", "jobs", "-o", "json"]))
            .expect("get jobs -o json is a JSON array of jobs")
    }

    fn job(&self, name: &str) -> Job {
        self.jobs()
            .into_iter()
            .find(|j| j.metadata.name == name)
            .unwrap_or_else(|| panic!("job {name} listed"))
    }
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key}= in {line:?}"))
}

#[test]
fn gang_jobs_run_wait_log_and_survive_restart() {
    let dev = Dev::start(tempfile::tempdir().unwrap(), &["--gpus", "4xA100-80GB"]);
    let script = "echo rank=$RANK world=$WORLD_SIZE local=$LOCAL_RANK gpus=$CUDA_VISIBLE_DEVICES \
                  nv=$NVIDIA_VISIBLE_DEVICES job=$GPUCTL_JOB index=$GPUCTL_TASK_INDEX \
                  master=$MASTER_ADDR:$MASTER_PORT; sleep 1";
    for name in ["hello", "second", "third"] {
        dev.ok(&[
            "submit",
            "--name",
            name,
            "--gpus",
            "2",
            "--replicas",
            "2",
            "--",
            "sh",
            "-c",
            script,
        ]);
    }
    // Each job needs all 4 GPUs: while hello runs, the third one waits.
    let hello = eventually(Duration::from_secs(30), "hello to run", || {
        let j = dev.job("hello");
        (j.status.phase == JobPhase::Running).then_some(j)
    });
    assert_eq!(
        dev.job("third").status.phase,
        JobPhase::Pending,
        "third waits for capacity"
    );
    assert!(hello.status.tasks.iter().all(|t| t.node.is_some()));

    let out = dev.run(&["wait", "hello", "--timeout", "60s"]);
    assert!(
        out.status.success(),
        "wait hello: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["second", "third"] {
        let out = dev.run(&["wait", name, "--timeout", "60s"]);
        assert!(
            out.status.success(),
            "wait {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Both tasks ran with the gang environment and disjoint GPUs.
    let mut seen_gpus = Vec::new();
    for task in 0..2 {
        let log = dev.ok(&["logs", "hello", "--task", &task.to_string()]);
        let line = log
            .lines()
            .find(|l| l.starts_with("rank="))
            .unwrap_or_else(|| panic!("log line in {log:?}"));
        assert_eq!(field(line, "rank"), task.to_string());
        assert_eq!(field(line, "world"), "2");
        assert_eq!(field(line, "job"), "hello");
        assert_eq!(field(line, "index"), task.to_string());
        assert_eq!(
            field(line, "local"),
            task.to_string(),
            "both tasks on the one node"
        );
        assert!(field(line, "master").starts_with("127.0.0.1:"), "{line}");
        let gpus: Vec<String> = field(line, "gpus").split(',').map(String::from).collect();
        assert_eq!(gpus.len(), 2, "{line}");
        assert_eq!(field(line, "nv"), field(line, "gpus"));
        seen_gpus.extend(gpus);
    }
    seen_gpus.sort();
    seen_gpus.dedup();
    assert_eq!(
        seen_gpus.len(),
        4,
        "CUDA_VISIBLE_DEVICES of the two tasks are disjoint"
    );

    // The third job started only after capacity was freed.
    let jobs = dev.jobs();
    assert_eq!(jobs.len(), 3);
    let done = |n: &str| jobs.iter().find(|j| j.metadata.name == n).unwrap().clone();
    let (h, t) = (done("hello"), done("third"));
    assert!(jobs.iter().all(|j| j.status.phase == JobPhase::Succeeded));
    let hello_end = h
        .status
        .tasks
        .iter()
        .filter_map(|t| t.finish_time_ms)
        .max()
        .unwrap();
    let third_start = t.status.start_time_ms.unwrap();
    assert!(
        third_start >= hello_end,
        "third bound at {third_start}, before hello ended at {hello_end}"
    );

    // Restart the whole cluster on the same state folder: all three are back.
    let root = dev.stop();
    let dev = Dev::start(root, &["--gpus", "4xA100-80GB"]);
    let mut names: Vec<String> = dev.jobs().into_iter().map(|j| j.metadata.name).collect();
    names.sort();
    assert_eq!(names, vec!["hello", "second", "third"]);
    assert!(dev
        .jobs()
        .iter()
        .all(|j| j.status.phase == JobPhase::Succeeded));
}

#[test]
fn failures_cancel_and_bad_input() {
    let dev = Dev::start(tempfile::tempdir().unwrap(), &["--gpus", "2xA100-80GB"]);

    // A failing job: wait exits non-zero and the exit code is recorded.
    dev.ok(&[
        "submit",
        "--name",
        "fails",
        "--gpus",
        "1",
        "--",
        "sh",
        "-c",
        "echo boom >&2; exit 3",
    ]);
    let out = dev.run(&["wait", "fails", "--timeout", "60s"]);
    assert!(!out.status.success(), "wait on a failed job exits non-zero");
    let j = dev.job("fails");
    assert_eq!(j.status.phase, JobPhase::Failed);
    assert_eq!(j.status.tasks[0].exit_code, Some(3));
    assert!(dev.ok(&["logs", "fails"]).contains("boom"));
    // A finished job can be deleted.
    assert!(dev
        .ok(&["delete", "job", "fails"])
        .contains("job/fails deleted"));
    assert!(!dev.jobs().iter().any(|j| j.metadata.name == "fails"));
    // A job with a time to live is deleted by itself once it is over.
    dev.ok(&[
        "submit",
        "--name",
        "brief",
        "--ttl-seconds-after-finished",
        "1",
        "--",
        "true",
    ]);
    dev.ok(&["wait", "brief", "--timeout", "60s"]);
    eventually(Duration::from_secs(15), "brief to be deleted", || {
        (!dev.jobs().iter().any(|j| j.metadata.name == "brief")).then_some(())
    });

    // Cancel stops the process group.
    dev.ok(&[
        "submit",
        "--name",
        "sleeper",
        "--gpus",
        "1",
        "--",
        "sh",
        "-c",
        "sleep 600 & sleep 600",
    ]);
    let pid = eventually(Duration::from_secs(30), "sleeper to run", || {
        dev.job("sleeper").status.tasks[0]
            .pid
            .filter(|_| dev.job("sleeper").status.phase == JobPhase::Running)
    });
    let out = dev.run(&["delete", "job", "sleeper"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cancel it first"),
        "a running job is not deleted: {err}"
    );
    dev.ok(&["cancel", "sleeper"]);
    assert_eq!(dev.job("sleeper").status.phase, JobPhase::Cancelled);
    eventually(
        Duration::from_secs(20),
        "the cancelled task's process to exit",
        || {
            let alive =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(-(pid as i32)), None).is_ok();
            (!alive).then_some(())
        },
    );

    // Bad input is refused with the file, field and reason; nothing changes.
    let before = dev.jobs();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("malformed.yaml", "apiVersion: gpuctl.io/v1\nkind: Job\nmetadata: {name: x\n", "malformed YAML"),
        (
            "unknown.yaml",
            "apiVersion: gpuctl.io/v1\nkind: Job\nmetadata: {name: u}\nspec:\n  tasks:\n  - command: [\"true\"]\n    replicass: 2\n",
            "replicass",
        ),
        (
            "nocommand.yaml",
            "apiVersion: gpuctl.io/v1\nkind: Job\nmetadata: {name: n}\nspec:\n  tasks:\n  - resources: {gpus: 1}\n",
            "command",
        ),
        (
            "negative.yaml",
            "apiVersion: gpuctl.io/v1\nkind: Job\nmetadata: {name: neg}\nspec:\n  tasks:\n  - command: [\"true\"]\n    resources: {gpus: -2}\n",
            "spec.tasks[0].resources.gpus",
        ),
        (
            "impossible.yaml",
            "apiVersion: gpuctl.io/v1\nkind: Job\nmetadata: {name: imp}\nspec:\n  tasks:\n  - command: [\"true\"]\n    resources: {gpus: 8}\n",
            "no node could ever run",
        ),
    ];
    // Nesting far past the parser's limit (refused at once, not after a
    // quadratic parse) and an object too large for the API.
    let deep = "[".repeat(200_000);
    let huge = format!(
        "apiVersion: gpuctl.io/v1\nkind: Job\nmetadata: {{name: huge}}\nspec:\n  tasks:\n  - command: [\"true\"]\n    env: {{BIG: \"{}\"}}\n",
        "x".repeat(10 << 20)
    );
    let large = [
        (
            "deep.yaml",
            deep.as_str(),
            "nested more than 128 levels deep at line 1",
        ),
        (
            "huge.yaml",
            huge.as_str(),
            "job/huge is 10.0 MiB as sent; an object may be at most",
        ),
    ];
    for (file, text, needle) in cases.into_iter().chain(large) {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let out = dev.run(&["apply", "-f", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} accepted");
        assert!(err.contains(file), "{file}: error names the file: {err}");
        assert!(
            err.contains(needle),
            "{file}: error mentions {needle:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = dev.run(&["submit", "--name", "toomany", "--gpus", "-1", "--", "true"]);
    assert!(!out.status.success());
    let after = dev.jobs();
    assert_eq!(before.len(), after.len(), "rejected input stored nothing");

    // An unreachable server: one line naming the address tried.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = dev.run(&["--server", &format!("127.0.0.1:{port}"), "get", "jobs"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn queues_cap_gpus_and_refuse_stale_updates() {
    let dev = Dev::start(tempfile::tempdir().unwrap(), &["--gpus", "4xA100-80GB"]);
    let dir = tempfile::tempdir().unwrap();
    let queue = |version: Option<&str>, quota: u32| {
        let path = dir.path().join(format!("queue-{quota}.yaml"));
        let rv = version.map_or(String::new(), |v| format!("\n  resourceVersion: {v}"));
        std::fs::write(
            &path,
            format!("apiVersion: gpuctl.io/v1\nkind: Queue\nmetadata:\n  name: team{rv}\nspec:\n  gpuQuota: {quota}\n"),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    assert!(dev
        .ok(&["apply", "-f", &queue(None, 1)])
        .contains("queue/team configured"));
    let q: serde_json::Value =
        serde_json::from_str(&dev.ok(&["get", "queue", "team", "-o", "json"])).unwrap();
    let v1 = q["metadata"]["resourceVersion"]
        .as_u64()
        .unwrap()
        .to_string();

    // Two 1-GPU jobs in a 1-GPU queue: the second waits for the first.
    for (name, secs) in [("first", "4"), ("second", "0")] {
        dev.ok(&[
            "submit", "--name", name, "--queue", "team", "--gpus", "1", "--", "sleep", secs,
        ]);
    }
    eventually(Duration::from_secs(30), "first to run", || {
        (dev.job("first").status.phase == JobPhase::Running).then_some(())
    });
    assert_eq!(dev.job("second").status.phase, JobPhase::Pending);
    let table = dev.ok(&["get", "queues"]);
    assert!(table.starts_with("NAME"), "{table}");
    let row = table.lines().find(|l| l.starts_with("team")).unwrap();
    assert_eq!(
        row.split_whitespace().take(3).collect::<Vec<_>>(),
        ["team", "1", "1"],
        "quota 1, 1 in use: {table}"
    );
    let described = dev.ok(&["describe", "queue", "team"]);
    assert!(described.contains("second"), "{described}");
    let why = dev.ok(&["describe", "job", "second"]);
    assert!(
        why.contains("Waiting:") && why.contains("queue \"team\" is at its GPU quota"),
        "{why}"
    );
    dev.ok(&["wait", "second", "--timeout", "60s"]);

    // A compare-and-set on the version read wins once; the same version again
    // is a conflict that says what to do, and changes nothing.
    dev.ok(&["apply", "-f", &queue(Some(&v1), 2)]);
    let out = dev.run(&["apply", "-f", &queue(Some(&v1), 3)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("queue-3.yaml") && err.contains("was changed") && err.contains("get it again"),
        "{err}"
    );
    let q: serde_json::Value =
        serde_json::from_str(&dev.ok(&["get", "queue", "team", "-o", "json"])).unwrap();
    assert_eq!(q["spec"]["gpuQuota"], 2.0);

    // A job naming a queue that does not exist is refused.
    let out = dev.run(&["submit", "--queue", "ghost", "--", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("queue \"ghost\" does not exist"), "{err}");
}

#[test]
fn priority_preempts_and_a_wide_gang_is_not_starved() {
    let dev = Dev::start(tempfile::tempdir().unwrap(), &["--gpus", "4xA100-80GB"]);

    // A low-priority gang holds every GPU; a high-priority job preempts it.
    dev.ok(&[
        "submit",
        "--name",
        "low",
        "--gpus",
        "2",
        "--replicas",
        "2",
        "--",
        "sh",
        "-c",
        "echo attempt=$GPUCTL_ATTEMPT; exec sleep 600",
    ]);
    eventually(Duration::from_secs(30), "low to run", || {
        (dev.job("low").status.phase == JobPhase::Running).then_some(())
    });
    // Running means started, not yet past its first line: wait for that line
    // in both tasks' logs before it is preempted.
    eventually(Duration::from_secs(30), "low's tasks to print", || {
        (0..2)
            .all(|t| {
                let out = dev.run(&["logs", "low", "--task", &t.to_string()]);
                String::from_utf8_lossy(&out.stdout).contains("attempt=1")
            })
            .then_some(())
    });
    dev.ok(&[
        "submit",
        "--name",
        "high",
        "--priority",
        "5",
        "--gpus",
        "2",
        "--",
        "true",
    ]);
    dev.ok(&["wait", "high", "--timeout", "60s"]);
    let low = dev.job("low");
    assert!(
        low.status.attempt >= 2,
        "low was requeued: {:?}",
        low.status
    );
    assert_eq!(low.status.preemptions, 1);
    let described = dev.ok(&["describe", "job", "low"]);
    assert!(
        described.contains("Preempted") && described.contains("preempted by job \"high\""),
        "{described}"
    );
    // It runs again once high is done, its retries untouched.
    eventually(Duration::from_secs(30), "low to run again", || {
        let j = dev.job("low");
        (j.status.phase == JobPhase::Running && j.status.attempt == 2).then_some(())
    });
    // The preempted attempt's log is still there.
    let first = dev.ok(&["logs", "low", "--task", "1", "--attempt", "1"]);
    assert!(first.contains("attempt=1"), "{first}");
    let out = dev.run(&["logs", "low", "--attempt", "9"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no attempt 9 on record"), "{err}");
    dev.ok(&["cancel", "low"]);

    // Three 1-GPU fillers, then a 4-GPU gang, then a stream of 1-GPU jobs:
    // the gang reserves the node, so the stream cannot keep it from starting.
    for i in 0..3 {
        dev.ok(&[
            "submit",
            "--name",
            &format!("fill-{i}"),
            "--gpus",
            "1",
            "--",
            "sleep",
            "2",
        ]);
    }
    dev.ok(&[
        "submit",
        "--name",
        "wide",
        "--gpus",
        "1",
        "--replicas",
        "4",
        "--",
        "sleep",
        "1",
    ]);
    let mut small = Vec::new();
    for i in 0..8 {
        let name = format!("small-{i}");
        dev.ok(&["submit", "--name", &name, "--gpus", "1", "--", "sleep", "1"]);
        small.push(name);
        std::thread::sleep(Duration::from_millis(300));
    }
    dev.ok(&["wait", "wide", "--timeout", "60s"]);
    let wide_start = dev.job("wide").status.start_time_ms.unwrap();
    for name in &small {
        dev.ok(&["wait", name, "--timeout", "60s"]);
        let started = dev.job(name).status.start_time_ms.unwrap();
        assert!(
            started >= wide_start,
            "{name} started at {started}, before the waiting gang (at {wide_start})"
        );
    }
}
