//! Sick GPUs and drains, end to end with `gpuctl dev` (real `gpu-scheduler`
//! and `gpu-node` binaries, simulated GPUs): an XID injected into a running
//! task's GPU fails that attempt with the XID in its message, requeues the
//! job without using a retry and cordons the node; `gpuctl drain` empties a
//! node (one task ends by itself, one is evicted and runs elsewhere).

mod support;
use support::{eventually, DevCluster};

use std::io::Write;
use std::time::Duration;

use gpuctl_common::api::{Job, JobPhase, Node, TaskPhase};

fn jobs(dev: &DevCluster) -> Vec<Job> {
    serde_json::from_str(&dev.ok(&["get", "jobs", "-o", "json"])).expect("jobs as JSON")
}

fn job(dev: &DevCluster, name: &str) -> Job {
    jobs(dev)
        .into_iter()
        .find(|j| j.metadata.name == name)
        .unwrap_or_else(|| panic!("job {name} listed"))
}

fn nodes(dev: &DevCluster) -> Vec<Node> {
    serde_json::from_str(&dev.ok(&["get", "nodes", "-o", "json"])).expect("nodes as JSON")
}

/// The node and GPU index of a running single-task job.
fn running_on(dev: &DevCluster, name: &str) -> (String, u32) {
    eventually(Duration::from_secs(30), "the job to run", || {
        let j = job(dev, name);
        let t = &j.status.tasks[0];
        (j.status.phase == JobPhase::Running && t.phase == TaskPhase::Running)
            .then(|| (t.node.clone().unwrap(), t.gpus[0].index))
    })
}

/// `dev-node-2` → its work dir under the dev state folder.
fn node_dir(dev: &DevCluster, node: &str) -> std::path::PathBuf {
    let i = node.strip_prefix("dev-node-").expect("a dev node");
    dev.state().join(format!("node-{i}"))
}

#[test]
fn an_xid_requeues_the_job_without_a_retry_and_cordons_the_node() {
    let dev = DevCluster::start(
        tempfile::tempdir().unwrap(),
        &["--nodes", "2", "--gpus", "2xA100-80GB"],
        Duration::from_secs(60),
    );
    // retries 0: a failure of its own would end it.
    dev.ok(&[
        "submit", "--name", "train", "--gpus", "1", "--", "sh", "-c", "sleep 4",
    ]);
    let (node, gpu) = running_on(&dev, "train");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node_dir(&dev, &node).join("inject-xid"))
        .unwrap();
    writeln!(f, "{gpu} 79").unwrap();
    drop(f);

    let requeued = eventually(Duration::from_secs(30), "the attempt to fail", || {
        let j = job(&dev, "train");
        (j.status.attempt >= 2).then_some(j)
    });
    let past = &requeued.status.past_attempts[0];
    let want = "reported XID 79 (GPU has fallen off the bus)";
    assert!(
        past.reason.contains(&format!("GPU {gpu} (GPU-")) && past.reason.contains(want),
        "{past:?}"
    );
    assert_eq!(requeued.status.requeues, 1);

    let out = dev.run(&["wait", "train", "--timeout", "60s"]);
    assert!(
        out.status.success(),
        "the requeued job finishes: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        dev.log()
    );
    let done = job(&dev, "train");
    assert_eq!(done.status.phase, JobPhase::Succeeded);
    assert_eq!(done.status.attempt, 2, "one requeue, no retry used");
    let second = done.status.tasks[0].node.clone().unwrap();
    assert_ne!(second, node, "not back on the node that needs a reboot");

    // The node is cordoned with the reason, and the GPU is out of service.
    let sick = nodes(&dev)
        .into_iter()
        .find(|n| n.metadata.name == node)
        .unwrap();
    assert!(sick.spec.unschedulable);
    let reason = sick.spec.cordon_reason.clone().unwrap();
    assert!(reason.contains(want), "{reason}");
    let g = &sick.status.gpus[gpu as usize];
    assert!(!g.healthy);
    assert_eq!(g.xid, 79);
    let table = dev.ok(&["get", "nodes"]);
    assert!(
        table.contains("SchedulingDisabled") && table.contains(want),
        "{table}"
    );
    let described = dev.ok(&["describe", "job", "train"]);
    for word in ["GpuFault", "Requeued", want] {
        assert!(described.contains(word), "{word}:\n{described}");
    }
    let described = dev.ok(&["describe", "node", &node]);
    assert!(described.contains("Cordoned"), "{described}");
    dev.stop();
}

#[test]
fn drain_waits_then_evicts_and_the_evicted_job_runs_elsewhere() {
    let dev = DevCluster::start(
        tempfile::tempdir().unwrap(),
        &["--nodes", "2", "--gpus", "2xA100-80GB"],
        Duration::from_secs(60),
    );
    // Both jobs on dev-node-1: keep dev-node-2 cordoned while they start.
    dev.ok(&["cordon", "dev-node-2"]);
    dev.ok(&[
        "submit", "--name", "short", "--gpus", "1", "--", "sh", "-c", "sleep 2",
    ]);
    dev.ok(&[
        "submit", "--name", "long", "--gpus", "1", "--", "sh", "-c", "sleep 6",
    ]);
    assert_eq!(running_on(&dev, "short").0, "dev-node-1");
    assert_eq!(running_on(&dev, "long").0, "dev-node-1");
    dev.ok(&["uncordon", "dev-node-2"]);

    let out = dev.run(&["drain", "dev-node-1", "--timeout", "5s"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "drain: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        dev.log()
    );
    assert!(stdout.contains("node/dev-node-1 cordoned\n"), "{stdout}");
    assert!(stdout.contains("waiting for 2 task(s): "), "{stdout}");
    assert!(stdout.contains("evicting 1 task(s)"), "{stdout}");
    assert!(stdout.ends_with("node/dev-node-1 drained\n"), "{stdout}");

    let short = job(&dev, "short");
    assert_eq!(short.status.phase, JobPhase::Succeeded);
    assert_eq!(
        short.status.attempt, 1,
        "ended by itself within the timeout"
    );
    let out = dev.run(&["wait", "long", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", dev.log());
    let long = job(&dev, "long");
    assert_eq!(long.status.attempt, 2);
    assert_eq!(long.status.requeues, 1, "evicted without using a retry");
    assert_eq!(long.status.tasks[0].node.as_deref(), Some("dev-node-2"));
    let node = nodes(&dev)
        .into_iter()
        .find(|n| n.metadata.name == "dev-node-1")
        .unwrap();
    assert!(node.spec.unschedulable, "a drained node stays cordoned");
    assert_eq!(node.spec.cordon_reason.as_deref(), Some("drained"));

    // Errors say why, with a non-zero exit.
    let out = dev.run(&["drain", "nope", "--timeout", "1s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node \"nope\" not found"), "{err}");
    dev.stop();
}
