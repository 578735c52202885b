//! Tests of GPU health in the state machine: an XID report requeues the
//! job without using a retry and marks the GPU unhealthy; the cordon rule;
//! `Cordon` with a reason and with `evict`.

use super::testutil::register;
use super::*;
use gpuctl_common::api::{GpuShare, JobPhase, TaskPhase};

fn reg(name: &str, gpus: u32, cordon_after: u32) -> Command {
    let mut n = gpuctl_testkit::node(name)
        .gpus(gpus, gpuctl_testkit::A100)
        .cpu_milli(64_000)
        .memory_bytes(256 << 30)
        .build();
    n.status.cordon_after_unhealthy_gpus = cordon_after;
    register(&n)
}

struct H {
    s: State,
    index: u64,
}

impl H {
    fn new() -> Self {
        H {
            s: State::default(),
            index: 0,
        }
    }
    fn apply(&mut self, cmd: Command) -> Result<Applied, ApplyError> {
        self.index += 1;
        self.s
            .apply(self.index, &Envelope::new(1000 * self.index, cmd))
    }
    fn submit(&mut self, name: &str, replicas: u32, retries: u32) {
        let job = gpuctl_testkit::job(name)
            .replicas(replicas)
            .gpus(1.0)
            .max_retries(retries)
            .build();
        self.apply(Command::SubmitJob { job: Box::new(job) })
            .unwrap();
    }
    /// Bind task i of `job` to GPU `gpus[i]` of `node`.
    fn bind(&mut self, job: &str, node: &str, gpus: &[u32]) {
        let attempt = self.s.jobs[job].status.attempt;
        let tasks = gpus
            .iter()
            .enumerate()
            .map(|(i, g)| TaskPlacement {
                index: i as u32,
                node: node.into(),
                gpus: vec![GpuShare {
                    index: *g,
                    uuid: format!("GPU-{node}-{g}"),
                    milli: 1000,
                }],
            })
            .collect();
        let bindings = vec![Binding {
            job: job.into(),
            attempt,
            tasks,
        }];
        let Applied::Bound { refused, .. } = self.apply(Command::Bind { bindings }).unwrap() else {
            panic!("bind answers Bound")
        };
        assert!(refused.is_empty(), "{refused:?}");
    }
    fn report(&mut self, job: &str, index: u32, phase: TaskPhase, fault: Option<GpuFault>) {
        let j = &self.s.jobs[job];
        let t = &j.status.tasks[index as usize];
        let message = fault.as_ref().map(GpuFault::message);
        let report = TaskReport {
            node: t.node.clone().unwrap_or_default(),
            job: job.into(),
            index,
            attempt: j.status.attempt,
            phase,
            exit_code: (phase != TaskPhase::Running).then_some(if fault.is_some() {
                -1
            } else {
                0
            }),
            message,
            pid: Some(7),
            outputs: None,
            port: None,
            usage: None,
            gpu_fault: fault,
        };
        self.apply(Command::TaskReport { report }).unwrap();
    }
    fn node(&self, name: &str) -> &gpuctl_common::api::Node {
        &self.s.nodes[name]
    }
}

fn fault(node: &str, gpu: u32, xid: u64) -> Option<GpuFault> {
    Some(GpuFault {
        index: gpu,
        uuid: format!("GPU-{node}-{gpu}"),
        xid,
    })
}

#[test]
fn xid_fails_the_attempt_and_requeues_without_a_retry() {
    let mut h = H::new();
    h.apply(reg("n1", 4, 0)).unwrap();
    h.submit("train", 1, 0);
    h.bind("train", "n1", &[1]);
    h.report("train", 0, TaskPhase::Running, None);
    h.report("train", 0, TaskPhase::Failed, fault("n1", 1, 48));

    let j = &h.s.jobs["train"];
    assert_eq!(j.status.phase, JobPhase::Pending, "requeued, not failed");
    assert_eq!(j.status.attempt, 2);
    assert_eq!(j.status.requeues, 1);
    assert_eq!(j.status.preemptions, 0);
    let past = &j.status.past_attempts[0];
    assert!(
        past.reason
            .contains("GPU 1 (GPU-n1-1) reported XID 48 (double-bit ECC error)"),
        "{past:?}"
    );
    let reasons: Vec<&str> = j.status.events.iter().map(|e| e.reason.as_str()).collect();
    assert!(
        reasons.contains(&"GpuFault") && reasons.contains(&"Requeued"),
        "{reasons:?}"
    );
    // The GPU is out of service; XID 48 alone does not cordon the node.
    let n = h.node("n1");
    assert!(!n.status.gpus[1].healthy);
    assert_eq!(n.status.gpus[1].xid, 48);
    assert!(n.status.gpus[0].healthy);
    assert!(!n.spec.unschedulable);
    assert_eq!(n.status.events[0].reason, "GpuFault");
    // Nothing is left held by the failed attempt.
    assert!(h.s.usage("n1").gpu_milli.values().all(|m| *m == 0));

    // Runs again (elsewhere on the node) and succeeds with retries: 0.
    h.bind("train", "n1", &[2]);
    h.report("train", 0, TaskPhase::Running, None);
    h.report("train", 0, TaskPhase::Succeeded, None);
    assert_eq!(h.s.jobs["train"].status.phase, JobPhase::Succeeded);
}

#[test]
fn an_ordinary_failure_still_uses_the_retry() {
    let mut h = H::new();
    h.apply(reg("n1", 4, 0)).unwrap();
    h.submit("a", 1, 0);
    h.bind("a", "n1", &[0]);
    h.report("a", 0, TaskPhase::Running, None);
    h.report("a", 0, TaskPhase::Failed, fault("n1", 0, 48));
    h.bind("a", "n1", &[1]);
    h.report("a", 0, TaskPhase::Running, None);
    // Attempt 2 fails on its own: with retries 0 (and one free requeue) the job fails.
    h.report("a", 0, TaskPhase::Failed, None);
    assert_eq!(h.s.jobs["a"].status.phase, JobPhase::Failed);
}

#[test]
fn a_gang_is_requeued_whole() {
    let mut h = H::new();
    h.apply(reg("n1", 4, 0)).unwrap();
    h.submit("gang", 2, 0);
    h.bind("gang", "n1", &[0, 1]);
    h.report("gang", 0, TaskPhase::Running, None);
    h.report("gang", 1, TaskPhase::Running, None);
    h.report("gang", 1, TaskPhase::Failed, fault("n1", 1, 95));
    let j = &h.s.jobs["gang"];
    assert_eq!(j.status.phase, JobPhase::Pending);
    assert_eq!(j.status.tasks.len(), 2);
    assert!(j.status.tasks.iter().all(|t| t.phase == TaskPhase::Pending));
    assert!(h.s.usage("n1").gpu_milli.values().all(|m| *m == 0));
}

#[test]
fn falling_off_the_bus_cordons_the_node_with_the_reason() {
    let mut h = H::new();
    h.apply(reg("n1", 2, 0)).unwrap();
    h.submit("a", 1, 0);
    h.bind("a", "n1", &[0]);
    h.report("a", 0, TaskPhase::Failed, fault("n1", 0, 79));
    let n = h.node("n1");
    assert!(n.spec.unschedulable);
    assert_eq!(
        n.spec.cordon_reason.as_deref(),
        Some("GPU 0 (GPU-n1-0) reported XID 79 (GPU has fallen off the bus): the node needs a reboot")
    );
    assert!(n.status.events.iter().any(|e| e.reason == "Cordoned"));
}

#[test]
fn enough_unhealthy_gpus_cordon_the_node() {
    let mut h = H::new();
    h.apply(reg("n1", 4, 2)).unwrap();
    h.submit("a", 1, 0);
    h.bind("a", "n1", &[0]);
    h.report("a", 0, TaskPhase::Failed, fault("n1", 0, 74));
    assert!(!h.node("n1").spec.unschedulable, "one of two");
    // The second arrives with a registration (no task on that GPU).
    let mut n = gpuctl_testkit::node("n1")
        .gpus(4, gpuctl_testkit::A100)
        .cpu_milli(64_000)
        .memory_bytes(256 << 30)
        .build();
    n.status.cordon_after_unhealthy_gpus = 2;
    for i in [0, 3] {
        n.status.gpus[i].healthy = false;
        n.status.gpus[i].xid = if i == 0 { 74 } else { 63 };
    }
    h.apply(register(&n)).unwrap();
    let node = h.node("n1");
    assert!(node.spec.unschedulable);
    assert_eq!(
        node.spec.cordon_reason.as_deref(),
        Some("2 unhealthy GPU(s), at or above --cordon-after-unhealthy-gpus 2")
    );
    let faults = node
        .status
        .events
        .iter()
        .filter(|e| e.reason == "GpuFault")
        .count();
    assert_eq!(
        faults, 2,
        "GPU 0 once (not again on registering), GPU 3 once"
    );

    // An admin's uncordon holds until another GPU fails.
    h.apply(Command::Cordon {
        node: "n1".into(),
        unschedulable: false,
        reason: None,
        evict: false,
    })
    .unwrap();
    h.apply(register(&n)).unwrap();
    assert!(!h.node("n1").spec.unschedulable);
    assert_eq!(h.node("n1").spec.cordon_reason, None);
    n.status.gpus[2].healthy = false;
    n.status.gpus[2].xid = 92;
    h.apply(register(&n)).unwrap();
    assert!(h.node("n1").spec.unschedulable);
}

#[test]
fn no_rule_no_cordon() {
    let mut h = H::new();
    h.apply(reg("n1", 4, 0)).unwrap();
    for (gpu, job) in [(0, "a"), (1, "b"), (2, "c")] {
        h.submit(job, 1, 0);
        h.bind(job, "n1", &[gpu]);
        h.report(job, 0, TaskPhase::Failed, fault("n1", gpu, 63));
    }
    assert!(!h.node("n1").spec.unschedulable);
}

#[test]
fn cordon_keeps_its_reason_and_evict_requeues_free() {
    let mut h = H::new();
    h.apply(reg("n1", 4, 0)).unwrap();
    h.apply(reg("n2", 4, 0)).unwrap();
    h.submit("on1", 1, 0);
    h.bind("on1", "n1", &[0]);
    h.submit("on2", 1, 0);
    h.bind("on2", "n2", &[0]);
    h.apply(Command::Cordon {
        node: "n1".into(),
        unschedulable: true,
        reason: Some("drain: kernel upgrade".into()),
        evict: false,
    })
    .unwrap();
    assert_eq!(
        h.node("n1").spec.cordon_reason.as_deref(),
        Some("drain: kernel upgrade")
    );
    assert_eq!(h.s.jobs["on1"].status.phase, JobPhase::Running);
    h.apply(Command::Cordon {
        node: "n1".into(),
        unschedulable: true,
        reason: None,
        evict: true,
    })
    .unwrap();
    let j = &h.s.jobs["on1"];
    assert_eq!(j.status.phase, JobPhase::Pending);
    assert_eq!(j.status.requeues, 1);
    assert!(j.status.events.iter().any(|e| e.reason == "Evicted"));
    assert_eq!(
        h.s.jobs["on2"].status.phase,
        JobPhase::Running,
        "other nodes untouched"
    );
    assert_eq!(
        h.node("n1").spec.cordon_reason.as_deref(),
        Some("drain: kernel upgrade"),
        "evicting keeps the reason"
    );
    let err = h
        .apply(Command::Cordon {
            node: "nope".into(),
            unschedulable: true,
            reason: None,
            evict: true,
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "node \"nope\" not found");
}

#[test]
fn a_stale_fault_report_changes_nothing() {
    let mut h = H::new();
    h.apply(reg("n1", 2, 0)).unwrap();
    h.submit("a", 1, 0);
    h.bind("a", "n1", &[0]);
    h.report("a", 0, TaskPhase::Failed, fault("n1", 0, 48));
    let before = h.s.jobs["a"].clone();
    // The same report again (a retried send) names attempt 1: ignored.
    let report = TaskReport {
        node: "n1".into(),
        job: "a".into(),
        index: 0,
        attempt: 1,
        phase: TaskPhase::Failed,
        exit_code: Some(-1),
        message: None,
        pid: None,
        outputs: None,
        port: None,
        usage: None,
        gpu_fault: fault("n1", 0, 48),
    };
    h.apply(Command::TaskReport { report }).unwrap();
    assert_eq!(h.s.jobs["a"].status.attempt, before.status.attempt);
    assert_eq!(h.s.jobs["a"].status.requeues, 1);
}
