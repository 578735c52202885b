//! `steps` templates with Argo's semantics, driven by the simulated
//! executor in `common`: groups in sequence, steps of a group in parallel,
//! `when`, fan-out, arguments, outputs, failures, `continueOn`, retries and
//! nesting.

mod common;

use common::{all_ok, failing, start, Sim};
use gpuctl_pipelines::{
    parse_workflow, NodePhase, NodeType, StepOutcome, StepToLaunch, WorkflowPhase,
};

/// A workflow whose entrypoint `main` is a steps template with `steps`
/// (YAML indented for `steps:`), plus `print` and `extra` templates.
fn steps(groups: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {{generateName: steps-}}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
{groups}
  - name: print
    inputs:
      parameters: [{{name: message, default: hi}}]
    container:
      image: busybox
      command: [echo, "{{{{inputs.parameters.message}}}}"]
{extra}
"#
    )
}

fn msg(v: &str) -> String {
    format!("arguments: {{parameters: [{{name: message, value: \"{v}\"}}]}}")
}

#[test]
fn groups_run_in_sequence_and_their_steps_in_parallel() {
    let y = steps(
        &format!(
            r#"
    - - {{name: hello1, template: print, {}}}
    - - {{name: hello2a, template: print, {}}}
      - {{name: hello2b, template: print, {}}}
    - - {{name: hello3, template: print}}"#,
            msg("hello1"),
            msg("hello2a"),
            msg("hello2b")
        ),
        "",
    );
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    assert_eq!(sim.launched_at(0), ["hello1"]);
    assert_eq!(sim.launched_at(1000), ["hello2a", "hello2b"]);
    assert_eq!(sim.launched_at(2000), ["hello3"]);
    // Argo's node names: wf[GROUP].STEP.
    assert_eq!(sim.step_named("hello2b").id, "wf[1].hello2b");
    assert_eq!(sim.step_named("hello2b").command, ["echo", "hello2b"]);
    assert_eq!(sim.step_named("hello3").command, ["echo", "hi"]);
    let root = sim.run.status().root.unwrap();
    assert_eq!(root.node_type, NodeType::Steps);
    let groups: Vec<(&str, NodeType, usize)> = root
        .children
        .iter()
        .map(|g| (g.display_name.as_str(), g.node_type, g.children.len()))
        .collect();
    assert_eq!(
        groups,
        [
            ("[0]", NodeType::StepGroup, 1),
            ("[1]", NodeType::StepGroup, 2),
            ("[2]", NodeType::StepGroup, 1)
        ]
    );
    assert_eq!(sim.run.task_node("hello2a").unwrap().id, "wf[1].hello2a");
}

#[test]
fn when_reads_an_earlier_steps_result_and_skips() {
    // Argo's coinflip example.
    let y = steps(
        r#"
    - - {name: flip-coin, template: flip-coin}
    - - {name: heads, template: print, when: "{{steps.flip-coin.outputs.result}} == heads"}
      - {name: tails, template: print, when: "{{steps.flip-coin.outputs.result}} == tails"}
    - - {name: after, template: print}"#,
        r#"
  - name: flip-coin
    script:
      image: python:alpine3.6
      command: [python]
      source: |
        import random
        print("heads" if random.randint(0, 1) == 0 else "tails")
"#,
    );
    let mut sim = Sim::new(start(&y));
    let phase = sim.finish(&mut |s: &StepToLaunch| {
        let o = StepOutcome::succeeded();
        if s.template == "flip-coin" {
            (1000, o.with_result("tails\n"))
        } else {
            (1000, o)
        }
    });
    assert_eq!(phase, WorkflowPhase::Succeeded);
    assert_eq!(sim.launched(), ["flip-coin", "tails", "after"]);
    assert_eq!(sim.phase_of("heads"), NodePhase::Skipped);
    assert_eq!(sim.phase_of("[1]"), NodePhase::Succeeded);
}

#[test]
fn a_failed_step_fails_its_group_after_its_siblings_end_and_stops_later_groups() {
    let y = steps(
        r#"
    - - {name: ok, template: slow}
      - {name: bad, template: print}
    - - {name: never, template: print}"#,
        r#"
  - name: slow
    container: {command: [sleep, "3"]}
"#,
    );
    let mut sim = Sim::new(start(&y));
    let phase = sim.finish(&mut |s: &StepToLaunch| match s.display_name.as_str() {
        "bad" => (1000, StepOutcome::failed(2)),
        _ => (3000, StepOutcome::succeeded()),
    });
    assert_eq!(phase, WorkflowPhase::Failed);
    assert_eq!(sim.launched(), ["ok", "bad"]);
    // The group waited for `ok` (3 s) before failing.
    assert_eq!(sim.run.finished_ms(), Some(3000));
    assert_eq!(sim.phase_of("ok"), NodePhase::Succeeded);
    assert_eq!(sim.phase_of("[0]"), NodePhase::Failed);
    let root = sim.run.status().root.unwrap();
    assert_eq!(root.children.len(), 1, "group [1] never started");
    assert!(
        root.message.as_deref().unwrap().contains("wf[0].bad"),
        "{root:?}"
    );
}

#[test]
fn continue_on_failed_lets_the_next_group_run() {
    let y = steps(
        r#"
    - - {name: bad, template: print, continueOn: {failed: true}}
    - - {name: next, template: print, arguments: {parameters: [{name: message, value: "{{steps.bad.status}}"}]}}"#,
        "",
    );
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut failing(&["bad"])), WorkflowPhase::Succeeded);
    assert_eq!(sim.step_named("next").command, ["echo", "Failed"]);
}

#[test]
fn with_items_and_with_param_fan_out_in_a_group_and_aggregate() {
    let y = steps(
        r#"
    - - {name: gen, template: gen}
    - - name: double
        template: double
        arguments: {parameters: [{name: n, value: "{{item}}"}]}
        withParam: "{{steps.gen.outputs.result}}"
      - name: greet
        template: print
        arguments: {parameters: [{name: message, value: "{{item.name}}"}]}
        withItems: [{name: a}, {name: b}]
    - - {name: sum, template: print, arguments: {parameters: [{name: message, value: "{{steps.double.outputs.result}}"}]}}"#,
        r#"
  - name: gen
    script: {command: [sh], source: "echo '[1, 2, 3]'"}
  - name: double
    inputs: {parameters: [{name: n}]}
    container: {command: [sh, -c, "echo $(({{inputs.parameters.n}} * 2))"]}
"#,
    );
    let mut sim = Sim::new(start(&y));
    let phase = sim.finish(&mut |s: &StepToLaunch| {
        let o = StepOutcome::succeeded();
        match s.template.as_str() {
            "gen" => (1000, o.with_result("[1, 2, 3]\n")),
            "double" => {
                let n: u32 = s.command[2]
                    .trim_start_matches("echo $((")
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                (1000, o.with_result(&format!("{}\n", n * 2)))
            }
            _ => (1000, o),
        }
    });
    assert_eq!(phase, WorkflowPhase::Succeeded);
    assert_eq!(
        sim.launched_at(1000),
        [
            "double(0:1)",
            "double(1:2)",
            "double(2:3)",
            "greet(0:name:a)",
            "greet(1:name:b)"
        ]
    );
    assert_eq!(sim.step_named("double(1:2)").id, "wf[1].double(1:2)");
    assert_eq!(sim.step_named("greet(1:name:b)").command, ["echo", "b"]);
    assert_eq!(sim.step_named("sum").command, ["echo", "[2,4,6]"]);
}

#[test]
fn nested_steps_and_dag_templates_pass_outputs_up() {
    let y = steps(
        r#"
    - - {name: inner, template: inner}
    - - {name: show, template: print, arguments: {parameters: [{name: message, value: "{{steps.inner.outputs.parameters.v}}"}]}}"#,
        r#"
  - name: inner
    outputs:
      parameters:
      - name: v
        valueFrom: {parameter: "{{steps.d.outputs.parameters.v}}"}
    steps:
    - - {name: d, template: d}
  - name: d
    outputs:
      parameters:
      - name: v
        valueFrom: {parameter: "{{tasks.leaf.outputs.parameters.v}}"}
    dag:
      tasks:
      - {name: leaf, template: leaf}
  - name: leaf
    outputs: {parameters: [{name: v, valueFrom: {path: /tmp/v}}]}
    container: {command: [sh, -c, "echo 42 > /tmp/v"]}
"#,
    );
    let mut sim = Sim::new(start(&y));
    let phase = sim.finish(&mut |s: &StepToLaunch| {
        let o = StepOutcome::succeeded();
        if s.template == "leaf" {
            (1000, o.with_param("v", "42"))
        } else {
            (1000, o)
        }
    });
    assert_eq!(phase, WorkflowPhase::Succeeded);
    assert_eq!(sim.step_named("leaf").id, "wf[0].inner[0].d.leaf");
    assert_eq!(sim.step_named("show").command, ["echo", "42"]);
}

#[test]
fn a_retried_step_runs_again_in_its_group() {
    let y = steps(
        r#"
    - - {name: flaky, template: flaky}
    - - {name: after, template: print}"#,
        r#"
  - name: flaky
    retryStrategy: {limit: 2}
    container: {command: [sh, -c, "exit 1"]}
"#,
    );
    let mut sim = Sim::new(start(&y));
    let mut n = 0;
    let phase = sim.finish(&mut |s: &StepToLaunch| {
        if s.template == "flaky" {
            n += 1;
            if n < 3 {
                return (1000, StepOutcome::failed(1));
            }
        }
        (1000, StepOutcome::succeeded())
    });
    assert_eq!(phase, WorkflowPhase::Succeeded);
    assert_eq!(
        sim.launched(),
        ["flaky(0)", "flaky(1)", "flaky(2)", "after"]
    );
    assert_eq!(sim.step_named("flaky(2)").id, "wf[0].flaky(2)");
}

#[test]
fn step_references_are_checked_at_submit() {
    let bad = |groups: &str, path: &str, words: &[&str]| {
        let y = steps(groups, "");
        let e = parse_workflow("wf.yaml", &y).expect_err("should be refused");
        assert_eq!(e.path, path, "{e}");
        for w in words {
            assert!(e.reason.contains(w), "{e} (wanted {w:?})");
        }
    };
    bad(
        r#"
    - - {name: a, template: print}
      - {name: b, template: print, arguments: {parameters: [{name: message, value: "{{steps.a.outputs.result}}"}]}}"#,
        "spec.templates[0].steps[0][1].arguments.parameters[0].value",
        &["not in a group before"],
    );
    bad(
        r#"
    - - {name: a, template: print}
    - - {name: b, template: print, arguments: {parameters: [{name: message, value: "{{tasks.a.outputs.result}}"}]}}"#,
        "spec.templates[0].steps[1][0].arguments.parameters[0].value",
        &["steps.a"],
    );
    bad(
        r#"
    - - {name: a, template: print}
    - - {name: b, template: print, depends: a}"#,
        "spec.templates[0].steps[1][0].depends",
        &["DAG tasks"],
    );
    bad(
        r#"
    - - {name: a, template: print}
    - - {name: a, template: print}"#,
        "spec.templates[0].steps[1][0].name",
        &["duplicate step name"],
    );
    bad(
        r#"
    - - {name: a, template: nope}"#,
        "spec.templates[0].steps[0][0].template",
        &["no template named \"nope\""],
    );
    bad(
        r#"
    - []"#,
        "spec.templates[0].steps[0]",
        &["empty group"],
    );
}

#[test]
fn recursion_through_steps_needs_a_base_case() {
    let y = steps(
        r#"
    - - {name: again, template: main}"#,
        "",
    );
    let e = parse_workflow("wf.yaml", &y).expect_err("endless recursion");
    assert_eq!(e.path, "spec.templates[0].steps[0][0].template", "{e}");
    assert!(e.reason.contains("recursion"), "{e}");
}

#[test]
fn a_container_steps_standard_output_is_its_result_as_argo_keeps_it() {
    let y = steps(
        r#"
    - - {name: gen, template: gen}
    - - {name: show, template: print, arguments: {parameters: [{name: message, value: "{{steps.gen.outputs.result}}"}]}}"#,
        r#"
  - name: gen
    container: {command: [sh, -c, "echo one; echo two"]}
"#,
    );
    let mut sim = Sim::new(start(&y));
    let long = format!("{}tail\n\n", "x".repeat(300 * 1024));
    let phase = sim.finish(&mut |s: &StepToLaunch| {
        // A container's output is captured because the workflow reads it.
        assert!(s.capture_result, "{}", s.display_name);
        let o = StepOutcome::succeeded();
        if s.template == "gen" {
            (1000, o.with_result(&long))
        } else {
            (1000, o)
        }
    });
    assert_eq!(phase, WorkflowPhase::Succeeded);
    let r = sim
        .run
        .task_node("gen")
        .unwrap()
        .outputs
        .result
        .clone()
        .unwrap();
    // One final newline trimmed, then the last 256 KiB kept.
    assert_eq!(r.len(), 256 * 1024);
    assert!(r.ends_with("xtail\n"), "{:?}", &r[r.len() - 10..]);

    // Nothing reads a result: a container's output is not kept.
    let y = steps("    - - {name: a, template: print}", "");
    let mut sim = Sim::new(start(&y));
    sim.finish(&mut |s: &StepToLaunch| {
        assert!(!s.capture_result);
        (1000, StepOutcome::succeeded())
    });
}
