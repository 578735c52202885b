//! Argo's expressions: `{{=...}}` with the expr-lang subset and the
//! functions workflows use, `when` written as an expression,
//! `valueFrom.expression`, and the refusals at submit.

mod common;

use common::{start, Sim};
use gpuctl_pipelines::expr::eval_expr;
use gpuctl_pipelines::vars::{substitute, Scope};
use gpuctl_pipelines::{parse_workflow, NodePhase, StepOutcome, StepToLaunch, WorkflowPhase};

fn scope() -> Scope {
    let mut s = Scope::new();
    for (k, v) in [
        ("inputs.parameters.n", "5"),
        ("inputs.parameters.lr", "0.25"),
        ("inputs.parameters.name", "  Model-A "),
        ("inputs.parameters.my-param", "dash"),
        (
            "tasks.gen.outputs.result",
            r#"{"metrics": {"acc": 0.91}, "tags": ["a", "b"]}"#,
        ),
        ("tasks.gen.outputs.parameters", r#"{"x":"1"}"#),
        ("tasks.gen.outputs.parameters.x", "1"),
        ("tasks.gen.status", "Succeeded"),
        ("workflow.name", "wf-1"),
        ("item", "3"),
    ] {
        s.insert(k.into(), v.into());
    }
    s
}

#[test]
fn expressions_evaluate_as_argo_does() {
    let s = scope();
    let cases = [
        ("{{= asInt(inputs.parameters.n) + 1 }}", "6"),
        ("{{=asInt(inputs.parameters.n) * 2 - 3}}", "7"),
        ("{{=asFloat(inputs.parameters.lr) * 2}}", "0.5"),
        ("{{= 7 / 2 }}", "3.5"),
        ("{{= 7 % 4 }}", "3"),
        (
            "{{= asInt(item) > 2 && tasks.gen.status == 'Succeeded' }}",
            "true",
        ),
        ("{{= !(1 < 2) || false }}", "false"),
        (
            "{{= asInt(inputs.parameters.n) > 3 ? 'big' : 'small' }}",
            "big",
        ),
        ("{{= 'run-' + workflow.name }}", "run-wf-1"),
        ("{{= string(asInt(item) + 1) + 'x' }}", "4x"),
        ("{{= inputs.parameters['my-param'] }}", "dash"),
        (
            "{{= jsonpath(tasks.gen.outputs.result, '$.metrics.acc') }}",
            "0.91",
        ),
        (
            "{{= jsonpath(tasks.gen.outputs.result, '$.tags') }}",
            r#"["a","b"]"#,
        ),
        ("{{= sprig.trim(inputs.parameters.name) }}", "Model-A"),
        (
            "{{= sprig.upper(sprig.trim(inputs.parameters.name)) }}",
            "MODEL-A",
        ),
        ("{{= lower('ABC') }}", "abc"),
        ("{{= sprig.replace('-', '_', 'a-b-c') }}", "a_b_c"),
        ("{{= sprig.default('none', '') }}", "none"),
        ("{{= sprig.join(',', ['a', 'b']) }}", "a,b"),
        ("{{= join(split('a b c', ' '), '+') }}", "a+b+c"),
        ("{{= sprig.splitList(',', 'x,y')[1] }}", "y"),
        ("{{= sprig.split(',', 'x,y')._0 }}", "x"),
        ("{{= len(fromJSON(tasks.gen.outputs.result).tags) }}", "2"),
        ("{{= tasks.gen.outputs.parameters.x == '1' }}", "true"),
        ("{{= 'b' in ['a', 'b'] }}", "true"),
        ("{{= 'model-v2' matches '^model-v[0-9]+$' }}", "true"),
        ("{{= toJson({a: 1}) }}", r#"{"a":1}"#),
        ("{{= [1, 2] }}", "[1,2]"),
        ("x={{=1+1}}, y={{inputs.parameters.n}}", "x=2, y=5"),
    ];
    for (src, want) in cases {
        assert_eq!(substitute(src, &s).as_deref(), Ok(want), "{src}");
    }
    for (src, why) in [
        ("asInt('x')", "whole number"),
        ("1 +", "syntax error"),
        ("nope.x", "unknown name nope"),
        ("inputs.parameters.missing", "nil"),
        ("'a' && true", "needs a bool"),
        ("'a' + 1", "invalid operation"),
    ] {
        let e = eval_expr(src, &s).unwrap_err();
        assert!(e.contains(why), "{src}: {e}");
    }
}

fn dag_wf(tasks: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {{generateName: expr-}}
spec:
  entrypoint: main
  arguments: {{parameters: [{{name: threshold, value: "5"}}]}}
  templates:
  - name: main
{tasks}
  - name: gen
    script: {{command: [sh], source: "echo 7"}}
  - name: print
    inputs: {{parameters: [{{name: message, default: hi}}]}}
    container: {{command: [echo, "{{{{inputs.parameters.message}}}}"]}}
{extra}
"#
    )
}

#[test]
fn when_as_an_expression_and_arguments_from_expressions() {
    let y = dag_wf(
        r#"
    dag:
      tasks:
      - {name: gen, template: gen}
      - name: big
        depends: gen
        template: print
        when: "{{= asInt(tasks.gen.outputs.result) > asInt(workflow.parameters.threshold) }}"
        arguments: {parameters: [{name: message, value: "{{= asInt(tasks.gen.outputs.result) * 10 }}"}]}
      - name: small
        depends: gen
        template: print
        when: "{{= asInt(tasks.gen.outputs.result) <= 5 }}""#,
        "",
    );
    let mut sim = Sim::new(start(&y));
    let phase = sim.finish(&mut |s: &StepToLaunch| {
        let o = StepOutcome::succeeded();
        if s.template == "gen" {
            (1000, o.with_result("7\n"))
        } else {
            (1000, o)
        }
    });
    assert_eq!(phase, WorkflowPhase::Succeeded);
    assert_eq!(sim.launched(), ["gen", "big"]);
    assert_eq!(sim.step_named("big").command, ["echo", "70"]);
    assert_eq!(sim.phase_of("small"), NodePhase::Skipped);
}

#[test]
fn value_from_expression_picks_an_output() {
    // Argo's conditional-parameters example, shortened.
    let y = dag_wf(
        r#"
    outputs:
      parameters:
      - name: stepresult
        valueFrom:
          expression: "tasks['flip-coin'].outputs.result == 'heads' ? tasks.heads.outputs.result : tasks.tails.outputs.result"
    dag:
      tasks:
      - {name: flip-coin, template: gen}
      - {name: heads, depends: flip-coin, template: gen, when: "{{tasks.flip-coin.outputs.result}} == heads"}
      - {name: tails, depends: flip-coin, template: gen, when: "{{tasks.flip-coin.outputs.result}} == tails"}"#,
        "",
    );
    let mut sim = Sim::new(start(&y));
    let phase = sim.finish(&mut |s: &StepToLaunch| {
        let r = match s.display_name.as_str() {
            "flip-coin" => "tails",
            "tails" => "it was tails",
            _ => "it was heads",
        };
        (1000, StepOutcome::succeeded().with_result(r))
    });
    assert_eq!(phase, WorkflowPhase::Succeeded);
    let root = sim.run.status().root.unwrap();
    assert_eq!(root.outputs.parameters["stepresult"], "it was tails");
}

#[test]
fn a_failing_expression_errors_the_task_with_the_reason() {
    let y = dag_wf(
        r#"
    dag:
      tasks:
      - {name: gen, template: gen}
      - {name: use, depends: gen, template: print, arguments: {parameters: [{name: message, value: "{{= asInt(tasks.gen.outputs.result) }}"}]}}"#,
        "",
    );
    let mut sim = Sim::new(start(&y));
    let phase =
        sim.finish(&mut |_: &StepToLaunch| (1000, StepOutcome::succeeded().with_result("seven")));
    assert_eq!(phase, WorkflowPhase::Error);
    let n = sim.run.task_node("use").unwrap();
    assert!(
        n.message
            .as_deref()
            .unwrap()
            .contains("\"seven\" is not a whole number"),
        "{n:?}"
    );
}

#[test]
fn unsupported_functions_and_unknown_names_are_refused_at_submit() {
    let refuse = |expr: &str, words: &[&str]| {
        let y = dag_wf(
            &format!(
                r#"
    dag:
      tasks:
      - {{name: a, template: print, arguments: {{parameters: [{{name: message, value: "{expr}"}}]}}}}"#
            ),
            "",
        );
        let e = parse_workflow("wf.yaml", &y).expect_err(expr);
        assert_eq!(
            e.path, "spec.templates[0].dag.tasks[0].arguments.parameters[0].value",
            "{e}"
        );
        for w in words {
            assert!(e.reason.contains(w), "{e} (wanted {w:?})");
        }
    };
    refuse(
        "{{= sprig.env('HOME') }}",
        &["function \"sprig.env\"", "not supported"],
    );
    refuse("{{= filter([1], {# > 0}) }}", &["syntax error"]);
    refuse("{{= sha256sum('x') }}", &["function \"sha256sum\""]);
    refuse(
        "{{= inputs.parameters.nope }}",
        &["no input parameter \"nope\""],
    );
    refuse(
        "{{= workflow.parameters.nope }}",
        &["no workflow parameter \"nope\""],
    );
    refuse("{{= foo + 1 }}", &["unknown name \"foo\""]);
    refuse(
        "{{= workflow.nmae }}",
        &["unknown variable `{{workflow.nmae}}`"],
    );
    refuse("{{= 1 + }}", &["syntax error", "column"]);
    // And a good one passes.
    let y = dag_wf(
        r#"
    dag:
      tasks:
      - {name: a, template: print, arguments: {parameters: [{name: message, value: "{{= sprig.trim(workflow.parameters.threshold) }}"}]}}"#,
        "",
    );
    parse_workflow("wf.yaml", &y).unwrap();
}
