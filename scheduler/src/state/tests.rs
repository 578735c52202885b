//! Tests of the state machine: jobs, gangs, retries, nodes, queues,
//! request records, preemption, deletes and the stored form.

use super::testutil::register;
use super::*;
use gpuctl_common::api::{GpuShare, Job, JobPhase, NodePhase, TaskPhase};
use gpuctl_common::queue::Queue;

fn reg(name: &str, gpus: u32) -> Command {
    let n = gpuctl_testkit::node(name)
        .gpus(gpus, gpuctl_testkit::A100)
        .cpu_milli(64_000)
        .memory_bytes(256 << 30);
    register(&n.build())
}

fn job(name: &str, replicas: u32, gpus: f64, retries: u32) -> Job {
    gpuctl_testkit::job(name)
        .replicas(replicas)
        .gpus(gpus)
        .max_retries(retries)
        .build()
}

struct Harness {
    s: State,
    index: u64,
}

impl Harness {
    fn new() -> Self {
        Harness {
            s: State::default(),
            index: 0,
        }
    }
    fn apply(&mut self, cmd: Command) -> Result<Applied, ApplyError> {
        self.index += 1;
        let env = Envelope::new(1000 * self.index, cmd);
        let r = self.s.apply(self.index, &env);
        self.s.check_index();
        r
    }
    fn bind(&mut self, job: &str, node: &str, gpu_sets: &[&[u32]]) -> Applied {
        let attempt = self.s.jobs[job].status.attempt;
        let tasks = gpu_sets
            .iter()
            .enumerate()
            .map(|(i, set)| TaskPlacement {
                index: i as u32,
                node: node.into(),
                gpus: set
                    .iter()
                    .map(|g| GpuShare {
                        index: *g,
                        uuid: format!("GPU-{node}-{g}"),
                        milli: 1000,
                    })
                    .collect(),
            })
            .collect();
        self.apply(Command::Bind {
            bindings: vec![Binding {
                job: job.into(),
                attempt,
                tasks,
            }],
        })
        .unwrap()
    }
    fn report(&mut self, job: &str, index: u32, phase: TaskPhase, code: Option<i32>) {
        let t = &self.s.jobs[job].status.tasks[index as usize];
        let r = TaskReport {
            node: t.node.clone().unwrap_or_default(),
            job: job.into(),
            index,
            attempt: self.s.jobs[job].status.attempt,
            phase,
            exit_code: code,
            message: None,
            pid: Some(42),
            outputs: None,
            port: None,
            usage: None,
            gpu_fault: None,
        };
        self.apply(Command::TaskReport { report: r }).unwrap();
    }
    fn check_usage(&self) {
        let mut rebuilt = self.s.clone();
        rebuilt.rebuild_usage();
        for n in self.s.nodes.keys() {
            assert_eq!(
                self.s.usage(n),
                rebuilt.usage(n),
                "usage index drifted on {n}"
            );
        }
    }
}

#[test]
fn a_nodes_word_on_a_started_task_is_an_event() {
    let mut h = Harness::new();
    h.apply(reg("n1", 4)).unwrap();
    h.apply(Command::SubmitJob {
        job: Box::new(job("a", 1, 1.0, 0)),
    })
    .unwrap();
    h.bind("a", "n1", &[&[0]]);
    let r = TaskReport {
        node: "n1".into(),
        job: "a".into(),
        index: 0,
        attempt: 1,
        phase: TaskPhase::Running,
        exit_code: None,
        message: Some("image \"x\" not used: node n1 runs tasks as processes".into()),
        pid: Some(42),
        outputs: None,
        port: None,
        usage: None,
        gpu_fault: None,
    };
    h.apply(Command::TaskReport { report: r }).unwrap();
    let j = &h.s.jobs["a"];
    assert_eq!(j.status.tasks[0].phase, TaskPhase::Running);
    let e = j.status.events.last().expect("an event");
    assert_eq!(e.reason, "NodeWarning");
    assert_eq!(
        e.message,
        "task 0 on n1: image \"x\" not used: node n1 runs tasks as processes"
    );
    assert!(j.status.tasks[0]
        .message
        .as_deref()
        .unwrap()
        .contains("not used"));
}

#[test]
fn submit_bind_run_succeed() {
    let mut h = Harness::new();
    h.apply(reg("n1", 4)).unwrap();
    h.apply(Command::SubmitJob {
        job: Box::new(job("a", 2, 2.0, 0)),
    })
    .unwrap();
    assert_eq!(h.s.jobs["a"].status.phase, JobPhase::Pending);
    assert_eq!(h.s.jobs["a"].metadata.queue.as_deref(), Some("default"));
    let Applied::Bound { applied, refused } = h.bind("a", "n1", &[&[0, 1], &[2, 3]]) else {
        panic!()
    };
    assert_eq!((applied.len(), refused.len()), (1, 0));
    assert_eq!(h.s.usage("n1").gpu_milli.len(), 4);
    assert_eq!(h.s.jobs["a"].status.tasks[1].local_rank, 1);
    h.report("a", 0, TaskPhase::Running, None);
    h.report("a", 1, TaskPhase::Running, None);
    h.report("a", 0, TaskPhase::Succeeded, Some(0));
    assert_eq!(h.s.jobs["a"].status.phase, JobPhase::Running);
    h.report("a", 1, TaskPhase::Succeeded, Some(0));
    assert_eq!(h.s.jobs["a"].status.phase, JobPhase::Succeeded);
    assert!(h.s.usage("n1").gpu_milli.is_empty());
    h.check_usage();
}

#[test]
fn duplicate_submit_is_refused_and_changes_nothing() {
    let mut h = Harness::new();
    h.apply(Command::SubmitJob {
        job: Box::new(job("a", 1, 1.0, 0)),
    })
    .unwrap();
    let before = h.s.jobs["a"].clone();
    let _ = h.s.take_dirty();
    let e = h
        .apply(Command::SubmitJob {
            job: Box::new(job("a", 2, 1.0, 0)),
        })
        .unwrap_err();
    assert!(matches!(e, ApplyError::AlreadyExists { .. }));
    assert_eq!(h.s.jobs["a"], before);
    assert!(h.s.take_dirty().is_empty());
}

#[test]
fn over_commit_is_refused() {
    let mut h = Harness::new();
    h.apply(reg("n1", 4)).unwrap();
    h.apply(Command::SubmitJob {
        job: Box::new(job("a", 1, 4.0, 0)),
    })
    .unwrap();
    h.apply(Command::SubmitJob {
        job: Box::new(job("b", 1, 1.0, 0)),
    })
    .unwrap();
    h.bind("a", "n1", &[&[0, 1, 2, 3]]);
    let Applied::Bound { refused, .. } = h.bind("b", "n1", &[&[2]]) else {
        panic!()
    };
    assert_eq!(refused.len(), 1);
    assert_eq!(h.s.jobs["b"].status.phase, JobPhase::Pending);
    h.check_usage();
}

#[test]
fn a_binding_is_rechecked_with_the_placement_fit() {
    // bind uses placement's own fit: a GPU of a model the task does not
    // accept, or a gang whose tasks together overfill a GPU, is refused and
    // the job stays pending, with the reason placement would give.
    let mut h = Harness::new();
    h.apply(reg("n1", 4)).unwrap();
    let mut h100 = job("h100", 1, 1.0, 0);
    h100.spec.tasks[0].resources.gpu_model = Some("H100".into());
    h.apply(Command::SubmitJob {
        job: Box::new(h100),
    })
    .unwrap();
    let Applied::Bound { applied, refused } = h.bind("h100", "n1", &[&[0]]) else {
        panic!()
    };
    assert!(applied.is_empty());
    assert_eq!(refused.len(), 1);
    assert!(
        matches!(&refused[0].1, ApplyError::StaleBinding { .. }),
        "{:?}",
        refused[0].1
    );
    assert_eq!(h.s.jobs["h100"].status.phase, JobPhase::Pending);

    h.apply(Command::SubmitJob {
        job: Box::new(job("pair", 2, 1.0, 0)),
    })
    .unwrap();
    let Applied::Bound { refused, .. } = h.bind("pair", "n1", &[&[1], &[1]]) else {
        panic!()
    };
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0]
            .1
            .to_string()
            .contains("GPU 1 on n1 is over-committed"),
        "{}",
        refused[0].1
    );
    assert_eq!(h.s.jobs["pair"].status.phase, JobPhase::Pending);
    h.check_usage();
}

#[test]
fn failure_retries_whole_gang_then_fails() {
    let mut h = Harness::new();
    h.apply(reg("n1", 4)).unwrap();
    h.apply(Command::SubmitJob {
        job: Box::new(job("a", 2, 1.0, 1)),
    })
    .unwrap();
    h.bind("a", "n1", &[&[0], &[1]]);
    h.report("a", 0, TaskPhase::Running, None);
    h.report("a", 1, TaskPhase::Failed, Some(3));
    let j = &h.s.jobs["a"];
    assert_eq!((j.status.phase, j.status.attempt), (JobPhase::Pending, 2));
    assert!(j.status.tasks.iter().all(|t| t.phase == TaskPhase::Pending));
    assert!(
        h.s.usage("n1").gpu_milli.is_empty(),
        "the failed attempt released everything"
    );
    // A late report of the old attempt is ignored.
    let stale = TaskReport {
        node: "n1".into(),
        job: "a".into(),
        index: 0,
        attempt: 1,
        phase: TaskPhase::Succeeded,
        exit_code: Some(0),
        message: None,
        pid: None,
        outputs: None,
        port: None,
        usage: None,
        gpu_fault: None,
    };
    h.apply(Command::TaskReport { report: stale }).unwrap();
    assert_eq!(h.s.jobs["a"].status.phase, JobPhase::Pending);
    h.bind("a", "n1", &[&[2], &[3]]);
    h.report("a", 0, TaskPhase::Failed, Some(1));
    let j = &h.s.jobs["a"];
    assert_eq!(j.status.phase, JobPhase::Failed);
    assert!(j.status.message.as_deref().unwrap().contains("exit code 1"));
    h.check_usage();
}

#[test]
fn lost_node_fails_its_tasks() {
    let mut h = Harness::new();
    h.apply(reg("n1", 2)).unwrap();
    h.apply(Command::SubmitJob {
        job: Box::new(job("a", 1, 2.0, 1)),
    })
    .unwrap();
    h.bind("a", "n1", &[&[0, 1]]);
    h.report("a", 0, TaskPhase::Running, None);
    h.apply(Command::NodeLost { node: "n1".into() }).unwrap();
    assert_eq!(h.s.nodes["n1"].status.phase, NodePhase::Lost);
    let j = &h.s.jobs["a"];
    assert_eq!((j.status.phase, j.status.attempt), (JobPhase::Pending, 2));
    assert!(j.status.events.iter().any(|e| e.reason == "NodeLost"));
    // Binding onto a lost node is refused.
    let Applied::Bound { refused, .. } = h.bind("a", "n1", &[&[0, 1]]) else {
        panic!()
    };
    assert_eq!(refused.len(), 1);
    // It comes back by registering again.
    h.apply(reg("n1", 2)).unwrap();
    assert_eq!(h.s.nodes["n1"].status.phase, NodePhase::Ready);
    h.check_usage();
}

#[test]
fn cancel_releases_and_is_final() {
    let mut h = Harness::new();
    h.apply(reg("n1", 2)).unwrap();
    h.apply(Command::SubmitJob {
        job: Box::new(job("a", 1, 2.0, 3)),
    })
    .unwrap();
    h.bind("a", "n1", &[&[0, 1]]);
    h.apply(Command::CancelJob { name: "a".into() }).unwrap();
    assert_eq!(h.s.jobs["a"].status.phase, JobPhase::Cancelled);
    assert!(h.s.usage("n1").gpu_milli.is_empty());
    assert!(matches!(
        h.apply(Command::CancelJob { name: "a".into() }),
        Err(ApplyError::FailedPrecondition(_))
    ));
    assert!(matches!(
        h.apply(Command::CancelJob { name: "zz".into() }),
        Err(ApplyError::NotFound { .. })
    ));
}

#[test]
fn cordoned_node_refuses_binding() {
    let mut h = Harness::new();
    h.apply(reg("n1", 2)).unwrap();
    h.apply(Command::Cordon {
        node: "n1".into(),
        unschedulable: true,
        reason: None,
        evict: false,
    })
    .unwrap();
    h.apply(Command::SubmitJob {
        job: Box::new(job("a", 1, 1.0, 0)),
    })
    .unwrap();
    let Applied::Bound { refused, .. } = h.bind("a", "n1", &[&[0]]) else {
        panic!()
    };
    assert_eq!(refused.len(), 1);
}

fn queue(name: &str, weight: u32, version: Option<u64>) -> Box<Queue> {
    let q = gpuctl_testkit::queue(name).weight(weight);
    Box::new(q.resource_version(version).build())
}

fn put(h: &mut Harness, name: &str, weight: u32, version: Option<u64>) -> Result<u64, ApplyError> {
    match h.apply(Command::PutQueue {
        queue: queue(name, weight, version),
    })? {
        Applied::Queue(q) => Ok(q.metadata.resource_version.unwrap()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn queue_updates_compare_and_set_on_resource_version() {
    let mut h = Harness::new();
    let v1 = put(&mut h, "research", 1, None).unwrap();
    assert_eq!(v1, 1);
    // A blind write replaces whatever is there.
    let v2 = put(&mut h, "research", 2, None).unwrap();
    assert_eq!(v2, 2);
    // A compare-and-set on the current version wins...
    let v3 = put(&mut h, "research", 3, Some(v2)).unwrap();
    assert_eq!(h.s.queues["research"].spec.weight, 3);
    // ... and one on a stale version is refused and changes nothing.
    let e = put(&mut h, "research", 9, Some(v2)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict);
    assert!(e.to_string().contains("get it again"), "{e}");
    assert_eq!(h.s.queues["research"].spec.weight, 3);
    assert_eq!(h.s.queues["research"].metadata.resource_version, Some(v3));
    assert_eq!(h.s.queues["research"].metadata.uid, Some(1));
    // An update of a queue that does not exist is not a create.
    let e = put(&mut h, "nope", 1, Some(1)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert!(!h.s.queues.contains_key("nope"));
}

#[test]
fn jobs_name_existing_queues() {
    let mut h = Harness::new();
    let mut j = job("a", 1, 1.0, 0);
    j.metadata.queue = Some("research".into());
    let e = h
        .apply(Command::SubmitJob {
            job: Box::new(j.clone()),
        })
        .unwrap_err();
    assert!(
        e.to_string().contains("queue \"research\" does not exist"),
        "{e}"
    );
    put(&mut h, "research", 1, None).unwrap();
    h.apply(Command::SubmitJob { job: Box::new(j) }).unwrap();
    assert_eq!(h.s.queue_status("research").pending_jobs, 1);
    // The default queue needs no object.
    h.apply(Command::SubmitJob {
        job: Box::new(job("b", 1, 1.0, 0)),
    })
    .unwrap();
    assert_eq!(h.s.queue_status("default").pending_jobs, 1);
}

fn with_id(now_ms: u64, id: &str, cmd: Command) -> Envelope {
    let mut env = Envelope::new(now_ms, cmd);
    env.request_id = Some(id.to_string());
    env
}

#[test]
fn a_retried_request_is_answered_from_its_record_not_applied_again() {
    let mut s = State::default();
    let cas = |weight, version| Command::PutQueue {
        queue: queue("q", weight, version),
    };
    s.apply(1, &with_id(10, "r1", cas(1, None))).unwrap();
    let Applied::Queue(q) = s.apply(2, &with_id(20, "r2", cas(2, Some(1)))).unwrap() else {
        panic!()
    };
    assert_eq!(q.metadata.resource_version, Some(2));
    // The retry of r2 (its first answer was lost) must not turn into a
    // conflict with its own write, nor apply twice.
    let Applied::Queue(again) = s.apply(3, &with_id(30, "r2", cas(2, Some(1)))).unwrap() else {
        panic!()
    };
    assert_eq!(again.metadata.resource_version, Some(2));
    // A refusal is repeated as the same refusal.
    let e = s.apply(4, &with_id(40, "r3", cas(5, Some(1)))).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict);
    s.apply(5, &with_id(50, "r4", cas(6, None))).unwrap();
    let e2 = s.apply(6, &with_id(60, "r3", cas(5, Some(1)))).unwrap_err();
    assert_eq!(
        (e2.code(), e2.to_string()),
        (ErrorCode::Conflict, e.to_string())
    );
    // The same for job creates: the retry is not "already exists".
    let submit = Command::SubmitJob {
        job: Box::new(job("a", 1, 1.0, 0)),
    };
    s.apply(7, &with_id(70, "j1", submit.clone())).unwrap();
    assert!(matches!(
        s.apply(8, &with_id(80, "j1", submit.clone())).unwrap(),
        Applied::Job(_)
    ));
    assert_eq!(s.jobs["a"].metadata.uid, Some(7));
    // Records survive a restart (they are stored objects)...
    let back = State::from_stored(&s.stored_objects()).unwrap();
    assert_eq!(back.request("r2"), s.request("r2"));
    assert_eq!(back.queues, s.queues);
    // ... and are forgotten after the TTL, deterministically.
    let mut s = back;
    let late = 80 + REQUEST_TTL_MS + 1;
    s.apply(9, &with_id(late, "x", cas(7, None))).unwrap();
    assert!(s.request("r1").is_none() && s.request("j1").is_none());
    assert!(s.request("x").is_some());
    assert!(s.take_dirty().contains(&ObjKey::Request("r1".to_string())));
    assert!(s.object_json(&ObjKey::Request("r1".into())).is_none());
}

#[test]
fn stored_objects_round_trip_and_unknown_keys_are_skipped() {
    let mut h = Harness::new();
    h.apply(reg("n1", 2)).unwrap();
    put(&mut h, "q", 4, None).unwrap();
    let mut stored = h.s.stored_objects();
    stored.push(("widget/x".into(), b"{}".to_vec()));
    let back = State::from_stored(&stored).unwrap();
    assert_eq!((back.nodes.len(), back.queues.len()), (1, 1));
    stored.push(("queue/bad".into(), b"{".to_vec()));
    let e = State::from_stored(&stored).unwrap_err();
    assert!(e.contains("queue/bad"), "{e}");
}

#[test]
fn preemption_requeues_without_using_a_retry() {
    let mut h = Harness::new();
    h.apply(reg("n1", 2)).unwrap();
    h.apply(Command::SubmitJob {
        job: Box::new(job("low", 1, 2.0, 0)),
    })
    .unwrap();
    h.bind("low", "n1", &[&[0, 1]]);
    h.report("low", 0, TaskPhase::Running, None);
    assert_eq!(h.s.usage("n1").gpu_milli.len(), 2);
    // A stale attempt number changes nothing.
    h.apply(Command::Preempt {
        victims: vec![("low".into(), 7)],
        by: "high".into(),
        reason: "preempted by job \"high\"".into(),
    })
    .unwrap();
    assert_eq!(h.s.jobs["low"].status.phase, JobPhase::Running);
    let Applied::Bound { applied, .. } = h
        .apply(Command::Preempt {
            victims: vec![("low".into(), 1), ("ghost".into(), 1)],
            by: "high".into(),
            reason: "preempted by job \"high\" (priority 5 > 0)".into(),
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(applied, ["low"]);
    let j = &h.s.jobs["low"];
    assert_eq!(
        (j.status.phase, j.status.attempt, j.status.preemptions),
        (JobPhase::Pending, 2, 1)
    );
    assert!(h.s.usage("n1").gpu_milli.is_empty(), "GPUs released");
    assert!(j
        .status
        .events
        .iter()
        .any(|e| e.reason == "Preempted" && e.message.contains("priority 5 > 0")));
    // maxRetries is 0, yet the preempted job runs again; a real failure
    // of that attempt then ends it.
    h.bind("low", "n1", &[&[0, 1]]);
    h.report("low", 0, TaskPhase::Failed, Some(1));
    assert_eq!(h.s.jobs["low"].status.phase, JobPhase::Failed);
}

#[test]
fn deletes_take_finished_jobs_and_workflows_with_every_stored_record() {
    let mut h = Harness::new();
    h.apply(reg("n1", 2)).unwrap();
    h.apply(Command::SubmitJob {
        job: Box::new(job("a", 1, 1.0, 0)),
    })
    .unwrap();
    let e = h
        .apply(Command::DeleteJob { name: "a".into() })
        .unwrap_err();
    assert!(e.to_string().contains("cancel it first"), "{e}");
    h.apply(Command::CancelJob { name: "a".into() }).unwrap();
    h.s.take_dirty();
    h.apply(Command::DeleteJob { name: "a".into() }).unwrap();
    assert!(!h.s.jobs.contains_key("a"));
    assert!(h.s.take_dirty().contains(&ObjKey::Job("a".into())));

    let yaml = "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n      - {name: s, template: t}\n  - name: t\n    container: {image: x, command: [\"true\"]}\n";
    h.apply(Command::SubmitWorkflow {
        name: "wf".into(),
        workflow: Box::new(gpuctl_pipelines::parse_workflow("wf.yaml", yaml).unwrap()),
        arguments: Default::default(),
        owner: None,
    })
    .unwrap();
    assert!(h
        .s
        .jobs
        .values()
        .any(|j| j.metadata.labels.get(LABEL_WORKFLOW).map(String::as_str) == Some("wf")));
    let e = h
        .apply(Command::DeleteWorkflow { name: "wf".into() })
        .unwrap_err();
    assert!(e.to_string().contains("cancel it first"), "{e}");
    h.apply(Command::CancelWorkflow { name: "wf".into() })
        .unwrap();
    let before = h.s.stored_objects();
    assert!(before.iter().any(|(k, _)| k.starts_with("wfnode/wf/")));
    h.s.take_dirty();
    h.apply(Command::DeleteWorkflow { name: "wf".into() })
        .unwrap();
    let dirty = h.s.take_dirty();
    // Every record the workflow had is marked, and none is left to store.
    let records: Vec<&String> = before
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("wfnode/wf/") || *k == "workflow/wf")
        .collect();
    assert!(records.len() >= 2, "{records:?}");
    for k in records {
        assert!(
            dirty.iter().any(|d| &d.storage_key() == k),
            "{k} not marked for deletion"
        );
    }
    for d in &dirty {
        assert!(h.s.object_json(d).is_none(), "{d:?} still stored");
    }
    assert!(h.s.workflows.is_empty());
    assert!(h.s.jobs.is_empty(), "its step jobs went with it");
}

#[test]
fn envelope_round_trips_as_json() {
    let env = Envelope::new(
        7,
        Command::SubmitJob {
            job: Box::new(job("a", 2, 0.5, 0)),
        },
    );
    let bytes = serde_json::to_vec(&env).unwrap();
    let back: Envelope = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, env);
}

#[test]
fn an_oom_killed_task_keeps_its_message_and_usage_and_says_so_in_the_events() {
    let mut h = Harness::new();
    h.apply(reg("n1", 4)).unwrap();
    h.apply(Command::SubmitJob {
        job: Box::new(job("a", 1, 1.0, 0)),
    })
    .unwrap();
    h.bind("a", "n1", &[&[0]]);
    h.report("a", 0, TaskPhase::Running, None);
    let oom = "OOMKilled: the task used more than its memory limit of 64Mi (exited with code 137)";
    let usage = gpuctl_common::api::TaskUsage {
        cpu_ms: 1200,
        memory_peak_bytes: 64 << 20,
    };
    let r = TaskReport {
        node: "n1".into(),
        job: "a".into(),
        index: 0,
        attempt: 1,
        phase: TaskPhase::Failed,
        exit_code: Some(137),
        message: Some(oom.into()),
        pid: None,
        outputs: None,
        port: None,
        usage: Some(usage),
        gpu_fault: None,
    };
    h.apply(Command::TaskReport { report: r }).unwrap();
    let j = &h.s.jobs["a"];
    assert_eq!(j.status.phase, JobPhase::Failed);
    let t = &j.status.tasks[0];
    assert_eq!(t.message.as_deref(), Some(oom));
    assert_eq!(t.usage, Some(usage));
    assert!(
        j.status
            .events
            .iter()
            .any(|e| e.message.contains("task 0 exit code 137: OOMKilled: ")),
        "{:?}",
        j.status.events
    );
    h.check_usage();
}

/// The jobs-by-node index and the per-node change log follow each apply
/// (the harness checks the index against a scan after every command), name
/// only the nodes a command touched, and are rebuilt when a state is loaded.
#[test]
fn node_index_and_change_log_follow_the_change() {
    let mut h = Harness::new();
    h.apply(reg("n1", 4)).unwrap();
    h.apply(reg("n2", 4)).unwrap();
    h.apply(reg("n3", 4)).unwrap();
    h.apply(Command::SubmitJob {
        job: Box::new(job("gang", 2, 4.0, 1)),
    })
    .unwrap();
    let share = |node: &str, g: u32| GpuShare {
        index: g,
        uuid: format!("GPU-{node}-{g}"),
        milli: 1000,
    };
    let tasks = ["n1", "n2"]
        .iter()
        .enumerate()
        .map(|(i, n)| TaskPlacement {
            index: i as u32,
            node: n.to_string(),
            gpus: (0..4).map(|g| share(n, g)).collect(),
        })
        .collect();
    let before = h.s.node_changes().cursor();
    h.apply(Command::Bind {
        bindings: vec![Binding {
            job: "gang".into(),
            attempt: 1,
            tasks,
        }],
    })
    .unwrap();
    let changed: Vec<&str> = h.s.node_changes().since(before).unwrap().collect();
    assert_eq!(changed, ["n1", "n2"], "the gang's nodes, not n3");
    let on = |s: &State, n: &str| -> Vec<(String, u32)> {
        s.tasks_on_node(n)
            .map(|(j, t)| (j.metadata.name.clone(), t.index))
            .collect()
    };
    assert_eq!(on(&h.s, "n1"), [("gang".to_string(), 0)]);
    assert_eq!(on(&h.s, "n2"), [("gang".to_string(), 1)]);
    assert!(on(&h.s, "n3").is_empty());
    assert_eq!(h.s.counts().jobs, [0, 1, 0, 0, 0], "one job running");
    assert_eq!(h.s.gpu_milli_allocated(), 8000);

    // A job that only waits changes no node.
    let before = h.s.node_changes().cursor();
    h.apply(Command::SubmitJob {
        job: Box::new(job("waits", 1, 4.0, 0)),
    })
    .unwrap();
    assert_eq!(h.s.node_changes().since(before).unwrap().count(), 0);

    // A state loaded from its stored objects has the same index, and a
    // cursor of the old state reads as "look at everything".
    let back = State::from_stored(&h.s.stored_objects()).unwrap();
    back.check_index();
    assert_eq!(on(&back, "n2"), on(&h.s, "n2"));
    assert!(back.node_changes().since(before).is_none());

    // n2 is lost: the gang's attempt fails on both nodes and waits again.
    let before = h.s.node_changes().cursor();
    h.apply(Command::NodeLost { node: "n2".into() }).unwrap();
    let mut changed: Vec<&str> = h.s.node_changes().since(before).unwrap().collect();
    changed.sort();
    assert_eq!(changed, ["n1", "n2"]);
    assert!(on(&h.s, "n1").is_empty() && on(&h.s, "n2").is_empty());
    assert_eq!(h.s.counts().jobs, [2, 0, 0, 0, 0], "both wait");
    assert_eq!((h.s.counts().nodes_ready, h.s.counts().nodes_lost), (2, 1));
    assert_eq!(h.s.counts().gpus_ready, 8);
    assert_eq!(h.s.gpu_milli_allocated(), 0);
}

/// The live jobs a round reads leave the index when they end, and every
/// job stays listed in submission order, pages included.
#[test]
fn live_jobs_leave_the_index_when_they_end_and_pages_follow_submission() {
    let mut h = Harness::new();
    h.apply(reg("n1", 2)).unwrap();
    for name in ["z", "y", "x"] {
        let j = job(name, 1, 1.0, 0);
        h.apply(Command::SubmitJob { job: Box::new(j) }).unwrap();
    }
    let live =
        |s: &State| -> Vec<String> { s.live_jobs().map(|j| j.metadata.name.clone()).collect() };
    assert_eq!(live(&h.s), ["x", "y", "z"]);
    h.bind("z", "n1", &[&[0]]);
    h.report("z", 0, TaskPhase::Running, None);
    assert_eq!(live(&h.s), ["x", "y", "z"]);
    h.report("z", 0, TaskPhase::Succeeded, Some(0));
    assert_eq!(live(&h.s), ["x", "y"], "an ended job that holds nothing");
    h.apply(Command::CancelJob { name: "x".into() }).unwrap();
    assert_eq!(live(&h.s), ["y"]);

    let names =
        |jobs: Vec<&Job>| -> Vec<String> { jobs.iter().map(|j| j.metadata.name.clone()).collect() };
    let (all, more) = h.s.jobs_page(None, 0);
    assert_eq!(
        (names(all), more),
        (vec!["z".into(), "y".into(), "x".into()], false)
    );
    let (first, more) = h.s.jobs_page(None, 2);
    let last = first[1];
    let after = (last.metadata.uid.unwrap(), last.metadata.name.as_str());
    assert_eq!(
        (names(first.clone()), more),
        (vec!["z".into(), "y".into()], true)
    );
    let (rest, more) = h.s.jobs_page(Some(after), 2);
    assert_eq!((names(rest), more), (vec!["x".to_string()], false));
}

/// Pending jobs come from the index in placement order: higher priority
/// first, then submission order; bound jobs leave it, retried ones return.
#[test]
fn pending_jobs_in_priority_then_submission_order() {
    let mut h = Harness::new();
    h.apply(reg("n1", 1)).unwrap();
    for (name, priority) in [("a", 0), ("b", 5), ("c", 0), ("d", 5)] {
        let mut j = job(name, 1, 1.0, 1);
        j.spec.priority = priority;
        h.apply(Command::SubmitJob { job: Box::new(j) }).unwrap();
    }
    let names = |s: &State| -> Vec<String> {
        s.pending_jobs()
            .iter()
            .map(|j| j.metadata.name.clone())
            .collect()
    };
    assert_eq!(names(&h.s), ["b", "d", "a", "c"]);
    h.bind("b", "n1", &[&[0]]);
    assert_eq!(names(&h.s), ["d", "a", "c"]);
    h.report("b", 0, TaskPhase::Failed, Some(1));
    assert_eq!(
        names(&h.s),
        ["b", "d", "a", "c"],
        "retried, in its old place"
    );
}
