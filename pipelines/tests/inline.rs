//! `inline` templates in DAG tasks and steps: written in place, run as any
//! template, errors reported at their place in the document.

mod common;
use common::{all_ok, example, start, Sim};

use gpuctl_pipelines::{parse_workflow, WorkflowPhase};

#[test]
fn an_inline_container_runs_in_a_dag_and_in_steps() {
    let mut sim = Sim::new(start(&example("dag-inline-workflow.yaml")));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    let a = sim.step_named("a");
    assert_eq!((a.id.as_str(), a.template.as_str()), ("wf.a", "main/a"));
    assert_eq!(a.command, ["echo", "hello"]);
    assert_eq!(a.image.as_deref(), Some("busybox"));

    let mut sim = Sim::new(start(&example("steps-inline-workflow.yaml")));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    assert_eq!(sim.step_named("a").id, "wf[0].a");
}

const NESTED: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: wf}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - name: inner
        arguments: {parameters: [{name: who, value: world}]}
        inline:
          inputs: {parameters: [{name: who}]}
          dag:
            tasks:
            - name: hi
              arguments: {parameters: [{name: msg, value: "hi {{inputs.parameters.who}}"}]}
              inline:
                inputs: {parameters: [{name: msg}]}
                script: {image: busybox, command: [sh], source: "echo {{inputs.parameters.msg}}"}
            - name: after
              depends: hi
              template: echo
              arguments: {parameters: [{name: m, value: "{{tasks.hi.outputs.result}}"}]}
  - name: echo
    inputs: {parameters: [{name: m}]}
    container: {image: busybox, command: [echo, "{{inputs.parameters.m}}"]}
"#;

#[test]
fn inline_templates_nest_and_take_arguments() {
    let mut sim = Sim::new(start(NESTED));
    let mut script = |s: &gpuctl_pipelines::StepToLaunch| {
        let out = gpuctl_pipelines::StepOutcome::succeeded();
        if s.display_name == "hi" {
            (1000, out.with_result("hi world\n"))
        } else {
            (1000, out)
        }
    };
    assert_eq!(sim.finish(&mut script), WorkflowPhase::Succeeded);
    let hi = sim.step_named("hi");
    assert_eq!(hi.id, "wf[0].inner.hi");
    assert_eq!(hi.template, "main/inner/hi");
    assert_eq!(hi.script_source.as_deref(), Some("echo hi world"));
    assert_eq!(sim.step_named("after").command, ["echo", "hi world"]);
}

#[test]
fn an_inline_template_s_errors_name_its_place_in_the_document() {
    let err = |yaml: &str| parse_workflow("wf.yaml", yaml).unwrap_err().to_string();
    let e = err(
        &example("dag-inline-workflow.yaml").replace("command: [echo, hello]", "args: [hello]")
    );
    assert!(
        e.contains("spec.templates[0].dag.tasks[0].inline.container.command: missing"),
        "{e}"
    );
    let e = err(&NESTED.replace(
        "{{inputs.parameters.msg}}\"}",
        "{{inputs.parameters.nope}}\"}",
    ));
    assert!(
        e.contains("spec.templates[0].steps[0][0].inline.dag.tasks[0].inline.script.source"),
        "{e}"
    );
    let e = err(&example("steps-inline-workflow.yaml").replace(
        "            inline:",
        "            template: main\n            inline:",
    ));
    assert!(
        e.contains("spec.templates[0].steps[0][0].inline: use either `template` or `inline`"),
        "{e}"
    );
    let e = err(&example("steps-inline-workflow.yaml").replace(
        "            inline:\n",
        "            inline:\n              bogus: 1\n",
    ));
    assert!(e.contains("bogus"), "{e}");
}
