//! A task's or step's exit handler (`onExit`, `hooks.exit`), as Argo runs
//! it: after the task ends whatever its phase, before what depends on the
//! task starts, with the task's status in reach; its own phase leaves the
//! workflow's alone.

mod common;
use common::{all_ok, example, failing, start, Sim};

use gpuctl_pipelines::{parse_workflow, NodePhase, WorkflowPhase};

#[test]
fn each_dag_task_s_handler_runs_after_it_and_before_its_dependents() {
    let mut sim = Sim::new(start(&example("exit-handler-dag-level.yaml")));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    assert_eq!(sim.launched_at(0), ["A"]);
    assert_eq!(sim.launched_at(1000), ["A.onExit"]);
    assert_eq!(sim.launched_at(2000), ["B", "C"]);
    assert_eq!(sim.launched_at(3000), ["B.onExit", "C.onExit"]);
    assert_eq!(sim.launched_at(4000), ["D"]);
    assert_eq!(sim.launched_at(5000), ["D.onExit"]);
    assert_eq!(sim.step_named("A.onExit").args, ["task cleanup"]);
    assert_eq!(sim.step_named("D.onExit").id, "wf.D.onExit");
}

#[test]
fn each_step_s_exit_hook_runs_before_the_next_group() {
    let mut sim = Sim::new(start(&example("exit-handler-step-level.yaml")));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    assert_eq!(sim.launched_at(0), ["hello1"]);
    assert_eq!(sim.launched_at(1000), ["hello1.onExit"]);
    assert_eq!(sim.launched_at(2000), ["hello2a", "hello2b"]);
    assert_eq!(sim.launched_at(3000), ["hello2a.onExit", "hello2b.onExit"]);
    assert_eq!(sim.step_named("hello1.onExit").id, "wf[0].hello1.onExit");
    assert_eq!(sim.phase_of("hello2b.onExit"), NodePhase::Succeeded);
}

const FAILING: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: wf}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - name: A
        template: echo
        hooks:
          exit:
            template: report
            arguments:
              parameters:
              - {name: status, value: "{{tasks.A.status}}"}
              - {name: code, value: "{{tasks.A.exitCode}}"}
      - {name: B, depends: A, template: echo}
      - {name: C, depends: A.Failed, template: echo}
  - name: echo
    container: {image: busybox, command: [echo, hi]}
  - name: report
    inputs:
      parameters: [{name: status}, {name: code}]
    container: {image: busybox, command: [echo, "{{inputs.parameters.status}} {{inputs.parameters.code}}"]}
"#;

#[test]
fn a_failed_task_s_handler_runs_with_its_status_and_the_dag_still_fails() {
    let mut sim = Sim::new(start(FAILING));
    assert_eq!(sim.finish(&mut failing(&["A"])), WorkflowPhase::Failed);
    assert_eq!(sim.step_named("A.onExit").command, ["echo", "Failed 1"]);
    // C (A.Failed) starts only once A's handler has ended; B is omitted.
    assert_eq!(sim.launched_at(1000), ["A.onExit"]);
    assert_eq!(sim.launched_at(2000), ["C"]);
    assert_eq!(sim.phase_of("B"), NodePhase::Omitted);
}

#[test]
fn a_handler_that_fails_leaves_the_task_and_the_workflow_phase_alone() {
    // As Argo: a DAG's phase is its tasks', a step group's its steps'.
    let mut sim = Sim::new(start(FAILING));
    assert_eq!(
        sim.finish(&mut failing(&["A.onExit"])),
        WorkflowPhase::Succeeded
    );
    assert_eq!(sim.phase_of("A"), NodePhase::Succeeded);
    assert_eq!(sim.phase_of("A.onExit"), NodePhase::Failed);
    assert_eq!(sim.launched_at(2000), ["B"]);
    let steps = example("exit-handler-step-level.yaml");
    let mut sim = Sim::new(start(&steps));
    assert_eq!(
        sim.finish(&mut failing(&["hello1.onExit"])),
        WorkflowPhase::Succeeded
    );
}

#[test]
fn a_skipped_task_runs_no_handler() {
    let yaml = FAILING.replace(
        "      - name: A\n        template: echo",
        "      - name: A\n        when: \"1 == 2\"\n        template: echo",
    );
    let mut sim = Sim::new(start(&yaml));
    sim.finish(&mut all_ok);
    assert!(
        !sim.launched().iter().any(|s| s == "A.onExit"),
        "{:?}",
        sim.launched()
    );
}

#[test]
fn hooks_gpuctl_does_not_run_and_bad_handlers_are_refused_at_their_field() {
    let err = |yaml: &str| parse_workflow("wf.yaml", yaml).unwrap_err().to_string();
    let e = err(&FAILING.replace(
        "          exit:\n",
        "          running:\n            expression: \"true\"\n          exit:\n",
    ));
    assert!(
        e.contains("spec.templates[0].dag.tasks[0].hooks.running")
            && e.contains("not supported yet"),
        "{e}"
    );
    let e = err(&FAILING.replace("template: report", "template: nope"));
    assert!(
        e.contains("spec.templates[0].dag.tasks[0].hooks.exit.template")
            && e.contains("no template named \"nope\""),
        "{e}"
    );
    let e = err(&FAILING.replace(
        "        template: echo\n        hooks:",
        "        template: echo\n        onExit: report\n        hooks:",
    ));
    assert!(e.contains("use either `onExit` or `hooks.exit`"), "{e}");
    let e = err(&example("exit-handler-dag-level.yaml").replace("onExit: exit", "onExit: exits"));
    assert!(
        e.contains("spec.templates[0].dag.tasks[0].onExit: no template named \"exits\""),
        "{e}"
    );
    let e = err(&FAILING.replace("{{tasks.A.exitCode}}", "{{tasks.Z.exitCode}}"));
    assert!(
        e.contains("hooks.exit.arguments.parameters[1].value"),
        "{e}"
    );
}

const FAN_OUT_STEPS: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: wf}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - name: loop
        template: echo
        arguments: {parameters: [{name: msg, value: "{{item}}"}]}
        withItems: [a, b]
        continueOn: {failed: true}
        hooks:
          exit:
            template: report
            arguments:
              parameters:
              - {name: what, value: "{{item}} {{steps.loop.status}} {{steps.loop.exitCode}}"}
    - - name: after
        template: echo
        arguments: {parameters: [{name: msg, value: after}]}
  - name: echo
    inputs: {parameters: [{name: msg}]}
    container: {image: busybox, command: [echo, "{{inputs.parameters.msg}}"]}
  - name: report
    inputs: {parameters: [{name: what}]}
    container: {image: busybox, command: [echo, "{{inputs.parameters.what}}"]}
"#;

#[test]
fn a_fan_out_step_s_handler_runs_once_per_item_as_each_item_ends() {
    // Argo expands the step into `loop(0:a)`, `loop(1:b)`, each with its
    // own exit hook (`{{item}}` substituted), run when that item ends.
    let mut sim = Sim::new(start(FAN_OUT_STEPS));
    let mut script = |s: &gpuctl_pipelines::StepToLaunch| match s.display_name.as_str() {
        "loop(1:b)" => (3000, gpuctl_pipelines::StepOutcome::failed(2)),
        _ => (1000, gpuctl_pipelines::StepOutcome::succeeded()),
    };
    assert_eq!(sim.finish(&mut script), WorkflowPhase::Succeeded);
    assert_eq!(sim.launched_at(0), ["loop(0:a)", "loop(1:b)"]);
    assert_eq!(sim.launched_at(1000), ["loop(0:a).onExit"]);
    assert_eq!(sim.launched_at(3000), ["loop(1:b).onExit"]);
    // The next group waits for every item's handler.
    assert_eq!(sim.launched_at(4000), ["after"]);
    assert_eq!(
        sim.step_named("loop(0:a).onExit").command,
        ["echo", "a Succeeded 0"]
    );
    assert_eq!(
        sim.step_named("loop(1:b).onExit").command,
        ["echo", "b Failed 2"]
    );
    assert_eq!(
        sim.step_named("loop(1:b).onExit").id,
        "wf[0].loop(1:b).onExit"
    );
    assert_eq!(sim.launched().len(), 5, "{:?}", sim.launched());
}

#[test]
fn a_fan_out_dag_task_s_handler_runs_once_per_item_before_its_dependents() {
    let yaml = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: wf}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - name: A
        template: echo
        arguments: {parameters: [{name: msg, value: "{{item}}"}]}
        withItems: [1, 2, 3]
        hooks:
          exit:
            template: report
            arguments:
              parameters: [{name: what, value: "{{item}} {{tasks.A.status}}"}]
      - {name: B, depends: A, template: echo, arguments: {parameters: [{name: msg, value: b}]}}
  - name: echo
    inputs: {parameters: [{name: msg}]}
    container: {image: busybox, command: [echo, "{{inputs.parameters.msg}}"]}
  - name: report
    inputs: {parameters: [{name: what}]}
    container: {image: busybox, command: [echo, "{{inputs.parameters.what}}"]}
"#;
    let mut sim = Sim::new(start(yaml));
    let mut script = |s: &gpuctl_pipelines::StepToLaunch| match s.display_name.as_str() {
        "A(1:2)" => (2000, gpuctl_pipelines::StepOutcome::succeeded()),
        _ => (1000, gpuctl_pipelines::StepOutcome::succeeded()),
    };
    assert_eq!(sim.finish(&mut script), WorkflowPhase::Succeeded);
    assert_eq!(sim.launched_at(0), ["A(0:1)", "A(1:2)", "A(2:3)"]);
    assert_eq!(sim.launched_at(1000), ["A(0:1).onExit", "A(2:3).onExit"]);
    assert_eq!(sim.launched_at(2000), ["A(1:2).onExit"]);
    assert_eq!(sim.launched_at(3000), ["B"]);
    assert_eq!(
        sim.step_named("A(1:2).onExit").command,
        ["echo", "2 Succeeded"]
    );
    assert_eq!(sim.step_named("A(0:1).onExit").id, "wf.A(0:1).onExit");
    assert_eq!(sim.phase_of("A(1:2).onExit"), NodePhase::Succeeded);
}

#[test]
fn argo_s_with_items_with_hooks_runs_a_handler_per_item() {
    // Argo's smoke test: a DAG task over three items, each item a steps
    // template; each item's exit hook runs after that item.
    let mut sim = Sim::new(start(&example("with-items-with-hooks.yaml")));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    assert_eq!(sim.launched_at(0), ["run-sim", "run-sim", "run-sim"]);
    assert_eq!(
        sim.launched_at(1000),
        [
            "run-sim(0:1).onExit",
            "run-sim(1:2).onExit",
            "run-sim(2:3).onExit"
        ]
    );
    let h = sim.step_named("run-sim(2:3).onExit");
    assert_eq!(h.id, "wf.run-sim(2:3).onExit");
    assert_eq!(h.script_source.as_deref(), Some("echo \"I am a hook bar\""));
    assert_eq!(sim.launched().len(), 6);
}
