//! `gpuctl dev` brings back a node daemon that was SIGKILLed under a running
//! gang, and the gang finishes on its first attempt with its own exit codes:
//! the restarted daemon took its tasks back instead of losing them. A
//! killed gateway is brought back too.
//!
//! The binaries must sit next to `gpuctl` (`cargo build --bins`).

mod support;
use support::{eventually, DevCluster};

use std::time::Duration;

use gpuctl_common::api::{Job, JobPhase, TaskPhase};

fn job(dev: &DevCluster, name: &str) -> Job {
    let all: Vec<Job> = serde_json::from_str(&dev.ok(&["get", "jobs", "-o", "json"]))
        .expect("get jobs -o json is a JSON array of jobs");
    all.into_iter()
        .find(|j| j.metadata.name == name)
        .unwrap_or_else(|| panic!("job {name} listed"))
}

/// The pid of the first node (`nodes`) or of the gateway (`gateway`) in
/// `cluster.json`.
fn pid_of(dev: &DevCluster, what: &str) -> i32 {
    let text = std::fs::read_to_string(dev.state().join("cluster.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entry = if what == "nodes" {
        &v[what][0]
    } else {
        &v[what]
    };
    entry["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("a {what} pid in {v}")) as i32
}

fn sigkill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

#[test]
fn a_killed_node_daemon_is_restarted_and_its_gang_finishes_on_attempt_one() {
    let dev = DevCluster::start(
        tempfile::tempdir().unwrap(),
        &["--gpus", "4xA100-80GB", "--restart-delay", "200ms"],
        Duration::from_secs(60),
    );
    let gate = dev.dir().join("gate");
    // Rank 0 exits 0 first; rank 1 exits 3 a moment later.
    let script = format!(
        "echo rank=$RANK; while [ ! -e '{}' ]; do sleep 0.1; done; \
         if [ \"$RANK\" = 1 ]; then sleep 1; exit 3; fi; exit 0",
        gate.display()
    );
    dev.ok(&[
        "submit",
        "--name",
        "gang",
        "--gpus",
        "2",
        "--replicas",
        "2",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let running = eventually(Duration::from_secs(30), "the gang to run", || {
        let j = job(&dev, "gang");
        let all = j.status.tasks.iter().all(|t| t.phase == TaskPhase::Running);
        (all && j.status.tasks.len() == 2).then_some(j)
    });
    let pids: Vec<u32> = running
        .status
        .tasks
        .iter()
        .map(|t| t.pid.expect("a running task's pid"))
        .collect();

    let old = pid_of(&dev, "nodes");
    sigkill(old);
    let new = eventually(
        Duration::from_secs(30),
        "the node daemon to be restarted (new pid in cluster.json)",
        || Some(pid_of(&dev, "nodes")).filter(|p| *p != old),
    );
    assert!(alive(new as u32));
    assert!(
        pids.iter().all(|&p| alive(p)),
        "the tasks outlived their daemon"
    );
    // Still the same attempt, running, after the restart.
    let j = job(&dev, "gang");
    assert_eq!(j.status.attempt, 1);
    assert_eq!(j.status.phase, JobPhase::Running);

    std::fs::write(&gate, "").unwrap();
    let done = eventually(Duration::from_secs(30), "the gang to end", || {
        let j = job(&dev, "gang");
        j.status.phase.is_terminal().then_some(j)
    });
    assert_eq!(done.status.phase, JobPhase::Failed, "{:?}", done.status);
    assert_eq!(done.status.attempt, 1, "never restarted: {:?}", done.status);
    let codes: Vec<(TaskPhase, Option<i32>)> = done
        .status
        .tasks
        .iter()
        .map(|t| (t.phase, t.exit_code))
        .collect();
    assert_eq!(
        codes,
        [
            (TaskPhase::Succeeded, Some(0)),
            (TaskPhase::Failed, Some(3))
        ],
        "{:?}",
        done.status
    );
    // Each rank ran once.
    for task in ["0", "1"] {
        let log = dev.ok(&["logs", "gang", "--task", task]);
        assert_eq!(log.matches("rank=").count(), 1, "{log}");
    }
    let log = dev.log();
    assert!(log.contains("dev-node-1 is back"), "{log}");

    // The gateway comes back too.
    let old = pid_of(&dev, "gateway");
    sigkill(old);
    let new = eventually(
        Duration::from_secs(30),
        "the gateway to be restarted (new pid in cluster.json)",
        || Some(pid_of(&dev, "gateway")).filter(|p| *p != old),
    );
    assert!(alive(new as u32));
    let log = dev.log();
    assert!(log.contains("the gateway is back"), "{log}");
}
