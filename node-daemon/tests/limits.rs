//! The daemon's task limits and private `/tmp`, end to end against the
//! fake scheduler (`fake/`): the memory limit from the assignment, the
//! `OOMKilled` report with usage, and workflow steps' `/tmp` outputs.
//!
//! These need root and writable cgroups; without them each test prints why
//! and returns.

mod fake;

use std::collections::BTreeMap;

use gpuctl_proto::v1::{OutputParameter, ReportTaskRequest, StepIo, TaskPhase};

use fake::{start, task, wait_until};

fn confined_here(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {test}: not root");
        return false;
    }
    if let Err(e) = gpuctl_node::isolation::Layout::detect() {
        eprintln!("skipping {test}: {e}");
        return false;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_memory_limit_is_reported_oom_killed() {
    if !confined_here("oom") {
        return;
    }
    let mut h = start(false).await;
    let mut eater = task(
        "eater",
        "Bound",
        &["sh", "-c", "head -c 200M /dev/zero | tail"],
    );
    eater.memory_bytes = 64 << 20;
    eater.cpu_milli = 1000;
    h.fake.push(vec![eater]);
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Running);
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Failed, "{r:?}");
    assert!(
        r.message
            .starts_with("OOMKilled: the task used more than its memory limit of 64Mi"),
        "{r:?}"
    );
    let usage = r.usage.expect("usage with the final report");
    assert!(usage.memory_peak_bytes > 0, "{usage:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_steps_writing_tmp_out_report_their_own() {
    if !confined_here("steps") {
        return;
    }
    let mut h = start(false).await;
    let step = |job: &str, text: &str| {
        let mut t = task(
            job,
            "Bound",
            &[
                "sh",
                "-c",
                &format!("echo {text} > /tmp/out; sleep 0.5; test \"$(cat /tmp/out)\" = {text}"),
            ],
        );
        t.step = Some(StepIo {
            workflow: "wf".into(),
            step: format!("wf.{job}"),
            output_parameters: vec![OutputParameter {
                name: "out".into(),
                path: "/tmp/out".into(),
            }],
            ..Default::default()
        });
        t.gpu_indices = Vec::new();
        t
    };
    h.fake
        .push(vec![step("step-a", "from-a"), step("step-b", "from-b")]);
    let mut last: BTreeMap<String, ReportTaskRequest> = BTreeMap::new();
    while last
        .values()
        .filter(|r| r.phase() != TaskPhase::Running)
        .count()
        < 2
    {
        let r = h.report().await;
        last.insert(r.job.clone(), r);
    }
    for (job, text) in [("step-a", "from-a"), ("step-b", "from-b")] {
        let r = &last[job];
        assert_eq!(r.phase(), TaskPhase::Succeeded, "{r:?}");
        let outputs = r.outputs.as_ref().expect("a step's outputs");
        assert_eq!(outputs.parameters["out"], text, "{r:?}");
    }
    // Their /tmp folders are gone once the outputs were read.
    let tmp = h.work.path().join("work/tmp");
    wait_until("the steps' /tmp folders removed", || {
        std::fs::read_dir(&tmp).map_or(true, |d| d.count() == 0)
    })
    .await;
    h.shutdown().await;
}

/// This daemon's warm supervisors (`supervise --warm` with its lease under
/// `work`) and the process each keeps waiting (`task-exec`).
fn warm_members(work: &std::path::Path) -> Vec<(u32, u32)> {
    let lease = work.join("work/lease").display().to_string();
    let procs: Vec<(u32, u32, String)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            Some((pid, ppid, String::from_utf8_lossy(&cmd).replace('\0', " ")))
        })
        .collect();
    procs
        .iter()
        .filter(|(_, _, cmd)| cmd.contains("supervise --warm") && cmd.contains(&lease))
        .filter_map(|(pid, _, _)| {
            let stub = procs
                .iter()
                .find(|(_, ppid, cmd)| ppid == pid && cmd.contains("task-exec"))?;
            Some((*pid, stub.0))
        })
        .collect()
}

/// The memory cgroup folder of `pid`.
fn memory_cgroup(pid: u32) -> std::path::PathBuf {
    let text = fake::read(std::path::Path::new(&format!("/proc/{pid}/cgroup")));
    let line = text
        .lines()
        .find(|l| l.split(':').nth(1) == Some("memory"))
        .unwrap_or_default()
        .to_string();
    let path = line.splitn(3, ':').nth(2).unwrap_or_default();
    std::path::Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_start_in_warm_supervisors_whose_cgroups_go_with_the_daemon() {
    if !confined_here("warm") {
        return;
    }
    let mut h = start(false).await;
    let work = h.work.path().to_path_buf();
    // Each waits in a cgroup of its own, not yet a task's (once it has
    // joined it: its supervisor says it is ready only then).
    let in_pool = |stub: u32| {
        memory_cgroup(stub)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".pool."))
    };
    wait_until("two warm supervisors waiting in their cgroups", || {
        let m = warm_members(&work);
        m.len() == 2 && m.iter().all(|(_, stub)| in_pool(*stub))
    })
    .await;
    let before = warm_members(&work);
    let mut t = task(
        "warm",
        "Bound",
        &["sh", "-c", "echo ppid=$PPID; cat /proc/self/cgroup"],
    );
    t.memory_bytes = 64 << 20;
    h.fake.push(vec![t]);
    assert_eq!(h.report().await.phase(), TaskPhase::Running);
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Succeeded, "{r:?}");
    let log = fake::read(&h.log("warm"));
    // Its supervisor was one of those started before it, and the task ran
    // in its own cgroup (the waiting one's, renamed).
    let ppid: u32 = log
        .lines()
        .find_map(|l| l.strip_prefix("ppid="))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ppid in {log}"));
    assert!(
        before.iter().any(|(s, _)| *s == ppid),
        "{ppid} not in {before:?}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(":memory:") && l.ends_with("/warm-0-1")),
        "{log}"
    );
    // Another member takes its place.
    wait_until("the pool refilled", || {
        let m = warm_members(&work);
        m.len() == 2 && m.iter().all(|(_, stub)| in_pool(*stub))
    })
    .await;
    let members = warm_members(&work);
    let pools: Vec<_> = members.iter().map(|(_, s)| memory_cgroup(*s)).collect();
    h.shutdown().await;
    // Stopping the daemon takes its warm supervisors, their waiting
    // processes and their cgroups with it.
    wait_until("warm supervisors gone", || {
        members
            .iter()
            .all(|(s, w)| !fake::alive(*s) && !fake::alive(*w))
    })
    .await;
    for p in &pools {
        assert!(!p.exists(), "{p:?} left behind");
    }
}
