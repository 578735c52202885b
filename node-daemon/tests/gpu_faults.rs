//! A GPU that reports a fatal XID while the daemon runs (injected through
//! the simulated inventory's inject file), against the fake scheduler: the
//! task on it is reported failed with the XID and stopped, the task on the
//! other GPU keeps running, the node registers again with the GPU unhealthy,
//! and a task bound to the sick GPU later is failed rather than started.

mod fake;

use std::time::Duration;

use gpuctl_proto::v1::TaskPhase;

use fake::{alive, start, task, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_xid_fails_the_task_on_that_gpu_only() {
    let mut h = start(false).await;
    let sick = task("sick", "Bound", &["sh", "-c", "sleep 30"]); // GPU 1
    let mut well = task("well", "Bound", &["sh", "-c", "sleep 30"]);
    well.gpu_indices = vec![0];
    h.fake.push(vec![sick.clone(), well.clone()]);
    let mut pids = std::collections::BTreeMap::new();
    for _ in 0..2 {
        let r = h.report().await;
        assert_eq!(r.phase(), TaskPhase::Running, "{r:?}");
        pids.insert(r.job.clone(), r.pid);
    }
    let registers = h.fake.state.lock().unwrap().registers.len();

    // An application error (13) is not the GPU's fault: nothing happens.
    std::fs::write(h.inject_file(), "1 13\n").unwrap();
    h.no_report_for(Duration::from_millis(1500)).await;
    std::fs::write(h.inject_file(), "1 13\n1 79\n").unwrap();
    let r = h.report().await;
    assert_eq!((r.job.as_str(), r.phase()), ("sick", TaskPhase::Failed));
    assert!(
        r.message.starts_with("GPU 1 (GPU-")
            && r.message
                .ends_with(") reported XID 79 (GPU has fallen off the bus)"),
        "{}",
        r.message
    );
    let f = r.gpu_fault.expect("the report names the fault");
    assert_eq!((f.index, f.xid), (1, 79));
    assert!(f.uuid.starts_with("GPU-"));
    let sick_pid = pids["sick"];
    wait_until("the sick task's process to be stopped", || !alive(sick_pid)).await;
    assert!(alive(pids["well"]), "the task on GPU 0 keeps running");

    // The node registers again, GPU 1 unhealthy with its XID.
    let fake = h.fake.clone();
    wait_until("a registration with GPU 1 unhealthy", || {
        let st = fake.state.lock().unwrap();
        st.registers.len() > registers
            && st.registers.last().is_some_and(|r| {
                let g = &r.gpus[1];
                !g.healthy && g.xid == 79 && r.gpus[0].healthy
            })
    })
    .await;

    // Bound to GPU 1 before the scheduler knew: failed with the fault, not run.
    let mut late = task("late", "Bound", &["sh", "-c", "sleep 30"]);
    late.gpu_indices = vec![1];
    h.fake.push(vec![well.clone(), late]);
    let r = h.report().await;
    assert_eq!((r.job.as_str(), r.phase()), ("late", TaskPhase::Failed));
    assert_eq!(r.pid, 0, "never started");
    assert_eq!(r.gpu_fault.map(|f| f.xid), Some(79));
    // The stopped task's exit is not reported a second time.
    h.no_report_for(Duration::from_millis(500)).await;
    h.shutdown().await;
}
