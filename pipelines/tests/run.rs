//! Run semantics, driven by the simulated executor in `common`.

mod common;

use std::collections::BTreeMap;

use common::{all_ok, failing, start, wf, Sim, ECHO};
use gpuctl_pipelines::{
    ArtifactKey, ArtifactStore, InMemoryArtifactStore, MemoEntry, NodeOutputs, NodePhase, NodeType,
    Run, StepOutcome, StepToLaunch, WorkflowPhase,
};

/// A workflow whose entrypoint DAG has `tasks` (YAML list items indented
/// for `tasks:`) plus the echo template and `extra` templates.
fn dag(tasks: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {{generateName: test-}}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
{tasks}
{ECHO}
{extra}
"#
    )
}

#[test]
fn diamond_runs_in_dependency_order() {
    let y = dag(
        r#"
      - {name: A, template: echo, arguments: {parameters: [{name: msg, value: A}]}}
      - {name: B, dependencies: [A], template: echo, arguments: {parameters: [{name: msg, value: B}]}}
      - {name: C, dependencies: [A], template: echo, arguments: {parameters: [{name: msg, value: C}]}}
      - {name: D, dependencies: [B, C], template: echo, arguments: {parameters: [{name: msg, value: D}]}}"#,
        "",
    );
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    assert_eq!(sim.launched_at(0), ["A"]);
    assert_eq!(sim.launched_at(1000), ["B", "C"]);
    assert_eq!(sim.launched_at(2000), ["D"]);
    let d = sim.step_named("D");
    assert_eq!(d.id, "wf.D");
    assert_eq!(d.command, ["echo", "D"]);
    assert_eq!(d.image.as_deref(), Some("alpine:3.7"));
    let st = sim.run.status();
    let root = st.root.unwrap();
    assert_eq!(root.node_type, NodeType::Dag);
    assert_eq!(root.children.len(), 4);
    assert_eq!(st.finished_ms, Some(3000));
}

#[test]
fn multiple_roots_start_together() {
    let y = dag(
        r#"
      - {name: A, template: echo}
      - {name: B, template: echo}
      - {name: C, depends: "A && B", template: echo}"#,
        "",
    );
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    assert_eq!(sim.launched_at(0), ["A", "B"]);
    assert_eq!(sim.launched_at(1000), ["C"]);
}

#[test]
fn nested_dags_pass_parameters_in_and_out() {
    let y = dag(
        r#"
      - {name: prep, template: echo}
      - name: inner
        dependencies: [prep]
        template: train-dag
        arguments: {parameters: [{name: lr, value: "0.1"}]}
      - name: report
        dependencies: [inner]
        template: echo
        arguments: {parameters: [{name: msg, value: "acc={{tasks.inner.outputs.parameters.acc}}"}]}"#,
        r#"
  - name: train-dag
    inputs: {parameters: [{name: lr}]}
    outputs:
      parameters:
      - name: acc
        valueFrom: {parameter: "{{tasks.eval.outputs.parameters.acc}}"}
    dag:
      tasks:
      - {name: train, template: echo, arguments: {parameters: [{name: msg, value: "lr={{inputs.parameters.lr}}"}]}}
      - {name: eval, dependencies: [train], template: evaluate}
  - name: evaluate
    outputs:
      parameters:
      - name: acc
        valueFrom: {path: /tmp/acc}
    container: {command: [python, eval.py]}
"#,
    );
    let mut sim = Sim::new(start(&y));
    let phase = sim.finish(&mut |s: &StepToLaunch| {
        if s.display_name == "eval" {
            assert_eq!(s.output_parameters[0].path, "/tmp/acc");
            (1000, StepOutcome::succeeded().with_param("acc", "0.93"))
        } else {
            (1000, StepOutcome::succeeded())
        }
    });
    assert_eq!(phase, WorkflowPhase::Succeeded);
    assert_eq!(sim.launched(), ["prep", "train", "eval", "report"]);
    assert_eq!(sim.step_named("train").id, "wf.inner.train");
    assert_eq!(sim.step_named("train").command, ["echo", "lr=0.1"]);
    assert_eq!(sim.step_named("report").command, ["echo", "acc=0.93"]);
    let inner = sim.run.task_node("inner").unwrap();
    assert_eq!(inner.node_type, NodeType::Dag);
    assert_eq!(inner.outputs.parameters["acc"], "0.93");
}

#[test]
fn target_runs_only_the_target_and_its_dependencies() {
    let y = format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {{name: t}}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      target: C
      tasks:
      - {{name: A, template: echo}}
      - {{name: B, template: echo}}
      - {{name: C, dependencies: [A], template: echo}}
      - {{name: D, dependencies: [C], template: echo}}
{ECHO}"#
    );
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    assert_eq!(sim.launched(), ["A", "C"]);
}

#[test]
fn with_items_scalars_and_maps_fan_out_then_fan_in() {
    let y = dag(
        r#"
      - name: A
        template: echo
        arguments: {parameters: [{name: msg, value: "{{item}}"}]}
        withItems: [foo, bar, 3]
      - name: B
        template: train
        arguments:
          parameters: [{name: lr, value: "{{item.lr}}"}, {name: bs, value: "{{item.bs}}"}]
        withItems:
        - {lr: 0.1, bs: 32}
        - {lr: 0.01, bs: 64}
      - name: C
        dependencies: [A, B]
        template: echo
        arguments: {parameters: [{name: msg, value: "{{tasks.B.outputs.parameters.loss}}"}]}"#,
        r#"
  - name: train
    inputs: {parameters: [{name: lr}, {name: bs}]}
    outputs: {parameters: [{name: loss, valueFrom: {path: /tmp/loss}}]}
    container:
      command: [python, train.py, --lr, "{{inputs.parameters.lr}}", --bs, "{{inputs.parameters.bs}}"]
      resources: {limits: {nvidia.com/gpu: 1, memory: 16Gi}, requests: {cpu: "4"}}
"#,
    );
    let mut sim = Sim::new(start(&y));
    let phase = sim.finish(&mut |s: &StepToLaunch| {
        let o = StepOutcome::succeeded();
        if s.template == "train" {
            let loss = if s.args.is_empty() && s.command[3] == "0.1" {
                "0.5"
            } else {
                "0.4"
            };
            (1000, o.with_param("loss", loss))
        } else {
            (1000, o)
        }
    });
    assert_eq!(phase, WorkflowPhase::Succeeded);
    assert_eq!(
        sim.launched_at(0),
        [
            "A(0:foo)",
            "A(1:bar)",
            "A(2:3)",
            "B(0:bs:32,lr:0.1)",
            "B(1:bs:64,lr:0.01)"
        ]
    );
    assert_eq!(sim.step_named("A(1:bar)").command, ["echo", "bar"]);
    assert_eq!(sim.step_named("A(1:bar)").id, "wf.A(1:bar)");
    let b0 = sim.step_named("B(0:bs:32,lr:0.1)");
    assert_eq!(b0.command[3..], ["0.1", "--bs", "32"]);
    assert_eq!(b0.resources.gpus, 1.0);
    assert_eq!(b0.resources.memory.unwrap().0, 16 << 30);
    assert_eq!(b0.resources.cpu.unwrap().0, 4000);
    // Fan-in: the outputs of all items, as a JSON list.
    assert_eq!(sim.step_named("C").command, ["echo", r#"["0.5","0.4"]"#]);
    assert_eq!(
        sim.run.task_node("A").unwrap().node_type,
        NodeType::TaskGroup
    );
}

#[test]
fn with_param_fans_out_over_an_earlier_result() {
    let y = dag(
        r#"
      - {name: gen, template: gen}
      - name: work
        dependencies: [gen]
        template: echo
        arguments: {parameters: [{name: msg, value: "shard {{item.id}}"}]}
        withParam: "{{tasks.gen.outputs.result}}"
      - name: merge
        dependencies: [work]
        template: echo
        arguments: {parameters: [{name: msg, value: "{{tasks.work.outputs.result}}"}]}"#,
        r#"
  - name: gen
    script:
      image: python:3.12
      command: [python]
      source: |
        import json; print(json.dumps([{"id": i} for i in range(3)]))
"#,
    );
    let mut sim = Sim::new(start(&y));
    let phase = sim.finish(&mut |s: &StepToLaunch| {
        let o = StepOutcome::succeeded();
        match s.template.as_str() {
            "gen" => {
                assert!(s.script_source.as_deref().unwrap().contains("json.dumps"));
                assert_eq!(s.argv(Some("/tmp/script")), ["python", "/tmp/script"]);
                (1000, o.with_result(r#"[{"id": 0}, {"id": 1}, {"id": 2}]"#))
            }
            _ if s.display_name.starts_with("work") => {
                let r = s.command[1].replace("shard ", "");
                (1000, o.with_result(&format!("{{\"n\": {r}}}")))
            }
            _ => (1000, o),
        }
    });
    assert_eq!(phase, WorkflowPhase::Succeeded);
    assert_eq!(
        sim.launched_at(1000),
        ["work(0:id:0)", "work(1:id:1)", "work(2:id:2)"]
    );
    assert_eq!(sim.step_named("work(2:id:2)").command, ["echo", "shard 2"]);
    assert_eq!(
        sim.step_named("merge").command,
        ["echo", r#"[{"n":0},{"n":1},{"n":2}]"#]
    );
}

#[test]
fn with_param_that_is_not_a_list_errors_the_task() {
    let y = dag(
        r#"
      - {name: gen, template: gen}
      - {name: work, dependencies: [gen], template: echo, withParam: "{{tasks.gen.outputs.result}}"}"#,
        r#"
  - name: gen
    script: {command: [sh], source: echo nope}
"#,
    );
    let mut sim = Sim::new(start(&y));
    let phase =
        sim.finish(&mut |_: &StepToLaunch| (1000, StepOutcome::succeeded().with_result("nope")));
    assert_eq!(phase, WorkflowPhase::Error);
    let work = sim.run.task_node("work").unwrap();
    assert_eq!(work.phase, NodePhase::Error);
    assert!(
        work.message.as_deref().unwrap().contains("JSON list"),
        "{work:?}"
    );
}

#[test]
fn when_true_runs_when_false_skips_and_downstream_follows() {
    let y = dag(
        r#"
      - {name: flip, template: flip}
      - {name: heads, dependencies: [flip], template: echo, when: "{{tasks.flip.outputs.result}} == heads"}
      - {name: tails, dependencies: [flip], template: echo, when: "{{tasks.flip.outputs.result}} == tails"}
      - {name: after-tails, dependencies: [tails], template: echo}
      - {name: only-if-tails-ran, depends: tails.Succeeded, template: echo}"#,
        r#"
  - name: flip
    script: {command: [python], source: "print('heads')"}
"#,
    );
    let mut sim = Sim::new(start(&y));
    let phase = sim.finish(&mut |s: &StepToLaunch| {
        if s.template == "flip" {
            (1000, StepOutcome::succeeded().with_result("heads\n"))
        } else {
            (1000, StepOutcome::succeeded())
        }
    });
    assert_eq!(phase, WorkflowPhase::Succeeded);
    assert_eq!(sim.launched(), ["flip", "heads", "after-tails"]);
    let tails = sim.run.task_node("tails").unwrap();
    assert_eq!(
        (tails.node_type, tails.phase),
        (NodeType::Skipped, NodePhase::Skipped)
    );
    assert!(tails.message.as_deref().unwrap().contains("heads == tails"));
    assert_eq!(sim.phase_of("only-if-tails-ran"), NodePhase::Omitted);
}

#[test]
fn when_with_bad_syntax_after_substitution_names_the_task() {
    let y = dag(
        r#"
      - {name: flip, template: flip}
      - {name: go, dependencies: [flip], template: echo, when: "{{tasks.flip.outputs.result}} == "}"#,
        r#"
  - name: flip
    script: {command: [python], source: "print(1)"}
"#,
    );
    // `x == ` fails the syntax probe at validation time already.
    let e = gpuctl_pipelines::parse_workflow("wf.yaml", &y).unwrap_err();
    assert_eq!(e.path, "spec.templates[0].dag.tasks[1].when");
    assert!(e.reason.contains("at column"), "{e}");
    // A value that breaks the expression only at run time.
    let y = y.replace("== \"}", "== 1\"}");
    let mut sim = Sim::new(start(&y));
    sim.finish(&mut |_: &StepToLaunch| (1000, StepOutcome::succeeded().with_result("a b")));
    let go = sim.run.task_node("go").unwrap();
    assert_eq!(go.phase, NodePhase::Error);
    let msg = go.message.as_deref().unwrap();
    assert!(
        msg.contains("task \"go\"") && msg.contains("a b == 1"),
        "{msg}"
    );
}

#[test]
fn continue_on_failed_lets_dependents_run_and_the_dag_succeed() {
    let y = dag(
        r#"
      - {name: flaky, template: echo, continueOn: {failed: true}}
      - {name: next, dependencies: [flaky], template: echo}
      - {name: leaf, template: echo, continueOn: {failed: true}}"#,
        "",
    );
    let mut sim = Sim::new(start(&y));
    assert_eq!(
        sim.finish(&mut failing(&["flaky", "leaf"])),
        WorkflowPhase::Succeeded
    );
    assert_eq!(sim.launched(), ["flaky", "leaf", "next"]);
    assert_eq!(sim.phase_of("flaky"), NodePhase::Failed);
    // Without continueOn the dependent is omitted and the DAG fails.
    let y = y.replace(", continueOn: {failed: true}}", "}");
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut failing(&["flaky"])), WorkflowPhase::Failed);
    assert_eq!(sim.launched(), ["flaky", "leaf"]);
}

const RETRY: &str = r#"
  - name: flaky
    retryStrategy:
      limit: 3
      retryPolicy: OnFailure
      backoff: {duration: "10s", factor: 2, maxDuration: "5m"}
    container: {command: [python, train.py]}
"#;

#[test]
fn retries_wait_for_the_backoff() {
    let y = dag("      - {name: A, template: flaky}", RETRY);
    let mut sim = Sim::new(start(&y));
    let mut attempts = 0;
    let mut script = |s: &StepToLaunch| {
        attempts += 1;
        assert_eq!(s.attempt + 1, attempts);
        if attempts < 3 {
            (1000, StepOutcome::failed(2))
        } else {
            (1000, StepOutcome::succeeded())
        }
    };
    // First attempt fails at 1s: the retry is due 10s later.
    sim.launch(&mut script);
    sim.step(&mut script);
    assert_eq!(sim.now, 1000);
    let tick = sim.run.on_tick(1000);
    assert_eq!(tick.next_wakeup_ms, Some(11_000));
    assert!(
        sim.run.ready_steps(5000, &mut sim.cache).is_empty(),
        "not before the backoff"
    );
    assert_eq!(sim.finish(&mut script), WorkflowPhase::Succeeded);
    let times: Vec<u64> = sim.log.iter().map(|(t, _)| *t).collect();
    // 0 fails at 1s; +10s → 11s, fails at 12s; +20s → 32s.
    assert_eq!(times, [0, 11_000, 32_000]);
    let ids: Vec<&str> = sim.log.iter().map(|(_, s)| s.id.as_str()).collect();
    assert_eq!(ids, ["wf.A(0)", "wf.A(1)", "wf.A(2)"]);
    let a = sim.run.task_node("A").unwrap();
    assert_eq!(
        (a.node_type, a.retries, a.phase),
        (NodeType::Retry, 2, NodePhase::Succeeded)
    );
}

#[test]
fn retries_stop_at_the_limit_the_policy_and_max_duration() {
    // Limit: 1 + 3 attempts, then the node fails.
    let y = dag("      - {name: A, template: flaky}", RETRY);
    let mut sim = Sim::new(start(&y));
    assert_eq!(
        sim.finish(&mut failing(&["A(0)", "A(1)", "A(2)", "A(3)"])),
        WorkflowPhase::Failed
    );
    assert_eq!(sim.log.len(), 4);
    // OnFailure does not retry platform errors.
    let mut sim = Sim::new(start(&y));
    sim.finish(&mut |_: &StepToLaunch| (1000, StepOutcome::errored("node lost")));
    assert_eq!(sim.log.len(), 1);
    assert_eq!(sim.run.phase(), WorkflowPhase::Error);
    // maxDuration 15s: the second retry (due at 32s) would start too late.
    let y = y.replace("maxDuration: \"5m\"", "maxDuration: \"15s\"");
    let mut sim = Sim::new(start(&y));
    sim.finish(&mut failing(&["A(0)", "A(1)", "A(2)"]));
    assert_eq!(sim.log.len(), 2);
    let a = sim.run.task_node("A").unwrap();
    assert!(
        a.message.as_deref().unwrap().contains("maxDuration"),
        "{a:?}"
    );
}

#[test]
fn on_exit_sees_the_workflow_status() {
    let y = format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {{name: exit}}
spec:
  entrypoint: main
  onExit: notify
  templates:
  - name: main
    dag:
      tasks:
      - {{name: A, template: echo}}
  - name: notify
    container:
      command: [notify, "{{{{workflow.name}}}} finished: {{{{workflow.status}}}}"]
{ECHO}"#
    );
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    assert_eq!(sim.launched(), ["A", "wf.onExit"]);
    assert_eq!(
        sim.step_named("wf.onExit").command[1],
        "wf finished: Succeeded"
    );
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut failing(&["A"])), WorkflowPhase::Failed);
    assert_eq!(
        sim.step_named("wf.onExit").command[1],
        "wf finished: Failed"
    );
    assert_eq!(
        sim.run.status().on_exit.unwrap().phase,
        NodePhase::Succeeded
    );
    // A failing exit handler fails a run that had succeeded.
    let mut sim = Sim::new(start(&y));
    assert_eq!(
        sim.finish(&mut failing(&["wf.onExit"])),
        WorkflowPhase::Failed
    );
    assert!(sim.run.message().unwrap().contains("onExit"));
}

const MEMO: &str = r#"
  - name: prep
    inputs: {parameters: [{name: ds}]}
    memoize:
      key: "prep-{{inputs.parameters.ds}}"
      maxAge: "1h"
      cache: {configMap: {name: prep-cache}}
    outputs: {parameters: [{name: rows, valueFrom: {path: /tmp/rows}}]}
    container: {command: [python, prep.py, "{{inputs.parameters.ds}}"]}
"#;

#[test]
fn memoize_hits_fresh_entries_and_misses_old_ones() {
    let y = dag(
        r#"
      - {name: prep, template: prep, arguments: {parameters: [{name: ds, value: imagenet}]}}
      - {name: use, dependencies: [prep], template: echo, arguments: {parameters: [{name: msg, value: "{{tasks.prep.outputs.parameters.rows}}"}]}}"#,
        MEMO,
    );
    let mut script = |s: &StepToLaunch| {
        (
            1000,
            StepOutcome::succeeded()
                .with_param("rows", if s.template == "prep" { "42" } else { "" }),
        )
    };
    // First run: a miss; the result is stored under the substituted key.
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut script), WorkflowPhase::Succeeded);
    assert_eq!(sim.launched(), ["prep", "use"]);
    assert_eq!(
        sim.step_named("prep").memoize_key.as_deref(),
        Some("prep-imagenet")
    );
    let entry = sim.cache["prep-imagenet"].clone();
    assert_eq!(entry.outputs.parameters["rows"], "42");
    assert_eq!(entry.created_ms, 1000);

    // Second run 30 minutes later: a hit; prep does not run.
    let t0 = 30 * 60 * 1000;
    let mut sim2 = Sim::new(Run::new(&wf(&y), "wf2", &BTreeMap::new(), t0).unwrap());
    sim2.now = t0;
    sim2.cache = sim.cache.clone();
    assert_eq!(sim2.finish(&mut script), WorkflowPhase::Succeeded);
    assert_eq!(sim2.launched(), ["use"]);
    assert_eq!(sim2.step_named("use").command, ["echo", "42"]);
    let prep = sim2.run.task_node("prep").unwrap();
    assert!(prep.memoized && prep.phase == NodePhase::Succeeded);

    // Two hours later the entry is too old: a miss.
    let t1 = 2 * 3600 * 1000;
    let mut sim3 = Sim::new(Run::new(&wf(&y), "wf3", &BTreeMap::new(), t1).unwrap());
    sim3.now = t1;
    sim3.cache = sim.cache.clone();
    sim3.finish(&mut script);
    assert_eq!(sim3.launched(), ["prep", "use"]);
    assert_eq!(sim3.cache["prep-imagenet"].created_ms, t1 + 1000);
}

#[test]
fn memoize_hit_from_a_hand_filled_cache() {
    let y = dag(
        "      - {name: prep, template: prep, arguments: {parameters: [{name: ds, value: x}]}}",
        MEMO,
    );
    let mut sim = Sim::new(start(&y));
    let mut outputs = NodeOutputs::default();
    outputs.parameters.insert("rows".into(), "7".into());
    sim.cache.insert(
        "prep-x".into(),
        MemoEntry {
            created_ms: 0,
            outputs,
            step: "old.prep".into(),
        },
    );
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    assert!(sim.log.is_empty());
    assert_eq!(
        sim.run.task_node("prep").unwrap().outputs.parameters["rows"],
        "7"
    );
}

#[test]
fn parameters_results_and_artifacts_pass_between_tasks() {
    let y = dag(
        r#"
      - {name: train, template: train}
      - name: evaluate
        dependencies: [train]
        template: evaluate
        arguments:
          parameters: [{name: epochs, value: "{{tasks.train.outputs.parameters.epochs}}"}]
          artifacts: [{name: model, from: "{{tasks.train.outputs.artifacts.model}}"}]
      - name: publish
        dependencies: [evaluate]
        template: echo
        arguments: {parameters: [{name: msg, value: "score {{tasks.evaluate.outputs.result}}"}]}"#,
        r#"
  - name: train
    outputs:
      parameters: [{name: epochs, valueFrom: {path: /tmp/epochs}}]
      artifacts: [{name: model, path: /tmp/model}]
    container:
      command: [python, train.py]
      env: [{name: OUT, value: /tmp/model}]
      workingDir: /work
  - name: evaluate
    inputs:
      parameters: [{name: epochs}]
      artifacts: [{name: model, path: /in/model}]
    script:
      command: [python]
      source: |
        print(score("{{inputs.artifacts.model.path}}", {{inputs.parameters.epochs}}))
"#,
    );
    let mut store = InMemoryArtifactStore::new();
    let mut sim = Sim::new(start(&y));
    let phase = sim.finish(&mut |s: &StepToLaunch| {
        // The shell's part: fetch inputs, store outputs.
        for a in &s.input_artifacts {
            assert_eq!(store.get(&a.from).unwrap(), b"weights");
        }
        match s.template.as_str() {
            "train" => {
                assert_eq!(s.env["OUT"], "/tmp/model");
                assert_eq!(s.working_dir.as_deref(), Some("/work"));
                let out = &s.output_artifacts[0];
                assert_eq!(out.path, "/tmp/model");
                store.put(&out.key, b"weights".to_vec()).unwrap();
                (
                    1000,
                    StepOutcome::succeeded()
                        .with_param("epochs", "3")
                        .with_artifact("model"),
                )
            }
            "evaluate" => {
                assert_eq!(
                    s.script_source.as_deref().unwrap().trim(),
                    r#"print(score("/in/model", 3))"#
                );
                let a = &s.input_artifacts[0];
                assert_eq!(a.path.as_deref(), Some("/in/model"));
                assert_eq!(
                    a.from,
                    ArtifactKey {
                        workflow: "wf".into(),
                        step: "wf.train".into(),
                        name: "model".into()
                    }
                );
                (1000, StepOutcome::succeeded().with_result("0.97\n"))
            }
            _ => (1000, StepOutcome::succeeded()),
        }
    });
    assert_eq!(phase, WorkflowPhase::Succeeded);
    assert_eq!(sim.step_named("publish").command, ["echo", "score 0.97"]);
}

#[test]
fn a_missing_output_is_an_error() {
    let y = dag(
        "      - {name: train, template: train}",
        r#"
  - name: train
    outputs:
      parameters: [{name: epochs, valueFrom: {path: /tmp/epochs}}]
    container: {command: [python, train.py]}
"#,
    );
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Error);
    let n = sim.run.task_node("train").unwrap();
    assert!(
        n.message.as_deref().unwrap().contains("/tmp/epochs"),
        "{n:?}"
    );
}

#[test]
fn depends_failure_branches() {
    // A fails: the failure handler runs, the success path is omitted, and
    // because an omitted leaf inherits A's failure the DAG fails (as Argo).
    let y = dag(
        r#"
      - {name: A, template: echo}
      - {name: on-fail, depends: A.Failed, template: echo}
      - {name: on-ok, depends: A.Succeeded, template: echo}
      - {name: not-ok, depends: "!A.Succeeded", template: echo}"#,
        "",
    );
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut failing(&["A"])), WorkflowPhase::Failed);
    assert_eq!(sim.launched(), ["A", "on-fail", "not-ok"]);
    assert_eq!(sim.phase_of("on-ok"), NodePhase::Omitted);
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    assert_eq!(sim.launched(), ["A", "on-ok"]);

    // Only a failure handler: a handled failure, the DAG succeeds.
    let y = dag(
        r#"
      - {name: A, template: echo}
      - {name: cleanup, depends: A.Failed || A.Errored, template: echo}"#,
        "",
    );
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut failing(&["A"])), WorkflowPhase::Succeeded);
    assert_eq!(sim.launched(), ["A", "cleanup"]);
}

#[test]
fn depends_any_succeeded_and_all_failed_on_fan_out() {
    let y = dag(
        r#"
      - {name: A, template: echo, withItems: [1, 2, 3], arguments: {parameters: [{name: msg, value: "{{item}}"}]}}
      - {name: some, depends: A.AnySucceeded, template: echo}
      - {name: none, depends: A.AllFailed, template: echo}"#,
        "",
    );
    let mut sim = Sim::new(start(&y));
    sim.finish(&mut failing(&["A(1:2)"]));
    assert!(sim.launched().contains(&"some".to_string()));
    assert_eq!(sim.phase_of("none"), NodePhase::Omitted);
    assert_eq!(sim.phase_of("A"), NodePhase::Failed);

    let mut sim = Sim::new(start(&y));
    sim.finish(&mut failing(&["A(0:1)", "A(1:2)", "A(2:3)"]));
    assert!(sim.launched().contains(&"none".to_string()));
    assert_eq!(sim.phase_of("some"), NodePhase::Omitted);
}

#[test]
fn depends_compound_expression() {
    let y = dag(
        r#"
      - {name: A, template: echo}
      - {name: B, template: echo}
      - {name: C, template: echo, when: "{{workflow.name}} == {{workflow.name}}"}
      - {name: D, depends: "(A.Succeeded || B.Failed) && !C.Skipped", template: echo}"#,
        "",
    );
    let cases: [(&'static [&'static str], bool); 3] = [
        (&[], true),         // A ok
        (&["A", "B"], true), // B failed
        (&["A"], false),     // neither
    ];
    for (fail, d_runs) in cases {
        let mut sim = Sim::new(start(&y));
        sim.finish(&mut failing(fail));
        assert_eq!(
            sim.launched().contains(&"D".to_string()),
            d_runs,
            "{fail:?}"
        );
    }
    // C skipped: D does not run.
    let y = y.replace("== {{workflow.name}}", "== other");
    let mut sim = Sim::new(start(&y));
    sim.finish(&mut all_ok);
    assert_eq!(sim.phase_of("C"), NodePhase::Skipped);
    assert_eq!(sim.phase_of("D"), NodePhase::Omitted);
}

#[test]
fn fail_fast_stops_new_tasks_unless_disabled() {
    let tasks = r#"
      - {name: bad, template: echo}
      - {name: slow, template: echo}
      - {name: after-slow, dependencies: [slow], template: echo}"#;
    let mut script = |s: &StepToLaunch| match s.display_name.as_str() {
        "bad" => (1000, StepOutcome::failed(1)),
        "slow" => (5000, StepOutcome::succeeded()),
        _ => (1000, StepOutcome::succeeded()),
    };
    let mut sim = Sim::new(start(&dag(tasks, "")));
    assert_eq!(sim.finish(&mut script), WorkflowPhase::Failed);
    assert_eq!(sim.launched(), ["bad", "slow"]);
    assert_eq!(
        sim.run.status().finished_ms,
        Some(5000),
        "waits for running steps"
    );
    assert!(
        sim.run.message().unwrap().contains("failFast"),
        "{:?}",
        sim.run.message()
    );
    // The task that never started is recorded Omitted, as Argo shows it.
    let after = sim.run.task_node("after-slow").unwrap();
    assert_eq!(
        (after.node_type, after.phase),
        (NodeType::Skipped, NodePhase::Omitted)
    );

    let y = dag(tasks, "").replace(
        "    dag:\n      tasks:",
        "    dag:\n      failFast: false\n      tasks:",
    );
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut script), WorkflowPhase::Failed);
    assert_eq!(sim.launched(), ["bad", "slow", "after-slow"]);
}

#[test]
fn workflow_deadline_stops_running_steps_and_still_runs_on_exit() {
    let y = format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {{name: dl}}
spec:
  entrypoint: main
  activeDeadlineSeconds: 10
  onExit: bye
  templates:
  - name: main
    dag:
      tasks:
      - {{name: long, template: echo}}
      - {{name: next, dependencies: [long], template: echo}}
  - name: bye
    container: {{command: [echo, "{{{{workflow.status}}}}"]}}
{ECHO}"#
    );
    let mut sim = Sim::new(start(&y));
    let phase = sim.finish(&mut |s: &StepToLaunch| {
        if s.display_name == "long" {
            (100_000, StepOutcome::succeeded())
        } else {
            (1000, StepOutcome::succeeded())
        }
    });
    assert_eq!(phase, WorkflowPhase::Failed);
    assert_eq!(sim.cancelled, [(10_000, "wf.long".to_string())]);
    assert_eq!(sim.launched(), ["long", "wf.onExit"]);
    assert_eq!(sim.step_named("wf.onExit").command[1], "Failed");
    assert!(sim.run.message().unwrap().contains("deadline"));
}

#[test]
fn step_deadline_fails_the_step() {
    let y = dag(
        "      - {name: A, template: slow}",
        r#"
  - name: slow
    activeDeadlineSeconds: 5
    container: {command: [sleep, "100"]}
"#,
    );
    let mut sim = Sim::new(start(&y));
    let phase = sim.finish(&mut |_: &StepToLaunch| (100_000, StepOutcome::succeeded()));
    assert_eq!(phase, WorkflowPhase::Failed);
    assert_eq!(sim.step_named("A").active_deadline_seconds, Some(5));
    assert_eq!(sim.cancelled, [(5000, "wf.A".to_string())]);
    // A late report for the cancelled step changes nothing.
    sim.run
        .on_step_finished("wf.A", StepOutcome::succeeded(), 200_000, &mut sim.cache)
        .unwrap();
    assert_eq!(sim.run.phase(), WorkflowPhase::Failed);
}

#[test]
fn a_serialized_run_resumes_without_relaunching() {
    let y = dag(
        r#"
      - {name: A, template: echo}
      - {name: B, dependencies: [A], template: echo}
      - {name: C, dependencies: [A], template: echo}
      - {name: D, dependencies: [B, C], template: echo}"#,
        "",
    );
    let mut run = start(&y);
    let mut cache = BTreeMap::new();
    let a = run.ready_steps(0, &mut cache);
    assert_eq!(a.len(), 1);
    run.on_step_finished("wf.A", StepOutcome::succeeded(), 1000, &mut cache)
        .unwrap();
    let bc = run.ready_steps(1000, &mut cache);
    assert_eq!(bc.len(), 2);
    run.on_step_finished("wf.B", StepOutcome::succeeded(), 2000, &mut cache)
        .unwrap();

    // The leader persists the run and dies; a new leader loads it.
    let saved = serde_json::to_string(&run).unwrap();
    let mut resumed: Run = serde_json::from_str(&saved).unwrap();
    assert_eq!(resumed, run);
    assert_eq!(resumed.running_steps(), ["wf.C"]);
    assert!(
        resumed.ready_steps(2500, &mut cache).is_empty(),
        "nothing re-launched"
    );
    assert_eq!(resumed.step_spec("wf.C").unwrap().command, ["echo", "hi"]);
    resumed
        .on_step_finished("wf.C", StepOutcome::succeeded(), 3000, &mut cache)
        .unwrap();
    let d = resumed.ready_steps(3000, &mut cache);
    assert_eq!(
        d.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["wf.D"]
    );
    resumed
        .on_step_finished("wf.D", StepOutcome::succeeded(), 4000, &mut cache)
        .unwrap();
    assert_eq!(resumed.phase(), WorkflowPhase::Succeeded);
    // The status tree serializes too (for `describe` and the API).
    let st = serde_json::to_value(resumed.status()).unwrap();
    assert_eq!(st["root"]["nodeType"], "DAG");
    assert_eq!(st["root"]["children"][3]["displayName"], "D");
    assert_eq!(st["root"]["children"][3]["finishedMs"], 4000);
}

#[test]
fn bad_reports_are_errors() {
    let y = dag("      - {name: A, template: echo}", "");
    let mut run = start(&y);
    let mut cache = BTreeMap::new();
    assert!(matches!(
        run.on_step_finished("wf.nope", StepOutcome::succeeded(), 0, &mut cache),
        Err(gpuctl_pipelines::RunError::UnknownStep(_))
    ));
    assert!(matches!(
        run.on_step_finished("wf.A", StepOutcome::succeeded(), 0, &mut cache),
        Err(gpuctl_pipelines::RunError::NotLaunched(_))
    ));
    assert!(matches!(
        run.on_step_finished("wf", StepOutcome::succeeded(), 0, &mut cache),
        Err(gpuctl_pipelines::RunError::NotAStep(_))
    ));
}

#[test]
fn workflow_arguments_and_terminate() {
    let y = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: args-}
spec:
  entrypoint: main
  arguments:
    parameters:
    - {name: model, value: resnet, enum: [resnet, vit]}
    - {name: epochs}
  templates:
  - name: main
    inputs: {parameters: [{name: epochs}]}
    container:
      command: [train, "{{workflow.parameters.model}}", "{{inputs.parameters.epochs}}"]
"#;
    let w = wf(y);
    assert_eq!(w.run_name("x7k2p"), "args-x7k2p");
    let no_epochs = Run::new(&w, "a", &BTreeMap::new(), 0).unwrap_err();
    assert!(no_epochs.to_string().contains("epochs"), "{no_epochs}");
    let mut args = BTreeMap::new();
    args.insert("epochs".to_string(), "5".to_string());
    args.insert("model".to_string(), "bert".to_string());
    assert!(Run::new(&w, "a", &args, 0)
        .unwrap_err()
        .to_string()
        .contains("allowed"));
    args.insert("model".to_string(), "vit".to_string());
    let mut run = Run::new(&w, "args-x7k2p", &args, 0).unwrap();
    let steps = run.ready_steps(0, &mut gpuctl_pipelines::NoCache);
    assert_eq!(steps[0].command, ["train", "vit", "5"]);
    assert_eq!(steps[0].id, "args-x7k2p");
    let cancel = run.terminate(500, "cancelled by user");
    assert_eq!(cancel, ["args-x7k2p"]);
    assert_eq!(run.phase(), WorkflowPhase::Failed);
}

#[test]
fn a_run_stored_as_header_and_nodes_comes_back_the_same() {
    let y = dag(
        "      - {name: A, template: echo, arguments: {parameters: [{name: msg, value: a}]}}\n      - {name: B, dependencies: [A], template: echo, arguments: {parameters: [{name: msg, value: b}]}}",
        "",
    );
    let mut run = start(&y);
    let _ = run.ready_steps(1, &mut gpuctl_pipelines::NoCache);
    let header = serde_json::to_vec(&run.without_nodes()).unwrap();
    let nodes: Vec<gpuctl_pipelines::Node> = run.nodes().values().cloned().collect();
    let h: gpuctl_pipelines::RunHeader = serde_json::from_slice(&header).unwrap();
    let back = h.into_run(nodes.clone()).unwrap();
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        serde_json::to_value(&run).unwrap()
    );
    // Stored without the workflow, it comes back with the one given.
    let header = serde_json::to_vec(&run.without_nodes_or_workflow()).unwrap();
    let text = String::from_utf8(header.clone()).unwrap();
    assert!(!text.contains("\"templates\""), "{text}");
    let h: gpuctl_pipelines::RunHeader = serde_json::from_slice(&header).unwrap();
    assert!(h.clone().into_run(nodes.clone()).is_none());
    let back = h.into_run_with(run.workflow().clone(), nodes);
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        serde_json::to_value(&run).unwrap()
    );
}
