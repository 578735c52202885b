//! Tasks in their cgroups and with their own `/tmp`, through
//! `runtime::start` and `Process::wait` as the daemon uses them.
//!
//! These need root and writable cgroups (and mount namespaces); without
//! them each test prints why and returns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gpuctl_node::isolation::{Isolation, Options, TaskIsolation};
use gpuctl_node::owner::RunAs;
use gpuctl_node::runtime::{self, Exit, StartSpec};

/// A test node's isolation; its cgroup folders are removed when it goes,
/// also when the test fails.
struct Node(Isolation);

impl std::ops::Deref for Node {
    type Target = Isolation;
    fn deref(&self) -> &Isolation {
        &self.0
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.0.remove_node_dirs();
    }
}

/// This host's isolation for a node named after the test, or why not.
fn isolation(test: &str, work: &Path) -> Option<Node> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {test}: not root");
        return None;
    }
    let node = format!("test-{}-{test}", std::process::id());
    let iso = match Isolation::detect(&Options::default(), &node, work) {
        Ok(iso) => iso,
        Err(e) => {
            eprintln!("skipping {test}: {e}");
            return None;
        }
    };
    if !iso.warnings.is_empty() {
        eprintln!("skipping {test}: {:?}", iso.warnings);
        iso.remove_node_dirs();
        return None;
    }
    Some(Node(iso))
}

async fn run(
    dir: &Path,
    name: &str,
    script: &str,
    iso: &TaskIsolation,
    run_as: Option<&RunAs>,
) -> (Exit, String) {
    let log = dir.join(format!("{name}.log"));
    let command: Vec<String> = vec!["sh".into(), "-c".into(), script.into()];
    let env = BTreeMap::new();
    let spec = StartSpec {
        command: &command,
        env: &env,
        working_dir: "",
        log: &log,
        stdout: None,
        run_as,
        isolation: Some(iso),
        container: None,
    };
    let p = runtime::start(&spec).expect("the task starts");
    let exit = tokio::time::timeout(Duration::from_secs(60), p.wait())
        .await
        .expect("the task ends within a minute");
    (exit, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Every folder of the task's cgroup is gone.
fn assert_removed(iso: &TaskIsolation) {
    let (cg, _) = iso.cgroup.as_ref().expect("a cgroup");
    for d in cg.dirs() {
        assert!(!d.exists(), "{} is left", d.display());
    }
}

fn node_dirs_removed(iso: Node, sample: &TaskIsolation) {
    drop(iso);
    let (cg, _) = sample.cgroup.as_ref().expect("a cgroup");
    for d in cg.dirs() {
        let node_dir: PathBuf = d.parent().unwrap().to_path_buf();
        assert!(!node_dir.exists(), "{} is left", node_dir.display());
    }
}

#[tokio::test]
async fn a_task_past_its_memory_limit_ends_oom_killed() {
    let work = tempfile::tempdir().unwrap();
    let Some(iso) = isolation("oom", work.path()) else {
        return;
    };
    let task = iso.for_task("eater", 0, 1, 0, 64 << 20, &[]);
    let (exit, log) = run(
        work.path(),
        "eater",
        "head -c 200M /dev/zero | tail",
        &task,
        None,
    )
    .await;
    assert_ne!(exit.code, 0, "{exit:?} {log}");
    assert!(
        exit.message
            .starts_with("OOMKilled: the task used more than its memory limit of 64Mi"),
        "{exit:?} {log}"
    );
    let usage = exit.usage.expect("usage from the cgroup");
    assert!(
        usage.memory_peak_bytes >= 32 << 20 && usage.memory_peak_bytes <= 64 << 20,
        "{usage:?}"
    );
    assert_removed(&task);

    // Within its limit the same task succeeds, with its usage.
    let small = iso.for_task("eater", 0, 2, 0, 64 << 20, &[]);
    let (exit, log) = run(
        work.path(),
        "small",
        "head -c 1M /dev/zero | tail >/dev/null",
        &small,
        None,
    )
    .await;
    assert_eq!((exit.code, exit.message.as_str()), (0, ""), "{log}");
    assert!(exit.usage.is_some());
    assert_removed(&small);
    node_dirs_removed(iso, &small);
}

#[tokio::test]
async fn limits_are_visible_from_inside_the_task() {
    let work = tempfile::tempdir().unwrap();
    let Some(iso) = isolation("quota", work.path()) else {
        return;
    };
    let task = iso.for_task("quota", 3, 1, 500, 128 << 20, &[]);
    // Reads its own cgroups from /proc/self/cgroup, v1 or v2.
    let script = r#"
cg() { grep -E "^[0-9]+:([^:]*,)?$1(,[^:]*)?:" /proc/self/cgroup | head -1 | cut -d: -f3; }
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  p=$(grep '^0::' /proc/self/cgroup | cut -d: -f3)
  echo "cpu $(cat /sys/fs/cgroup$p/cpu.max)"
  echo "memory $(cat /sys/fs/cgroup$p/memory.max)"
  echo "pids $(cat /sys/fs/cgroup$p/pids.max)"
else
  echo "cpu $(cat /sys/fs/cgroup/cpu$(cg cpu)/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu$(cg cpu)/cpu.cfs_period_us)"
  echo "memory $(cat /sys/fs/cgroup/memory$(cg memory)/memory.limit_in_bytes)"
  echo "pids $(cat /sys/fs/cgroup/pids$(cg pids)/pids.max)"
fi
"#;
    let (exit, log) = run(work.path(), "quota", script, &task, None).await;
    assert!(exit.succeeded(), "{exit:?} {log}");
    assert!(
        log.contains("cpu 50000 100000\n"),
        "half a CPU: 50 ms of every 100 ms: {log}"
    );
    assert!(log.contains(&format!("memory {}\n", 128 << 20)), "{log}");
    assert!(log.contains("pids 4096\n"), "{log}");
    // The task's cgroup path names its node and task.
    let (cg, _) = task.cgroup.as_ref().unwrap();
    let node = gpuctl_node::isolation::instance_name(
        &format!("test-{}-quota", std::process::id()),
        &work.path().canonicalize().unwrap(),
    );
    assert!(
        cg.memory.ends_with(format!("gpuctl/{node}/quota-3-1")),
        "{}",
        cg.memory.display()
    );
    assert_removed(&task);
    node_dirs_removed(iso, &task);
}

#[tokio::test]
async fn two_tasks_writing_tmp_out_keep_their_own() {
    let work = tempfile::tempdir().unwrap();
    let Some(iso) = isolation("tmp", work.path()) else {
        return;
    };
    let a = iso.for_task("writer", 0, 1, 0, 0, &[]);
    let b = iso.for_task("writer", 1, 1, 0, 0, &[]);
    let nobody = RunAs {
        user: "nobody".into(),
        uid: 65534,
        gid: 65534,
        groups: Vec::new(),
        home: None,
        switch: true,
    };
    // Both at once: each writes, waits for the other to have written, and
    // reads its own back. The work folder (under /tmp here) stays visible.
    let script = |me: &str| {
        format!(
            "echo {me} > /tmp/out; sleep 0.5; echo \"read $(cat /tmp/out) as $(id -u)\"; \
             ls -a /tmp | tr '\\n' ' '; echo; test -d '{}' && echo work-visible",
            work.path().display()
        )
    };
    let (sa, sb) = (script("from-a"), script("from-b"));
    let ((ea, la), (eb, lb)) = tokio::join!(
        run(work.path(), "a", &sa, &a, None),
        run(work.path(), "b", &sb, &b, Some(&nobody)),
    );
    assert!(ea.succeeded() && eb.succeeded(), "{ea:?} {la} {eb:?} {lb}");
    assert!(la.contains("read from-a as 0\n"), "{la}");
    assert!(lb.contains("read from-b as 65534\n"), "{lb}");
    assert!(
        la.contains("work-visible") && lb.contains("work-visible"),
        "{la} {lb}"
    );
    // On the host each file is in its task's folder, the second one the
    // task user's; /tmp itself has neither.
    let (ta, tb) = (a.tmp.as_ref().unwrap(), b.tmp.as_ref().unwrap());
    assert_eq!(
        std::fs::read_to_string(ta.dir.join("out")).unwrap(),
        "from-a\n"
    );
    assert_eq!(
        std::fs::read_to_string(tb.dir.join("out")).unwrap(),
        "from-b\n"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(tb.dir.join("out")).unwrap().uid(), 65534);
    let host = std::fs::read_to_string("/tmp/out").unwrap_or_default();
    assert!(!host.starts_with("from-"), "the host's /tmp/out: {host}");
    assert_eq!(
        ta.host_path(Path::new("/tmp/out")),
        ta.dir.join("out"),
        "where the daemon reads a step's /tmp/out"
    );
    ta.remove();
    tb.remove();
    assert!(!ta.dir.exists() && !tb.dir.exists());
    assert_removed(&a);
    assert_removed(&b);
    node_dirs_removed(iso, &a);
}

#[tokio::test]
async fn nothing_the_task_started_outlives_it() {
    let work = tempfile::tempdir().unwrap();
    let Some(iso) = isolation("escape", work.path()) else {
        return;
    };
    let task = iso.for_task("escape", 0, 1, 0, 0, &[]);
    // A child in a new session and process group: killpg does not reach it,
    // the cgroup does.
    let (exit, log) = run(
        work.path(),
        "escape",
        "setsid sh -c 'sleep 30' & echo $!; sleep 0.2",
        &task,
        None,
    )
    .await;
    assert!(exit.succeeded(), "{exit:?} {log}");
    let pid: i32 = log.trim().parse().expect("the child's pid");
    let alive = Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z");
    assert!(!alive, "process {pid} escaped the task's end");
    assert_removed(&task);
    node_dirs_removed(iso, &task);
}

#[tokio::test]
async fn running_tasks_usage_is_in_the_nodes_metrics() {
    use gpuctl_node::inventory::SimulatedInventory;
    use gpuctl_node::metrics::Metrics;
    use prometheus::{Encoder, TextEncoder};
    use std::sync::Arc;

    let work = tempfile::tempdir().unwrap();
    let Some(iso) = isolation("metrics", work.path()) else {
        return;
    };
    let inv = Arc::new(SimulatedInventory::from_specs("n", &["1xA100-80GB".to_string()]).unwrap());
    let metrics = Metrics::new(inv, Arc::new(Isolation::clone(&iso))).unwrap();
    let task = iso.for_task("busy", 2, 1, 0, 0, &[]);
    let log = work.path().join("busy.log");
    let command: Vec<String> = [
        "sh",
        "-c",
        "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 30",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = BTreeMap::new();
    let p = runtime::start(&StartSpec {
        command: &command,
        env: &env,
        working_dir: "",
        log: &log,
        stdout: None,
        run_as: None,
        isolation: Some(&task),
        container: None,
    })
    .unwrap();
    let key = runtime::TaskKey {
        job: "busy".into(),
        task_index: 2,
        attempt: 1,
    };
    metrics.tasks.track(key.clone());
    let scrape = || {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&metrics.registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    };
    // Memory is charged from the start; CPU time once the loop ran a while.
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape();
        if text.contains("gpuctl_node_task_cpu_seconds_total{job=\"busy\",task=\"2\"} 0.")
            || text.contains("gpuctl_node_task_cpu_seconds_total{job=\"busy\",task=\"2\"} 1")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        text.contains("gpuctl_node_task_cpu_seconds_total{job=\"busy\",task=\"2\"}"),
        "{text}"
    );
    let memory = text
        .lines()
        .find_map(|l| l.strip_prefix("gpuctl_node_task_memory_bytes{job=\"busy\",task=\"2\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no memory line: {text}"));
    assert!(memory > 0.0, "{text}");
    // Once the task is over it is no longer reported.
    runtime::signal_group(p.pid, nix::sys::signal::Signal::SIGKILL);
    let exit = tokio::time::timeout(Duration::from_secs(10), p.wait())
        .await
        .unwrap();
    assert_eq!(exit.code, 128 + 9);
    metrics.tasks.untrack(&key);
    assert!(!scrape().contains("job=\"busy\""));
    assert_removed(&task);
    node_dirs_removed(iso, &task);
}

#[tokio::test]
async fn device_rules_reach_the_tasks_devices_cgroup() {
    let work = tempfile::tempdir().unwrap();
    let Some(iso) = isolation("devices", work.path()) else {
        return;
    };
    let mut task = iso.for_task("dev", 0, 1, 0, 0, &[]);
    let Some((cg, limits)) = task.cgroup.as_mut() else {
        unreachable!("isolation() returns only hosts with cgroups")
    };
    if cg.devices.is_none() {
        eprintln!("skipping device_rules_reach_the_tasks_devices_cgroup: no v1 devices controller");
        return;
    }
    // This host has no GPU device file: the rules are those for one, with
    // /dev/null (1:3) standing in for a GPU that is not the task's.
    limits.devices = Some(gpuctl_node::isolation::devices::Rules {
        deny: vec!["c 1:3 rwm".into()],
        allow: vec!["c 1:5 rwm".into()],
        minors: vec![5],
    });
    let (exit, log) = run(
        work.path(),
        "dev",
        "if (echo x > /dev/null) 2>/dev/zero; then echo null-open; else echo null-denied; fi; \
         head -c 1 /dev/zero | od -An -tx1 && echo zero-open",
        &task,
        None,
    )
    .await;
    assert!(exit.succeeded(), "{exit:?} {log}");
    assert!(log.contains("null-denied"), "{log}");
    assert!(log.contains("zero-open"), "{log}");
    assert_removed(&task);
    node_dirs_removed(iso, &task);
}

/// The cgroup2 mount and this process's folder in it, when there is one.
fn own_v2_cgroup() -> Option<PathBuf> {
    use gpuctl_node::isolation::cgroup::{parse_mountinfo, parse_proc_cgroup};
    let mounts = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").ok()?);
    let m = mounts.iter().find(|m| m.fstype == "cgroup2")?;
    let cgroups = parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").ok()?);
    let (_, path) = cgroups.iter().find(|(cs, _)| cs.is_empty())?;
    let rel = path.strip_prefix(m.root.as_str())?.trim_start_matches('/');
    Some(m.point.join(rel))
}

/// What `script` prints when run by a shell that first joins `cgroup`.
fn in_cgroup(cgroup: &Path, script: &str) -> String {
    let procs = cgroup.join("cgroup.procs");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("echo $$ > {}; {script}", procs.display()))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A v2 cgroup with the device program attached: the guarded major's
/// other minors cannot be opened from inside (EPERM), its listed minor
/// and other majors can; the program goes with the cgroup. Runs on
/// hybrid hosts too: device programs apply to v2 cgroups whether or not
/// any controller is enabled there.
#[test]
fn a_v2_device_program_allows_only_the_listed_minors() {
    use gpuctl_node::isolation::bpf::{guard, Guard};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping the device program test: not root");
        return;
    }
    let Some(own) = own_v2_cgroup() else {
        eprintln!("skipping the device program test: no cgroup2 mount");
        return;
    };
    let dir = own.join(format!("gpuctl-devtest-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let cleanup = Remove(dir.clone());
    // Major 1: /dev/null is 1:3, /dev/zero 1:5. Only /dev/zero is allowed.
    guard(
        &dir,
        &[Guard {
            major: 1,
            minors: vec![5],
        }],
    )
    .unwrap();
    let out = in_cgroup(
        &dir,
        "cat /dev/null && echo null=opened || echo null=refused; \
         head -c 3 /dev/zero | wc -c; test -r /dev/tty; echo other=ok",
    );
    assert!(out.contains("null=refused"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(
        out.contains("\n3\n") || out.starts_with("3\n") || out.contains(" 3\n"),
        "{out}"
    );
    assert!(out.contains("other=ok"), "{out}");
    // Outside the cgroup nothing changed.
    assert!(std::fs::File::open("/dev/null").is_ok());
    // The shell has exited: the cgroup (and with it the program) goes.
    drop(cleanup);
    assert!(!dir.exists(), "{dir:?} left behind");
}
