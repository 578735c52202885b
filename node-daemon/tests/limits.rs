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
