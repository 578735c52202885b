//! Input artifacts from `raw` content and artifacts picked by
//! `fromExpression`, as Argo has them.

mod common;
use common::{all_ok, example, start, Sim};

use gpuctl_pipelines::{parse_workflow, StepOutcome, StepToLaunch, WorkflowPhase};

#[test]
fn a_raw_input_artifact_carries_its_content_to_the_step() {
    let mut sim = Sim::new(start(&example("input-artifact-raw.yaml")));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    let s = sim.step_named("wf");
    assert_eq!(s.input_artifacts.len(), 1);
    let a = &s.input_artifacts[0];
    assert_eq!(a.path.as_deref(), Some("/tmp/file"));
    assert_eq!(a.raw.as_deref(), Some("this is\nthe raw file\ncontents\n"));
}

const RAW_ARGS: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: wf}
spec:
  entrypoint: main
  arguments: {parameters: [{name: who, value: world}]}
  templates:
  - name: main
    steps:
    - - name: given
        template: cat
        arguments:
          parameters: [{name: n, value: "1"}]
          artifacts: [{name: f, raw: {data: "hello {{workflow.parameters.who}}"}}]
      - name: default
        template: cat
        arguments: {parameters: [{name: n, value: "2"}]}
  - name: cat
    inputs:
      parameters: [{name: n}]
      artifacts: [{name: f, path: in/f.txt, raw: {data: "default {{inputs.parameters.n}}"}}]
    container: {image: busybox, command: [cat, in/f.txt]}
"#;

#[test]
fn a_task_s_raw_argument_wins_over_the_template_s_and_both_are_substituted() {
    let mut sim = Sim::new(start(RAW_ARGS));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    let raw = |name: &str| sim.step_named(name).input_artifacts[0].raw.clone().unwrap();
    assert_eq!(raw("given"), "hello world");
    assert_eq!(raw("default"), "default 2");
}

#[test]
fn from_expression_picks_the_artifact_of_the_branch_that_ran() {
    for side in ["heads", "tails"] {
        let mut sim = Sim::new(start(&example("dag-conditional-artifacts.yaml")));
        let mut script = |s: &StepToLaunch| {
            let o = StepOutcome::succeeded();
            match s.display_name.as_str() {
                "flip-coin" => (1000, o.with_result(&format!("{side}\n"))),
                "heads" => (1000, o.with_artifact("headsresult")),
                "tails" => (1000, o.with_artifact("tailsresult")),
                _ => (1000, o),
            }
        };
        assert_eq!(sim.finish(&mut script), WorkflowPhase::Succeeded, "{side}");
        let root = sim.run.status().root.unwrap();
        let key = &root.outputs.artifacts["stepresult"];
        assert_eq!(key.step, format!("wf.{side}"));
        assert_eq!(key.name, format!("{side}result"));
    }
}

const FROM_EXPR_ARG: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: wf}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: a, template: make}
      - name: use
        depends: a
        template: cat
        arguments:
          artifacts:
          - {name: f, fromExpression: "tasks.a.outputs.result == 'x' ? tasks.a.outputs.artifacts.out : tasks.nope.outputs.artifacts.out"}
  - name: make
    container: {image: busybox, command: [sh, -c, "echo x; echo hi > out.txt"]}
    outputs: {artifacts: [{name: out, path: out.txt}]}
  - name: cat
    inputs: {artifacts: [{name: f, path: f.txt}]}
    container: {image: busybox, command: [cat, f.txt]}
"#;

#[test]
fn a_task_argument_from_an_expression_and_one_that_names_no_artifact() {
    let run = |result: &'static str| {
        let mut sim = Sim::new(start(FROM_EXPR_ARG));
        let mut script = move |s: &StepToLaunch| {
            let o = StepOutcome::succeeded();
            if s.display_name == "a" {
                (1000, o.with_result(result).with_artifact("out"))
            } else {
                (1000, o)
            }
        };
        let phase = sim.finish(&mut script);
        (phase, sim)
    };
    let (phase, sim) = run("x");
    assert_eq!(phase, WorkflowPhase::Succeeded);
    assert_eq!(sim.step_named("use").input_artifacts[0].from.step, "wf.a");
    let (phase, sim) = run("y");
    assert_eq!(phase, WorkflowPhase::Error);
    let msg = sim
        .run
        .status()
        .root
        .unwrap()
        .find("use")
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert!(msg.contains("fromExpression"), "{msg}");
}

#[test]
fn raw_and_from_expression_in_the_wrong_place_are_refused_at_their_field() {
    let err = |yaml: &str| parse_workflow("wf.yaml", yaml).unwrap_err().to_string();
    let e = err(&FROM_EXPR_ARG.replace(
        "outputs: {artifacts: [{name: out, path: out.txt}]}",
        "outputs: {artifacts: [{name: out, path: out.txt, raw: {data: x}}]}",
    ));
    assert!(
        e.contains("spec.templates[1].outputs.artifacts[0].raw"),
        "{e}"
    );
    let e = err(&FROM_EXPR_ARG.replace(
        "{name: f, fromExpression:",
        "{name: f, from: \"{{tasks.a.outputs.artifacts.out}}\", fromExpression:",
    ));
    assert!(
        e.contains("give one of `from`, `fromExpression` and `raw`"),
        "{e}"
    );
    let e = err(&FROM_EXPR_ARG.replace("== 'x' ?", "== 'x' ?? ?"));
    assert!(
        e.contains("arguments.artifacts[0].fromExpression: syntax error"),
        "{e}"
    );
    let e = err(&RAW_ARGS.replace("raw: {data: \"default", "raw: {text: \"default"));
    assert!(e.contains("text"), "{e}");
}
