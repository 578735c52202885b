//! Tasks that name an image on a real `gpuctl dev` cluster: with `--runtime
//! podman` a Job's task and an Argo workflow step run in the image (one the
//! test imports from Debian's `busybox-static`, removed at the end); on
//! nodes that run tasks as processes the job's events say the image was not
//! used.
//!
//! The podman test needs root, podman and `/bin/busybox` (CI installs them
//! through `scripts/install-deps`); without them it prints why and returns.

mod support;
use support::DevCluster;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

const PODMAN_GLOBAL: [&str; 4] = ["--runtime", "runc", "--cgroup-manager", "cgroupfs"];

/// An image with `/bin/busybox` and its commands, removed when dropped.
struct TestImage(String);

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(PODMAN_GLOBAL)
            .args(["rmi", "--force", &self.0])
            .output();
    }
}

fn busybox_image(test: &str) -> Option<TestImage> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        == Some("0");
    if !root {
        eprintln!("skipping {test}: not root");
        return None;
    }
    let version = Command::new("podman")
        .args(PODMAN_GLOBAL)
        .arg("version")
        .output();
    if !version.is_ok_and(|o| o.status.success()) {
        eprintln!("skipping {test}: podman does not run here; scripts/install-deps installs it");
        return None;
    }
    if !Path::new("/bin/busybox").is_file() {
        eprintln!("skipping {test}: no /bin/busybox; scripts/install-deps installs busybox-static");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(dir.path().join("rootfs/tmp")).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for cmd in ["sh", "echo", "cat", "test"] {
        std::os::unix::fs::symlink("busybox", bin.join(cmd)).unwrap();
    }
    let tar = dir.path().join("rootfs.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(dir.path().join("rootfs"))
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap()
        .success();
    assert!(ok, "tar of the image's rootfs");
    let name = format!("localhost/gpuctl-e2e-{}:1", std::process::id());
    let out = Command::new("podman")
        .args(PODMAN_GLOBAL)
        .arg("import")
        .arg(&tar)
        .arg(&name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(TestImage(name))
}

fn start(extra: &[&str]) -> DevCluster {
    let mut args = vec!["--gpus", "2xH100-80GB"];
    args.extend(extra);
    DevCluster::start(tempfile::tempdir().unwrap(), &args, Duration::from_secs(60))
}

const JOB: &str = r#"
apiVersion: gpuctl.io/v1
kind: Job
metadata: {name: boxed}
spec:
  tasks:
    - name: main
      image: IMAGE
      command: [sh, -c, 'test ! -e /usr/bin/podman && echo "$GREETING from the image"']
      env: {GREETING: hello}
"#;

const WORKFLOW: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: boxed-wf}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: a, template: write}
  - name: write
    container:
      image: IMAGE
      command: [sh, -c]
      args: ["test ! -e /usr/bin/podman && echo in-image > /tmp/out"]
    outputs:
      parameters: [{name: out, valueFrom: {path: /tmp/out}}]
"#;

#[test]
fn a_job_and_a_workflow_step_run_in_their_image_under_podman() {
    let Some(image) = busybox_image("images under podman") else {
        return;
    };
    let dev = start(&["--runtime", "podman"]);
    let job = dev.dir().join("job.yaml");
    std::fs::write(&job, JOB.replace("IMAGE", &image.0)).unwrap();
    dev.ok(&["apply", "-f", job.to_str().unwrap()]);
    let out = dev.run(&["wait", "boxed", "--timeout", "45s"]);
    let d = dev.ok(&["describe", "job", "boxed"]);
    assert_eq!(out.status.code(), Some(0), "{d}\n{}", dev.log());
    assert!(!d.contains("not used"), "{d}");
    let logs = dev.ok(&["logs", "boxed"]);
    assert!(logs.contains("hello from the image"), "{logs}");

    let wf = dev.dir().join("wf.yaml");
    std::fs::write(&wf, WORKFLOW.replace("IMAGE", &image.0)).unwrap();
    dev.ok(&["apply", "-f", wf.to_str().unwrap()]);
    let out = dev.run(&["wait", "boxed-wf", "--timeout", "45s"]);
    let got: Value =
        serde_json::from_str(&dev.ok(&["get", "workflow", "boxed-wf", "-o", "json"])).unwrap();
    assert_eq!(out.status.code(), Some(0), "{got}\n{}", dev.log());
    let a = &got["status"]["root"]["children"][0];
    assert_eq!(a["outputs"]["parameters"]["out"], "in-image", "{got}");
}

#[test]
fn a_process_node_says_in_the_events_that_the_image_was_not_used() {
    let dev = start(&[]);
    let job = dev.dir().join("job.yaml");
    // The host has podman: the check that it is absent belongs to an image.
    let plain = JOB
        .replace("IMAGE", "alpine:3")
        .replace("test ! -e /usr/bin/podman && ", "");
    std::fs::write(&job, plain).unwrap();
    dev.ok(&["apply", "-f", job.to_str().unwrap()]);
    let out = dev.run(&["wait", "boxed", "--timeout", "45s"]);
    let d = dev.ok(&["describe", "job", "boxed"]);
    assert_eq!(out.status.code(), Some(0), "{d}\n{}", dev.log());
    assert!(
        d.contains("image \"alpine:3\" not used: node"),
        "the events say so: {d}"
    );
    // The log stays the program's own output.
    let logs = dev.ok(&["logs", "boxed"]);
    assert_eq!(logs, "hello from the image\n");
}
