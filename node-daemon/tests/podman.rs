//! Tasks that name an image, end to end against the fake scheduler
//! (`fake/`) with `gpu-node --runtime podman`: the image is one the test
//! imports from Debian's `busybox-static` (no registry is needed), and is
//! removed again at the end.
//!
//! These need root, podman and `/bin/busybox` (CI installs them through
//! `scripts/install-deps`); without them each test prints why and returns.

mod fake;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gpuctl_node::container::{Podman, Runtime};
use gpuctl_proto::v1::{OutputParameter, StepIo, TaskAssignment, TaskPhase};

use fake::{start_with, task, wait_until, Harness, Options};

/// An image imported for one test, removed when dropped.
struct TestImage {
    name: String,
    podman: Podman,
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = podman(&self.podman, &["rmi", "--force", &self.name]);
    }
}

fn podman(p: &Podman, args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new(&p.program)
        .args(&p.global_args)
        .args(args)
        .output()
}

/// A fresh image holding `/bin/busybox` and its commands, or why not.
fn busybox_image(test: &str) -> Option<TestImage> {
    static N: AtomicU32 = AtomicU32::new(0);
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {test}: not root");
        return None;
    }
    let p = Podman::default();
    match podman(&p, &["version", "--format", "{{.Client.Version}}"]) {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!(
                "skipping {test}: podman does not run here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Err(e) => {
            eprintln!("skipping {test}: no podman ({e}); scripts/install-deps installs it");
            return None;
        }
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        eprintln!("skipping {test}: no /bin/busybox; scripts/install-deps installs busybox-static");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for cmd in [
        "sh", "echo", "cat", "sleep", "test", "dd", "pwd", "env", "ls",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(cmd)).unwrap();
    }
    let tar = dir.path().join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar of the image's rootfs");
    let name = format!(
        "localhost/gpuctl-test-{}-{}:1",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let out = podman(&p, &["import", tar.to_str().unwrap(), &name]).unwrap();
    assert!(
        out.status.success(),
        "podman import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(TestImage { name, podman: p })
}

async fn node_with_podman() -> Harness {
    start_with(Options {
        runtime: Runtime::Podman(Podman::default()),
        ..Options::default()
    })
    .await
}

/// `task` in `image`, with no GPU (the simulated ones have no device files).
fn in_image(job: &str, image: &str, script: &str) -> TaskAssignment {
    let mut t = task(job, "Bound", &["sh", "-c", script]);
    t.image = image.to_string();
    t.gpu_indices = Vec::new();
    t
}

fn container_exists(p: &Podman, name: &str) -> bool {
    podman(p, &["container", "exists", name]).is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_in_an_image_runs_with_its_env_and_exit_code() {
    let Some(image) = busybox_image("image env and exit code") else {
        return;
    };
    let mut h = node_with_podman().await;
    // Only the image has /bin/busybox as its whole /bin; the host has podman.
    let mut t = in_image(
        "boxed",
        &image.name,
        "echo \"$GREETING from the image\"; \
         test -x /bin/busybox && test ! -e /usr/bin/podman && echo in-the-image; \
         echo scratch > /tmp/mine && cat /tmp/mine; exit 3",
    );
    t.env.insert("GREETING".into(), "hello".into());
    h.fake.push(vec![t]);
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Running, "{r:?}");
    assert_eq!(r.message, "", "{r:?}");
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Failed, "{r:?}");
    assert_eq!(r.exit_code, 3, "{r:?}");
    assert!(r.message.starts_with("exited with code 3"), "{r:?}");
    let log = fake::read(&h.log("boxed"));
    assert!(log.contains("hello from"), "{log}");
    assert!(log.contains("in-the-image"), "{log}");
    assert!(log.contains("scratch"), "{log}");
    assert!(
        !container_exists(&image.podman, "gpuctl-boxed-0-1"),
        "the container is removed"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_fails_naming_image_and_node() {
    let Some(image) = busybox_image("missing image") else {
        return;
    };
    let mut h = node_with_podman().await;
    let missing = format!("{}-missing", image.name.trim_end_matches(":1"));
    h.fake.push(vec![in_image("lost", &missing, "true")]);
    let r = tokio::time::timeout(Duration::from_secs(60), h.reports.recv())
        .await
        .expect("a report in time")
        .unwrap();
    assert_eq!(r.phase(), TaskPhase::Failed, "{r:?}");
    assert!(
        r.message
            .contains(&format!("image {missing:?} is not on node node-1")),
        "{r:?}"
    );
    assert!(fake::read(&h.log("lost")).contains(&missing));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_over_its_memory_limit_is_reported_oom_killed() {
    let Some(image) = busybox_image("container oom") else {
        return;
    };
    if let Err(e) = gpuctl_node::isolation::Layout::detect() {
        eprintln!("skipping container oom: no cgroups: {e}");
        return;
    }
    let mut h = node_with_podman().await;
    // dd's 128 MiB buffer does not fit under 32 MiB.
    let mut t = in_image(
        "eater",
        &image.name,
        "dd if=/dev/zero of=/dev/null bs=128M count=1",
    );
    t.memory_bytes = 32 << 20;
    t.cpu_milli = 500;
    h.fake.push(vec![t]);
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Running, "{r:?}");
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Failed, "{r:?}");
    assert!(
        r.message
            .starts_with("OOMKilled: the task used more than its memory limit of 32Mi"),
        "{r:?}"
    );
    assert!(r.usage.is_some(), "{r:?}");
    // podman's monitor wrote its `oom` file in the task's folder, not here.
    assert!(
        !Path::new("oom").exists(),
        "an oom file in the test's folder"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_step_runs_in_its_image_and_its_tmp_output_is_read() {
    let Some(image) = busybox_image("step in an image") else {
        return;
    };
    let mut h = node_with_podman().await;
    let mut t = in_image(
        "step-a",
        &image.name,
        "test -x /bin/busybox && test ! -e /usr/bin/podman && echo in-image > /tmp/out",
    );
    t.step = Some(StepIo {
        workflow: "wf".into(),
        step: "wf.step-a".into(),
        output_parameters: vec![OutputParameter {
            name: "out".into(),
            path: "/tmp/out".into(),
        }],
        ..Default::default()
    });
    h.fake.push(vec![t]);
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Running, "{r:?}");
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Succeeded, "{r:?}");
    let outputs = r.outputs.expect("a step's outputs");
    assert_eq!(outputs.parameters["out"], "in-image");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_task_stops_its_container() {
    let Some(image) = busybox_image("stop a container") else {
        return;
    };
    let mut h = node_with_podman().await;
    h.fake
        .push(vec![in_image("sleeper", &image.name, "sleep 120")]);
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Running, "{r:?}");
    let p = image.podman.clone();
    wait_until("the container runs", || {
        container_exists(&p, "gpuctl-sleeper-0-1")
    })
    .await;
    // No longer assigned: the daemon stops it (kill grace 1s here).
    h.fake.push(vec![]);
    wait_until("the container is gone", || {
        !container_exists(&p, "gpuctl-sleeper-0-1")
    })
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_runtime_says_the_image_was_not_used() {
    let mut h = fake::start(false).await;
    let mut t = task("plain", "Bound", &["true"]);
    t.image = "pytorch/pytorch:2.4.0".into();
    h.fake.push(vec![t]);
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Running, "{r:?}");
    assert!(
        r.message.starts_with(
            "image \"pytorch/pytorch:2.4.0\" not used: node node-1 runs tasks as processes"
        ),
        "{r:?}"
    );
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Succeeded, "{r:?}");
    // The log is the program's output only.
    assert!(!fake::read(&h.log("plain")).contains("not used"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_whose_supervisor_is_killed_is_removed() {
    let Some(image) = busybox_image("supervisor killed") else {
        return;
    };
    let mut h = node_with_podman().await;
    h.fake
        .push(vec![in_image("orphan", &image.name, "sleep 120")]);
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Running, "{r:?}");
    let p = image.podman.clone();
    wait_until("the container runs", || {
        container_exists(&p, "gpuctl-orphan-0-1")
    })
    .await;
    let state = h.work.path().join("work/supervisors/orphan.0.1/state.json");
    let doc: serde_json::Value = serde_json::from_str(&fake::read(&state)).unwrap();
    let supervisor = doc["supervisor"]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Failed, "{r:?}");
    assert!(r.message.contains("supervisor"), "{r:?}");
    wait_until("the container is gone", || {
        !container_exists(&p, "gpuctl-orphan-0-1")
    })
    .await;
    // And its cgroup, in every hierarchy.
    wait_until("its cgroup is gone", || {
        let dirs = std::fs::read_dir("/sys/fs/cgroup").map(|d| {
            d.flatten()
                .map(|e| e.path())
                .chain([std::path::PathBuf::from("/sys/fs/cgroup")])
                .collect::<Vec<_>>()
        });
        dirs.unwrap_or_default().iter().all(|h| {
            std::fs::read_dir(h.join("gpuctl")).map_or(true, |nodes| {
                nodes
                    .flatten()
                    .all(|n| !n.path().join("orphan-0-1").exists())
            })
        })
    })
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_containers_usage_is_in_the_nodes_metrics() {
    let Some(image) = busybox_image("container usage") else {
        return;
    };
    if !nix::unistd::geteuid().is_root() || gpuctl_node::isolation::Layout::detect().is_err() {
        eprintln!("skipping container usage: no task cgroups here");
        return;
    }
    let mut h = node_with_podman().await;
    // Its page cache (8 MiB written to its /tmp) is charged to it; it
    // runs until told to stop.
    let mut t = in_image(
        "boxbusy",
        &image.name,
        "dd if=/dev/zero of=/tmp/fill bs=1048576 count=8; \
         while [ ! -e /tmp/stop ]; do sleep 0.05; done",
    );
    t.memory_bytes = 256 << 20;
    h.fake.push(vec![t]);
    assert_eq!(h.report().await.phase(), TaskPhase::Running);
    let metric = "gpuctl_node_task_memory_bytes{job=\"boxbusy\",task=\"0\"} ";
    let mut seen = String::new();
    for _ in 0..300 {
        let text = fake::metrics_text(h.work.path());
        seen = text
            .lines()
            .find(|l| l.starts_with(metric))
            .unwrap_or_default()
            .to_string();
        let bytes: f64 = seen
            .strip_prefix(metric)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        if bytes > 1e6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let bytes: f64 = seen
        .strip_prefix(metric)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(bytes > 1e6, "container memory not in the metrics: {seen:?}");
    let text = fake::metrics_text(h.work.path());
    assert!(
        text.contains("gpuctl_node_task_cpu_seconds_total{job=\"boxbusy\",task=\"0\"}"),
        "{text}"
    );
    // Stop it through its /tmp (the task's own folder on the host).
    let tmp = std::fs::read_dir(h.work.path().join("work/tmp"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("boxbusy-0-1"))
        .map(|e| e.path())
        .expect("the task's /tmp folder");
    std::fs::write(tmp.join("stop"), "").unwrap();
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Succeeded, "{r:?}");
    h.shutdown().await;
}
