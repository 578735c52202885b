//! Templates by reference: Argo's own `WorkflowTemplate` and
//! `ClusterWorkflowTemplate` examples (`tests/argo-examples/templates/`),
//! stored, then the example workflows that use them resolved and run in the
//! simulated executor with Argo's outcome: which steps ran, in what order,
//! with which arguments.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{all_ok, Sim};
use gpuctl_pipelines::resolve::{
    has_references, resolve, InMemoryTemplates, LABEL_CLUSTER_WORKFLOW_TEMPLATE,
    LABEL_WORKFLOW_TEMPLATE,
};
use gpuctl_pipelines::spec::parse_unvalidated;
use gpuctl_pipelines::{
    parse_workflow, parse_workflow_template_document, validate_all, Run, Workflow, WorkflowPhase,
};
use serde::Deserialize;

fn dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/argo-examples/templates")
}

fn read(rel: &str) -> String {
    let text = std::fs::read_to_string(dir().join(rel)).unwrap();
    assert!(
        text.starts_with("# Source: https://github.com/argoproj/argo-workflows/"),
        "{rel}"
    );
    text
}

/// Every stored template of both example files, each checked on its own.
fn store() -> InMemoryTemplates {
    let mut s = InMemoryTemplates::default();
    for f in [
        "stored/workflow-templates.yaml",
        "stored/cluster-workflow-templates.yaml",
    ] {
        let text = read(f);
        for de in serde_yaml_ng::Deserializer::from_str(&text) {
            let doc = serde_yaml_ng::Value::deserialize(de).unwrap();
            let t = parse_workflow_template_document(f, doc).unwrap_or_else(|e| panic!("{e}"));
            s.add(t);
        }
    }
    assert_eq!(s.0.len(), 10);
    s
}

/// An example workflow, resolved against the stored templates and checked.
fn resolved(rel: &str) -> Workflow {
    let text = read(rel);
    let wf = parse_workflow(rel, &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(has_references(&wf), "{rel}");
    let r = resolve(&wf, &store()).unwrap_or_else(|e| panic!("{rel}: {e:?}"));
    assert!(!has_references(&r));
    let errors = validate_all(&r);
    assert!(errors.is_empty(), "{rel}: {errors:#?}");
    r
}

fn run(wf: &Workflow, args: &[(&str, &str)]) -> Sim {
    let args: BTreeMap<String, String> = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut sim = Sim::new(Run::new(wf, "wf", &args, 0).unwrap());
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    sim
}

fn echoed(sim: &Sim, step: &str) -> String {
    sim.step_named(step).argv(None).join(" ")
}

#[test]
fn a_dag_of_template_refs_runs_the_diamond_and_the_inner_one() {
    let sim = run(&resolved("runs/dag.yaml"), &[]);
    assert_eq!(sim.launched_at(0), ["A"]);
    assert_eq!(sim.launched_at(1000), ["B", "inner-A"]);
    assert_eq!(sim.launched_at(2000), ["inner-B", "inner-C"]);
    assert_eq!(sim.launched_at(3000), ["inner-D"]);
    assert_eq!(sim.launched_at(4000), ["D"]);
    assert_eq!(echoed(&sim, "A"), "echo A");
    // Siblings called by `template:` inside the referenced template.
    assert_eq!(echoed(&sim, "inner-C"), "echo inner-C");
}

#[test]
fn steps_of_template_refs_run_group_by_group_with_the_tasks_arguments() {
    for f in [
        "runs/steps.yaml",
        "runs/mixed-cluster-namespaced-wftmpl-steps.yaml",
    ] {
        let sim = run(&resolved(f), &[]);
        assert_eq!(sim.launched_at(0), ["hello1"], "{f}");
        assert_eq!(
            sim.launched_at(1000),
            ["inner-hello1", "hello2b"],
            "{f}: {:?}",
            sim.launched()
        );
        assert_eq!(sim.launched_at(2000), ["inner-hello2a", "inner-hello2b"]);
        assert_eq!(echoed(&sim, "hello2b"), "echo hello2b");
        assert_eq!(echoed(&sim, "inner-hello2b"), "echo inner-hello2b");
    }
}

#[test]
fn workflow_template_ref_takes_the_spec_and_the_workflows_arguments_win() {
    for (f, label) in [
        ("runs/workflow-template-ref.yaml", LABEL_WORKFLOW_TEMPLATE),
        (
            "runs/cluster-workflow-template-ref.yaml",
            LABEL_CLUSTER_WORKFLOW_TEMPLATE,
        ),
    ] {
        let wf = resolved(f);
        assert_eq!(wf.spec.entrypoint.as_deref(), Some("print-message"));
        assert!(wf.metadata.labels[label].ends_with("-submittable"), "{f}");
        assert_eq!(
            echoed(&run(&wf, &[]), "wf"),
            "echo hello world",
            "{f}: the template's argument"
        );
        assert_eq!(echoed(&run(&wf, &[("message", "hi")]), "wf"), "echo hi");
    }
    // The workflow's own arguments and entrypoint over the template's.
    let text = read("runs/workflow-template-ref.yaml").replace(
        "    name: workflow-template-submittable\n",
        "    name: workflow-template-submittable\n  arguments:\n    parameters: [{name: message, value: mine}]\n",
    );
    let wf = resolve(&parse_workflow("w.yaml", &text).unwrap(), &store()).unwrap();
    assert_eq!(echoed(&run(&wf, &[]), "wf"), "echo mine");
}

#[test]
fn a_missing_template_names_the_reference_and_where_it_is() {
    let text = read("runs/dag.yaml").replace(
        "          name: workflow-template-inner-dag\n",
        "          name: x\n",
    );
    let wf = parse_workflow("dag.yaml", &text).unwrap();
    let e = resolve(&wf, &store()).unwrap_err();
    assert_eq!(
        e.reason,
        "templateRef \"x\" at spec.templates[0].dag.tasks[2]: no WorkflowTemplate named \"x\""
    );
    let text = read("runs/dag.yaml").replace("template: inner-diamond", "template: nope");
    let e = resolve(&parse_workflow("dag.yaml", &text).unwrap(), &store()).unwrap_err();
    assert!(
        e.reason.starts_with("templateRef \"workflow-template-inner-dag\" at spec.templates[0].dag.tasks[2]: WorkflowTemplate \"workflow-template-inner-dag\" has no template \"nope\" (templates: print-message, inner-diamond)"),
        "{}",
        e.reason
    );
    // Only a ClusterWorkflowTemplate has this name: clusterScope matters.
    let text =
        read("runs/cluster-workflow-template-ref.yaml").replace("    clusterScope: true\n", "");
    let e = resolve(&parse_workflow("w.yaml", &text).unwrap(), &store()).unwrap_err();
    assert_eq!(e.path, "spec.workflowTemplateRef.name");
    assert_eq!(
        e.reason,
        "no WorkflowTemplate named \"cluster-workflow-template-submittable\""
    );
}

#[test]
fn template_references_are_checked_before_lookup() {
    let text = read("runs/dag.yaml").replace("          template: print-message\n        arguments:\n          parameters:\n          - name: message\n            value: A", "          template: \"\"\n        arguments:\n          parameters:\n          - name: message\n            value: A");
    let errors = validate_all(&parse_unvalidated(&text).unwrap());
    assert!(
        errors
            .iter()
            .any(|e| e.path == "spec.templates[0].dag.tasks[0].templateRef.template"),
        "{errors:#?}"
    );
    // A workflow with workflowTemplateRef needs no templates or entrypoint.
    assert!(
        validate_all(&parse_unvalidated(&read("runs/workflow-template-ref.yaml")).unwrap())
            .is_empty()
    );
    // A WorkflowTemplate is refused where a Workflow is expected.
    let e = parse_workflow(
        "t.yaml",
        read("stored/workflow-templates.yaml")
            .split("---")
            .next()
            .unwrap(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("stored with `gpuctl apply -f`"),
        "{e}"
    );
}

#[test]
fn exit_handlers_inside_a_referenced_template_call_its_siblings() {
    let lib = r#"
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: lib}
spec:
  templates:
  - name: train
    dag:
      tasks:
      - {name: fit, template: echo, onExit: cleanup, arguments: {parameters: [{name: m, value: fit}]}}
  - name: echo
    inputs: {parameters: [{name: m}]}
    container: {image: x, command: [echo, "{{inputs.parameters.m}}"]}
  - name: cleanup
    container: {image: x, command: [echo, cleanup]}
"#;
    let mut store = InMemoryTemplates::default();
    store.add(
        parse_workflow_template_document("lib.yaml", serde_yaml_ng::from_str(lib).unwrap())
            .unwrap(),
    );
    let wf = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: w}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: t, templateRef: {name: lib, template: train}}
  - name: cleanup
    container: {image: x, command: [echo, not-this-one]}
"#;
    let r = resolve(&parse_workflow("w.yaml", wf).unwrap(), &store).unwrap();
    assert!(validate_all(&r).is_empty(), "{:#?}", validate_all(&r));
    let sim = run(&r, &[]);
    assert_eq!(echoed(&sim, "fit"), "echo fit");
    let handler = sim
        .log
        .iter()
        .map(|(_, s)| s.argv(None).join(" "))
        .find(|a| a.contains("cleanup") || a.contains("not-this-one"))
        .expect("the exit handler ran");
    assert_eq!(handler, "echo cleanup", "the library's own cleanup");
}

#[test]
fn an_exit_hook_may_name_a_template_of_a_workflow_template() {
    // `hooks.exit.templateRef`, as a task's `templateRef`: copied at submit.
    let mut store = InMemoryTemplates::default();
    store.add(
        parse_workflow_template_document("lib.yaml", serde_yaml_ng::from_str(
            "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata: {name: lib}\nspec:\n  templates:\n  - name: report\n    inputs: {parameters: [{name: s}]}\n    container: {image: x, command: [echo, \"report {{inputs.parameters.s}}\"]}\n",
        ).unwrap())
        .unwrap(),
    );
    let wf = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: w}
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
            templateRef: {name: lib, template: report}
            arguments: {parameters: [{name: s, value: "{{tasks.A.status}}"}]}
  - name: echo
    container: {image: x, command: [echo, a]}
"#;
    let parsed = parse_workflow("w.yaml", wf).unwrap_or_else(|e| panic!("{e}"));
    assert!(has_references(&parsed));
    let r = resolve(&parsed, &store).unwrap();
    assert!(!has_references(&r));
    assert!(validate_all(&r).is_empty(), "{:#?}", validate_all(&r));
    let sim = run(&r, &[]);
    assert_eq!(echoed(&sim, "A.onExit"), "echo report Succeeded");
    // Missing, or beside a `template`: refused naming the field.
    let e = resolve(
        &parse_workflow("w.yaml", &wf.replace("template: report", "template: nope")).unwrap(),
        &store,
    )
    .unwrap_err();
    assert!(e.reason.contains("has no template \"nope\""), "{e:?}");
    let both = wf.replace(
        "            templateRef:",
        "            template: echo\n            templateRef:",
    );
    let e = parse_workflow("w.yaml", &both).unwrap_err().to_string();
    assert!(
        e.contains("hooks.exit.templateRef: use either `template` or `templateRef`"),
        "{e}"
    );
}
