//! Hollow nodes: `gpu-node --simulate 50` joins a `gpuctl dev` cluster
//! (TLS, join token) as 50 nodes, and 200 jobs, gangs among them, run on
//! them to success through the real API.
//!
//! Needs every binary next to `gpuctl` (`cargo build --bins`).

mod support;
use support::{eventually, interrupt, DevCluster};

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gpuctl_common::api::{Job, JobPhase};

/// A child process stopped (SIGINT, then SIGKILL) when dropped.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        interrupt(&mut self.0, Duration::from_secs(10));
    }
}

fn nodes(dev: &DevCluster) -> Vec<serde_json::Value> {
    serde_json::from_str(&dev.ok(&["get", "nodes", "-o", "json"])).unwrap()
}

fn jobs(dev: &DevCluster) -> Vec<Job> {
    serde_json::from_str(&dev.ok(&["get", "jobs", "-o", "json"])).unwrap()
}

#[test]
fn fifty_hollow_nodes_run_two_hundred_jobs() {
    let dev = DevCluster::start(
        tempfile::tempdir().unwrap(),
        &["--gpus", "1xA100-80GB"],
        Duration::from_secs(60),
    );
    let ctx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dev.config().join("context.json")).unwrap())
            .unwrap();
    let server = ctx["server"].as_str().unwrap().to_string();
    assert!(server.starts_with("https://"), "TLS, as gpuctl dev runs");
    let (state, fleet_dir) = (dev.state(), dev.dir().join("fleet"));
    let arg = |p: std::path::PathBuf| p.to_str().unwrap().to_string();
    let log = std::fs::File::create(dev.dir().join("fleet.log")).unwrap();
    let fleet = Stopped(
        Command::new(support::gpuctl_bin().with_file_name("gpu-node"))
            .args(["--simulate", "50", "--name", "hollow", "--server", &server])
            .args(["--gpus", "8xH100-80GB", "--heartbeat-interval", "1s"])
            .args(["--join-token-file", &arg(state.join("join.token"))])
            .args(["--tls-cert", &arg(state.join("tls/cluster.pem"))])
            .args(["--tls-key", &arg(state.join("tls/cluster-key.pem"))])
            .args(["--tls-ca", &arg(state.join("tls/ca.pem"))])
            .args(["--work-dir", &arg(fleet_dir.clone())])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn gpu-node --simulate"),
    );
    let fleet_log = || std::fs::read_to_string(dev.dir().join("fleet.log")).unwrap_or_default();

    // 50 hollow nodes, each with its own credential from the join token.
    let hollow = eventually(Duration::from_secs(60), "50 hollow nodes", || {
        let hollow: Vec<serde_json::Value> = nodes(&dev)
            .into_iter()
            .filter(|n| n["metadata"]["labels"]["gpuctl.io/hollow"] == "true")
            .filter(|n| n["status"]["phase"] == "Ready")
            .collect();
        (hollow.len() == 50).then_some(hollow)
    });
    assert_eq!(hollow[0]["metadata"]["name"], "hollow-00000");
    assert_eq!(hollow[0]["status"]["gpus"].as_array().unwrap().len(), 8);
    assert!(
        fleet_dir.join("hollow-00049.token").exists(),
        "{}",
        fleet_log()
    );
    let table = dev.ok(&["get", "nodes"]);
    assert_eq!(
        table.lines().filter(|l| l.starts_with("hollow-")).count(),
        50,
        "{table}"
    );
    // Only hollow nodes take work.
    dev.ok(&["cordon", "dev-node-1"]);

    // 200 jobs: one-GPU tasks of 200 ms, and every 20th a gang of two
    // 8-GPU tasks (two whole hollow nodes).
    let dir = dev.dir().join("jobs");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..200 {
        let (replicas, gpus) = if i % 20 == 0 { (2, 8) } else { (1, 1) };
        let yaml = format!(
            "apiVersion: gpuctl.io/v1\nkind: Job\nmetadata:\n  name: sim-{i:03}\nspec:\n  tasks:\n    - name: main\n      replicas: {replicas}\n      command: [\"true\"]\n      env:\n        GPUCTL_SIM_DURATION: 200ms\n      resources:\n        gpus: {gpus}\n"
        );
        std::fs::write(dir.join(format!("sim-{i:03}.yaml")), yaml).unwrap();
    }
    dev.ok(&["apply", "-f", dir.to_str().unwrap()]);
    let done = eventually(Duration::from_secs(120), "200 jobs to succeed", || {
        let js = jobs(&dev);
        let ended = js.iter().filter(|j| j.status.phase.is_terminal()).count();
        (js.len() == 200 && ended == 200).then_some(js)
    });
    for j in &done {
        assert_eq!(
            j.status.phase,
            JobPhase::Succeeded,
            "{}: {:?}\n{}",
            j.metadata.name,
            j.status,
            fleet_log()
        );
        for t in &j.status.tasks {
            let node = t.node.as_deref().unwrap_or_default();
            assert!(
                node.starts_with("hollow-"),
                "{} ran on {node}",
                j.metadata.name
            );
        }
    }
    drop(fleet);
    dev.stop();
}
