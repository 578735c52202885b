//! A workflow survives the loss of the Raft leader: `gpuctl dev --replicas
//! 3`, a chain of steps, the leader SIGKILLed while a step runs. The run
//! lives in the replicated state, so the new leader goes on from there:
//! the workflow succeeds and every step's process started exactly once.

mod support;
use support::{eventually, gpuctl_bin, require_binaries};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Dev {
    child: Option<Child>,
    root: tempfile::TempDir,
}

impl Dev {
    fn start() -> Dev {
        require_binaries();
        let root = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(root.path().join("dev.log")).unwrap();
        let child = Command::new(gpuctl_bin())
            .arg("dev")
            .arg("--state-dir")
            .arg(root.path().join("state"))
            .args([
                "--replicas",
                "3",
                "--gpus",
                "4xA100-80GB",
                "--restart-delay",
                "500ms",
            ])
            .env("GPUCTL_CONFIG_DIR", root.path().join("config"))
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
        let ctx = dev.dir().join("config").join("context.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ctx.exists() {
            if let Some(status) = dev.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("gpuctl dev exited early ({status}):\n{}", dev.log());
            }
            assert!(Instant::now() < deadline, "gpuctl dev not ready in 60s");
            std::thread::sleep(Duration::from_millis(50));
        }
        dev
    }

    fn dir(&self) -> &Path {
        self.root.path()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("dev.log")).unwrap_or_default()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(gpuctl_bin())
            .args(args)
            .env("GPUCTL_CONFIG_DIR", self.dir().join("config"))
            .env_remove("GPUCTL_SERVER")
            .stdin(Stdio::null())
            .output()
            .expect("run gpuctl")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "gpuctl {args:?} failed:\nstdout: {}\nstderr: {}\ndev log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            support::interrupt(&mut c, Duration::from_secs(15));
        }
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
