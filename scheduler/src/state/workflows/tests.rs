//! Tests of workflows in the state machine: steps become jobs in the apply
//! that readies them, failures and cancel, the stored form, job names.

use super::super::testutil::register;
use super::super::{Binding, Command, Envelope, TaskPlacement, TaskReport, WorkflowRecords};
use super::*;
use gpuctl_pipelines::WorkflowPhase;

const WF: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: wf}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: a, template: gen}
      - {name: b, template: echo, dependencies: [a], arguments: {parameters: [{name: m, value: "{{tasks.a.outputs.parameters.p}}"}]}}
      - {name: c, template: echo, dependencies: [a], arguments: {parameters: [{name: m, value: "{{tasks.a.outputs.result}}"}]}}
  - name: gen
    memoize: {key: gen-1, maxAge: 1h, cache: {configMap: {name: c}}}
    script: {image: x, command: [sh], source: "echo hi"}
    outputs: {parameters: [{name: p, valueFrom: {path: p.txt}}]}
  - name: echo
    inputs: {parameters: [{name: m}]}
    container: {image: x, command: [echo, "{{inputs.parameters.m}}"]}
"#;

struct H {
    s: State,
    index: u64,
}

impl H {
    fn apply(&mut self, cmd: Command) -> Result<Applied, ApplyError> {
        self.index += 1;
        let env = Envelope::new(1000 * self.index, cmd);
        let r = self.s.apply(self.index, &env);
        self.s.check_index();
        r
    }
    fn submit(&mut self, name: &str) {
        let wf = gpuctl_pipelines::parse_workflow("wf.yaml", WF).unwrap();
        self.apply(Command::SubmitWorkflow {
            name: name.into(),
            workflow: Box::new(wf),
            arguments: BTreeMap::new(),
            owner: None,
        })
        .unwrap();
    }
    /// Bind a step job and report it finished.
    fn finish(&mut self, job: &str, code: i32, outputs: Option<StepOutputs>) {
        let attempt = self.s.jobs[job].status.attempt;
        let Applied::Bound { applied, .. } = self
            .apply(Command::Bind {
                bindings: vec![Binding {
                    job: job.into(),
                    attempt,
                    tasks: vec![TaskPlacement {
                        index: 0,
                        node: "n1".into(),
                        gpus: vec![],
                    }],
                }],
            })
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(applied, [job]);
        let phase = if code == 0 {
            TaskPhase::Succeeded
        } else {
            TaskPhase::Failed
        };
        self.apply(Command::TaskReport {
            report: TaskReport {
                node: "n1".into(),
                job: job.into(),
                index: 0,
                attempt,
                phase,
                exit_code: Some(code),
                message: None,
                pid: None,
                outputs,
                port: None,
                usage: None,
                gpu_fault: None,
            },
        })
        .unwrap();
    }
}

fn harness() -> H {
    let mut h = H {
        s: State::default(),
        index: 0,
    };
    h.apply(register(&gpuctl_testkit::node("n1").build()))
        .unwrap();
    h
}

#[test]
fn steps_become_jobs_in_the_apply_that_readies_them() {
    let mut h = harness();
    h.submit("wf");
    assert_eq!(h.s.jobs.keys().collect::<Vec<_>>(), ["wf-a"]);
    let a = &h.s.jobs["wf-a"];
    assert_eq!(a.metadata.labels[LABEL_WORKFLOW], "wf");
    assert_eq!(a.metadata.labels[LABEL_STEP], "wf.a");
    assert_eq!(
        a.spec.tasks[0].command,
        ["sh"],
        "the daemon adds the script"
    );
    assert!(h.s.step_of_job(a).unwrap().script_source.is_some());
    assert_eq!(
        a.spec.tasks[0].image.as_deref(),
        Some("x"),
        "the step's image goes to its job (nodes with podman run it)"
    );
    let outputs = StepOutputs {
        parameters: [("p".to_string(), "7".to_string())].into(),
        result: Some("hi\n".into()),
        ..Default::default()
    };
    h.finish("wf-a", 0, Some(outputs));
    // b and c were created by the apply of a's report.
    assert_eq!(h.s.jobs["wf-b"].spec.tasks[0].command, ["echo", "7"]);
    assert_eq!(h.s.jobs["wf-c"].spec.tasks[0].command, ["echo", "hi"]);
    assert!(h.s.memo.contains_key("gen-1"));
    h.finish("wf-b", 0, None);
    h.finish("wf-c", 0, None);
    let w = &h.s.workflows["wf"];
    assert_eq!(w.run.phase(), WorkflowPhase::Succeeded);
    assert!(w.running.is_empty());
    assert_eq!(w.progress(), (3, 3));
    assert_eq!(w.view()["status"]["progress"], "3/3");

    // The same key in a second run completes from the cache: no job.
    h.submit("wf2");
    assert!(!h.s.jobs.contains_key("wf2-a"));
    assert!(h.s.workflows["wf2"].run.task_node("a").unwrap().memoized);
    assert!(h.s.jobs.contains_key("wf2-b"));
}

#[test]
fn a_failed_step_fails_the_run_and_cancel_stops_running_steps() {
    let mut h = harness();
    h.submit("wf");
    h.finish("wf-a", 3, None);
    let w = &h.s.workflows["wf"];
    assert_eq!(w.run.phase(), WorkflowPhase::Failed);
    assert!(!h.s.jobs.contains_key("wf-b"));
    assert!(matches!(
        h.apply(Command::CancelWorkflow { name: "wf".into() }),
        Err(ApplyError::FailedPrecondition(_))
    ));

    h.submit("wf3");
    h.apply(Command::CancelWorkflow { name: "wf3".into() })
        .unwrap();
    assert_eq!(h.s.jobs["wf3-a"].status.phase, JobPhase::Cancelled);
    assert_eq!(h.s.workflows["wf3"].run.phase(), WorkflowPhase::Failed);
    assert!(matches!(
        h.apply(Command::CancelWorkflow { name: "zz".into() }),
        Err(ApplyError::NotFound { .. })
    ));
}

#[test]
fn workflows_and_memo_survive_a_restart_through_their_stored_form() {
    let mut h = harness();
    h.submit("wf");
    h.finish(
        "wf-a",
        0,
        Some(StepOutputs {
            parameters: [("p".to_string(), "7".to_string())].into(),
            result: Some("hi".into()),
            ..Default::default()
        }),
    );
    let dirty = h.s.take_dirty();
    let mut records = WorkflowRecords::default();
    let mut memo = Vec::new();
    for k in &dirty {
        let Some(bytes) = h.s.object_json(k) else {
            continue;
        };
        if let ObjKey::Memo(_) = k {
            memo.push(serde_json::from_slice(&bytes).unwrap());
        } else {
            records.add(k.storage_key().as_bytes(), &bytes).unwrap();
        }
    }
    let wfs = records.finish();
    assert_eq!(wfs.len(), 1);
    let jobs = h.s.jobs.values().cloned().collect();
    let nodes = h.s.nodes.values().cloned().collect();
    let back = State::from_objects(jobs, nodes).with_workflows(wfs, memo);
    // Compared in their stored form: fields the format ignores (such as
    // memoize.cache) are not kept.
    let stored = |s: &State| serde_json::to_value(&s.workflows).unwrap();
    assert_eq!(stored(&back), stored(&h.s));
    assert_eq!(back.memo, h.s.memo);
    // The restored replica goes on exactly as the original.
    let mut h2 = H {
        s: back,
        index: h.index,
    };
    h.finish("wf-b", 0, None);
    h2.finish("wf-b", 0, None);
    assert_eq!(stored(&h2.s), stored(&h.s));
    h.finish("wf-c", 0, None);
    h2.finish("wf-c", 0, None);
    assert_eq!(stored(&h2.s), stored(&h.s));
    assert_eq!(h2.s.workflows["wf"].run.phase(), WorkflowPhase::Succeeded);
}

#[test]
fn job_names_are_dns_labels() {
    assert_eq!(sanitize_job_name("wf.train(0:a/b)"), "wf-train-0-a-b");
    assert_eq!(sanitize_job_name("..."), "step");
    let s = State::default();
    let long = format!("wf.{}", "x".repeat(80));
    let n = s.step_job_name(&long);
    assert!(n.len() <= 63 && validate_name("n", &n).is_ok(), "{n}");
}

/// A fan-out of the largest width a workflow may have (10,000 items) fits
/// one Raft entry well under gRPC's 4 MiB message size, and one of 3,000
/// steps runs to the end with every stored record small: the header holds
/// no document and no nodes, each step's end rewrites only the nodes it
/// changed. Not timed.
#[test]
fn a_fan_out_of_thousands_stays_within_limits() {
    const MIB: usize = 1 << 20;
    let fan = |n: usize| {
        let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let y = format!("apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {{name: fan}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n      - name: f\n        template: step\n        withItems: [{}]\n  - name: step\n    container:\n      image: busybox\n      command: [\"true\"]\n", items.join(", "));
        gpuctl_pipelines::parse_workflow("fan.yaml", &y).unwrap()
    };
    let submit = |wf| Command::SubmitWorkflow {
        name: "fan".into(),
        workflow: Box::new(wf),
        arguments: BTreeMap::new(),
        owner: None,
    };
    let widest = serde_json::to_vec(&Envelope::new(1, submit(fan(10_000)))).unwrap();
    assert!(
        widest.len() < MIB,
        "a 10,000-item submit is {} bytes",
        widest.len()
    );

    const N: usize = 3000;
    let mut s = State::default();
    let mut index = 0;
    let mut apply = |s: &mut State, cmd: Command| {
        index += 1;
        s.apply(index, &Envelope::new(1000 * index, cmd))
    };
    apply(&mut s, register(&gpuctl_testkit::node("n1").build())).unwrap();
    s.take_dirty();
    apply(&mut s, submit(fan(N))).unwrap();
    assert_eq!(s.jobs.len(), N, "every step's job is created at submit");
    // (largest record, its key) of what an apply wrote, and how many
    // workflow nodes it wrote.
    let written = |s: &mut State| {
        let mut largest = (0, String::new());
        let mut nodes = 0;
        for k in s.take_dirty() {
            nodes += usize::from(matches!(k, ObjKey::WorkflowNode(..)));
            let len = s.object_json(&k).map_or(0, |v| v.len());
            if len > largest.0 {
                largest = (len, k.storage_key());
            }
        }
        (largest, nodes)
    };
    let ((len, key), nodes) = written(&mut s);
    assert!(len < MIB, "{key}: {len} bytes");
    assert_eq!(nodes, N + 2, "the DAG, the group and every step");
    let header = s.object_json(&ObjKey::Workflow("fan".into())).unwrap();
    assert!(header.len() < 4096, "header of {} bytes", header.len());
    let jobs: Vec<String> = s.jobs.keys().cloned().collect();
    for (i, j) in jobs.iter().enumerate() {
        let bindings = vec![Binding {
            job: j.clone(),
            attempt: s.jobs[j].status.attempt,
            tasks: vec![TaskPlacement {
                index: 0,
                node: "n1".into(),
                gpus: vec![],
            }],
        }];
        apply(&mut s, Command::Bind { bindings }).unwrap();
        let report = TaskReport {
            node: "n1".into(),
            job: j.clone(),
            index: 0,
            attempt: s.jobs[j].status.attempt,
            phase: TaskPhase::Succeeded,
            exit_code: Some(0),
            message: None,
            pid: None,
            outputs: None,
            port: None,
            usage: None,
            gpu_fault: None,
        };
        apply(&mut s, Command::TaskReport { report }).unwrap();
        let ((len, key), nodes) = written(&mut s);
        // The group's record lists its children: written when it ends.
        let limit = if i + 1 < N { 16 * 1024 } else { MIB };
        assert!(len < limit, "step {i}: {key} is {len} bytes");
        // The step's node, and at the last step its group and the DAG.
        assert!(nodes <= 3, "step {i} wrote {nodes} workflow nodes");
    }
    let w = &s.workflows["fan"];
    let open: Vec<_> = w
        .run
        .nodes()
        .values()
        .filter(|n| !n.phase.is_fulfilled())
        .map(|n| (n.id.clone(), n.phase))
        .take(5)
        .collect();
    assert_eq!(w.run.phase(), WorkflowPhase::Succeeded, "{open:?}");
    assert_eq!(w.progress(), (N, N));
}
