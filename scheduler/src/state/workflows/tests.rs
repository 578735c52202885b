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
