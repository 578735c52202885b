//! Task limits and private `/tmp` on a real `gpuctl dev` cluster: a job
//! over its memory limit is `OOMKilled` in `describe` and in its events,
//! and two parallel workflow steps writing `/tmp/out` report their own.
//!
//! The node daemon confines tasks only as root with writable cgroups;
//! elsewhere these tests print why and return.

mod support;
use support::DevCluster;

use std::time::Duration;

use serde_json::Value;

fn confined_here(test: &str) -> bool {
    // The effective uid: the second field of `Uid:` in /proc/self/status.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string));
    if euid.as_deref() != Some("0") {
        eprintln!("skipping {test}: not root");
        return false;
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if !mounts.lines().any(|l| l.contains(" - cgroup")) {
        eprintln!("skipping {test}: no cgroup hierarchy mounted");
        return false;
    }
    true
}

fn start() -> DevCluster {
    DevCluster::start(
        tempfile::tempdir().unwrap(),
        &["--gpus", "2xH100-80GB"],
        Duration::from_secs(60),
    )
}

#[test]
fn a_job_over_its_memory_limit_is_oom_killed_in_describe_and_events() {
    if !confined_here("oom") {
        return;
    }
    let dev = start();
    dev.ok(&[
        "submit",
        "--name",
        "eater",
        "--memory",
        "64Mi",
        "--",
        "sh",
        "-c",
        "head -c 200M /dev/zero | tail",
    ]);
    let out = dev.run(&["wait", "eater", "--timeout", "45s"]);
    assert_ne!(out.status.code(), Some(0), "{}", dev.log());
    let d = dev.ok(&["describe", "job", "eater"]);
    assert!(
        d.contains("OOMKilled: the task used more than its memory limit of 64Mi"),
        "{d}"
    );
    assert!(d.contains("MEM PEAK"), "usage with the ended task: {d}");
    let job: Value = serde_json::from_str(&dev.ok(&["get", "job", "eater", "-o", "json"])).unwrap();
    let events = job["status"]["events"].to_string();
    assert!(events.contains("OOMKilled: "), "{events}");
    let usage = &job["status"]["tasks"][0]["usage"];
    assert!(usage["memoryPeakBytes"].as_u64().unwrap_or(0) > 0, "{job}");
}

const SCRATCH: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: scratch}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: a, template: write, arguments: {parameters: [{name: text, value: from-a}]}}
      - {name: b, template: write, arguments: {parameters: [{name: text, value: from-b}]}}
  - name: write
    inputs: {parameters: [{name: text}]}
    container:
      image: alpine:3
      command: [sh, -c]
      args: ["echo {{inputs.parameters.text}} > /tmp/out; sleep 1; test \"$(cat /tmp/out)\" = {{inputs.parameters.text}}"]
    outputs:
      parameters: [{name: out, valueFrom: {path: /tmp/out}}]
"#;

#[test]
fn parallel_steps_writing_tmp_out_each_report_their_own() {
    if !confined_here("scratch") {
        return;
    }
    let dev = start();
    let file = dev.dir().join("scratch.yaml");
    std::fs::write(&file, SCRATCH).unwrap();
    dev.ok(&["apply", "-f", file.to_str().unwrap()]);
    let out = dev.run(&["wait", "scratch", "--timeout", "45s"]);
    let wf: Value =
        serde_json::from_str(&dev.ok(&["get", "workflow", "scratch", "-o", "json"])).unwrap();
    assert_eq!(out.status.code(), Some(0), "{wf}\n{}", dev.log());
    let children = wf["status"]["root"]["children"].as_array().cloned();
    let mut seen = Vec::new();
    for c in children.into_iter().flatten() {
        let name = c["displayName"].as_str().unwrap_or_default().to_string();
        let text = c["outputs"]["parameters"]["out"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        seen.push((name, text));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("a".to_string(), "from-a".to_string()),
            ("b".to_string(), "from-b".to_string())
        ],
        "{wf}"
    );
}
