//! A workflow survives the loss of the Raft leader: `gpuctl dev --replicas
//! 3`, a chain of steps, the leader SIGKILLed while a step runs. The run
//! lives in the replicated state, so the new leader goes on from there:
//! the workflow succeeds and every step's process started exactly once.

mod support;
use support::{eventually, DevCluster};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

struct Dev(DevCluster);

impl std::ops::Deref for Dev {
    type Target = DevCluster;
    fn deref(&self) -> &DevCluster {
        &self.0
    }
}

impl Dev {
    fn start() -> Dev {
        Dev(DevCluster::start(
            tempfile::tempdir().unwrap(),
            &[
                "--replicas",
                "3",
                "--gpus",
                "4xA100-80GB",
                "--restart-delay",
                "500ms",
            ],
            Duration::from_secs(60),
        ))
    }

    /// The leader's pid (from `cluster status` and `cluster.json`).
    fn leader_pid(&self) -> Option<i32> {
        let out = self.run(&["cluster", "status", "-o", "json"]);
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
        let id = rows.iter().find(|r| r["role"] == "Leader")?["id"].as_u64()?;
        let text = std::fs::read_to_string(self.dir().join("state/cluster.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        let pids: BTreeMap<u64, i64> = v["schedulers"]
            .as_array()?
            .iter()
            .filter_map(|s| Some((s["id"].as_u64()?, s["pid"].as_i64()?)))
            .collect();
        pids.get(&id).map(|p| *p as i32)
    }
}

const CHAIN: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: chain}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: s1, template: step, arguments: {parameters: [{name: n, value: s1}]}}
      - {name: s2, template: step, dependencies: [s1], arguments: {parameters: [{name: n, value: s2}]}}
      - {name: s3, template: step, dependencies: [s2], arguments: {parameters: [{name: n, value: s3}]}}
      - {name: s4, template: step, dependencies: [s3], arguments: {parameters: [{name: n, value: s4}]}}
  - name: step
    inputs: {parameters: [{name: n}]}
    container:
      image: alpine:3
      command: [sh, -c]
      args: ["echo {{inputs.parameters.n}} >> EVENTS; sleep 1"]
"#;

#[test]
fn a_workflow_survives_leader_failover_without_rerunning_steps() {
    let dev = Dev::start();
    let events: PathBuf = dev.dir().join("chain.events");
    let file = dev.dir().join("chain.yaml");
    std::fs::write(
        &file,
        CHAIN.replace("EVENTS", &events.display().to_string()),
    )
    .unwrap();
    dev.ok(&["apply", "-f", file.to_str().unwrap()]);

    // Kill the leader while s2 runs (s1 finished, s3 not created yet).
    eventually(Duration::from_secs(30), "step s2 to start", || {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        text.contains("s2").then_some(())
    });
    let pid = eventually(Duration::from_secs(20), "a leader", || dev.leader_pid());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let out = dev.run(&["wait", "chain", "--timeout", "60s"]);
    assert!(
        out.status.success(),
        "wait chain: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        dev.log()
    );
    let text = std::fs::read_to_string(&events).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        ["s1", "s2", "s3", "s4"],
        "each step started once, in order"
    );
    let jobs: Vec<Value> = serde_json::from_str(&dev.ok(&["get", "jobs", "-o", "json"])).unwrap();
    assert_eq!(jobs.len(), 4);
    for j in &jobs {
        assert_eq!(j["status"]["attempt"], 1, "{j}");
        assert_eq!(j["status"]["phase"], "Succeeded", "{j}");
    }
}
