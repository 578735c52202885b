//! Invalid workflows are rejected before anything runs, with the file, the
//! field path and the reason; real Argo workflows are accepted unchanged.

mod common;

use std::collections::BTreeMap;

use gpuctl_pipelines::{
    parse_workflow, validate_all, NodePhase, Run, StepOutcome, StepToLaunch, WorkflowPhase,
};

/// Argo's dag-diamond example, as users have it (labels, annotations,
/// namespace, serviceAccountName, podGC, ttlStrategy, template metadata,
/// imagePullPolicy... all accepted).
const ARGO_DIAMOND: &str = r#"
# The following workflow executes a diamond workflow
#
#   A
#  / \
# B   C
#  \ /
#   D
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: dag-diamond-
  namespace: argo
  labels: {team: ml, workflows.argoproj.io/archive-strategy: "false"}
  annotations:
    workflows.argoproj.io/description: |
      This is a simple diamond DAG.
spec:
  serviceAccountName: argo-workflow
  podGC: {strategy: OnPodSuccess}
  ttlStrategy: {secondsAfterCompletion: 300}
  entrypoint: diamond
  templates:
  - name: diamond
    dag:
      tasks:
      - name: A
        template: echo
        arguments:
          parameters: [{name: message, value: A}]
      - name: B
        depends: "A"
        template: echo
        arguments:
          parameters: [{name: message, value: B}]
      - name: C
        depends: "A"
        template: echo
        arguments:
          parameters: [{name: message, value: C}]
      - name: D
        depends: "B && C"
        template: echo
        arguments:
          parameters: [{name: message, value: D}]

  - name: echo
    metadata:
      labels: {app: echo}
    nodeSelector: {gpu: "true"}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    inputs:
      parameters:
      - name: message
    container:
      image: alpine:3.7
      imagePullPolicy: IfNotPresent
      command: [echo, "{{inputs.parameters.message}}"]
      volumeMounts: [{name: data, mountPath: /data}]
      resources:
        limits: {nvidia.com/gpu: 1, memory: 32Mi, cpu: 100m}
"#;

/// A training pipeline in the style of the Argo examples: parameters,
/// scripts, artifacts, retries, fan-out, conditionals, exit handler.
const ARGO_TRAINING: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: train-pipeline-
spec:
  entrypoint: pipeline
  onExit: exit-handler
  activeDeadlineSeconds: 86400
  arguments:
    parameters:
    - name: dataset
      value: s3://bucket/imagenet
  templates:
  - name: pipeline
    dag:
      failFast: false
      tasks:
      - name: prepare
        template: prepare
        arguments:
          parameters: [{name: dataset, value: "{{workflow.parameters.dataset}}"}]
      - name: list-configs
        template: list-configs
      - name: train
        dependencies: [prepare, list-configs]
        template: train
        withParam: "{{tasks.list-configs.outputs.result}}"
        arguments:
          parameters:
          - {name: lr, value: "{{item.lr}}"}
          - {name: rows, value: "{{tasks.prepare.outputs.parameters.rows}}"}
          artifacts:
          - {name: data, from: "{{tasks.prepare.outputs.artifacts.data}}"}
      - name: pick-best
        depends: "train.AnySucceeded"
        template: pick-best
        arguments:
          parameters: [{name: losses, value: "{{tasks.train.outputs.parameters.loss}}"}]
      - name: deploy
        depends: "pick-best.Succeeded"
        when: "{{tasks.pick-best.outputs.result}} < 0.5"
        template: deploy
  - name: prepare
    inputs:
      parameters: [{name: dataset}]
    outputs:
      parameters: [{name: rows, valueFrom: {path: /tmp/rows}}]
      artifacts: [{name: data, path: /tmp/data, archive: {none: {}}}]
    memoize:
      key: "prepare-{{inputs.parameters.dataset}}"
      maxAge: "24h"
      cache: {configMap: {name: prepare-cache}}
    container:
      image: python:3.12
      command: [python, prepare.py, "{{inputs.parameters.dataset}}"]
  - name: list-configs
    script:
      image: python:3.12
      command: [python]
      source: |
        import json
        print(json.dumps([{"lr": 0.1}, {"lr": 0.01}]))
  - name: train
    retryStrategy:
      limit: "2"
      retryPolicy: Always
      backoff: {duration: "30s", factor: 2, maxDuration: "10m"}
    activeDeadlineSeconds: 7200
    inputs:
      parameters: [{name: lr}, {name: rows}]
      artifacts: [{name: data, path: /data}]
    outputs:
      parameters: [{name: loss, valueFrom: {path: /tmp/loss, default: "1.0"}}]
    container:
      image: pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime
      command: [torchrun, --nproc_per_node=2, train.py]
      args: [--lr, "{{inputs.parameters.lr}}", --data, "{{inputs.artifacts.data.path}}"]
      env:
      - {name: ROWS, value: "{{inputs.parameters.rows}}"}
      - {name: NCCL_DEBUG, value: INFO}
      workingDir: /workspace
      resources:
        requests: {cpu: "8", memory: 64Gi}
        limits: {nvidia.com/gpu: "2"}
  - name: pick-best
    inputs:
      parameters: [{name: losses}]
    script:
      image: python:3.12
      command: [python]
      source: |
        import json; print(min(map(float, json.loads('{{inputs.parameters.losses}}'))))
  - name: deploy
    container: {image: alpine, command: [sh, -c, "echo deploy"]}
  - name: exit-handler
    container:
      image: alpine
      command: [sh, -c, "echo {{workflow.name}} {{workflow.status}}"]
"#;

#[test]
fn real_argo_workflows_are_accepted_unchanged() {
    for (name, y) in [("diamond", ARGO_DIAMOND), ("training", ARGO_TRAINING)] {
        let wf = parse_workflow("wf.yaml", y).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(validate_all(&wf).is_empty(), "{name}");
    }
    let wf = parse_workflow("wf.yaml", ARGO_DIAMOND).unwrap();
    assert_eq!(wf.metadata.labels["team"], "ml");
    assert_eq!(wf.run_name("abcde"), "dag-diamond-abcde");
}

/// (what is wrong, the broken YAML, the path, words the reason must contain)
fn reject(yaml: &str, path: &str, reason: &[&str]) {
    let e = parse_workflow("wf.yaml", yaml).expect_err("should be rejected");
    assert_eq!(e.source_name, "wf.yaml");
    assert_eq!(e.path, path, "{e}");
    for r in reason {
        assert!(e.reason.contains(r), "{e} (wanted {r:?})");
    }
    assert!(
        e.to_string().starts_with(&format!("wf.yaml: {path}: ")),
        "{e}"
    );
}

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    reject(
        &ARGO_DIAMOND.replace("depends: \"B && C\"", "dependson: \"B && C\""),
        "spec.templates[0].dag.tasks[3].dependson",
        &["unknown field `dependson`"],
    );
    reject(
        &ARGO_DIAMOND.replace(
            "entrypoint: diamond",
            "entrypoint: diamond\n  parralelism: 2",
        ),
        "spec.parralelism",
        &["unknown field"],
    );
}

#[test]
fn known_but_unsupported_fields_say_so() {
    reject(
        &ARGO_DIAMOND.replace(
            "entrypoint: diamond",
            "entrypoint: diamond\n  synchronization: {mutex: {name: m}}",
        ),
        "spec.synchronization",
        &["not supported"],
    );
    reject(
        &ARGO_DIAMOND.replace("        template: echo\n        arguments:\n          parameters: [{name: message, value: A}]",
            "        template: echo\n        templateRef: {name: other, template: echo}"),
        "spec.templates[0].dag.tasks[0].templateRef",
        &["use either `template` or `templateRef`"],
    );
    reject(
        &ARGO_DIAMOND.replace(
            "  - name: diamond\n    dag:",
            "  - name: diamond\n    steps: []\n    dag:",
        ),
        "spec.templates[0]",
        &["exactly one of `dag`, `steps`"],
    );
}

#[test]
fn missing_entrypoint_and_templates() {
    reject(
        &ARGO_DIAMOND.replace("  entrypoint: diamond\n", ""),
        "spec.entrypoint",
        &["missing"],
    );
    reject(
        &ARGO_DIAMOND.replace("entrypoint: diamond", "entrypoint: diamnd"),
        "spec.entrypoint",
        &["no template named \"diamnd\"", "diamond, echo"],
    );
    reject(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: x}\nspec: {entrypoint: main}\n",
        "spec.templates",
        &["at least one template"],
    );
    reject(
        &ARGO_DIAMOND.replace("kind: Workflow", "kind: Job"),
        "kind",
        &["Workflow"],
    );
    reject(
        &ARGO_DIAMOND.replace("argoproj.io/v1alpha1", "gpuctl.io/v1"),
        "apiVersion",
        &["argoproj.io/v1alpha1"],
    );
}

#[test]
fn a_task_referring_to_a_missing_template() {
    reject(
        &ARGO_DIAMOND.replacen("template: echo", "template: ecko", 2),
        "spec.templates[0].dag.tasks[0].template",
        &["no template named \"ecko\""],
    );
}

#[test]
fn cycles_are_named() {
    let y = ARGO_DIAMOND.replace(
        "      - name: A\n        template: echo",
        "      - name: A\n        depends: D\n        template: echo",
    );
    reject(
        &y,
        "spec.templates[0].dag.tasks[0].depends",
        &["cycle: A -> B -> D -> A"],
    );
    let y = ARGO_DIAMOND.replace("depends: \"A\"\n        template: echo\n        arguments:\n          parameters: [{name: message, value: B}]",
        "depends: \"B\"\n        template: echo\n        arguments:\n          parameters: [{name: message, value: B}]");
    reject(
        &y,
        "spec.templates[0].dag.tasks[1].depends",
        &["depends on itself"],
    );
}

#[test]
fn unknown_tasks_in_depends_and_dependencies() {
    reject(
        &ARGO_DIAMOND.replace("depends: \"B && C\"", "depends: \"B && trian\""),
        "spec.templates[0].dag.tasks[3].depends",
        &["unknown task \"trian\"", "A, B, C, D"],
    );
    reject(
        &ARGO_DIAMOND.replace("depends: \"B && C\"", "dependencies: [B, Q]"),
        "spec.templates[0].dag.tasks[3].dependencies",
        &["unknown task \"Q\""],
    );
}

#[test]
fn task_variables_must_name_a_dependency() {
    // C does not depend on B.
    let y = ARGO_DIAMOND.replace(
        "[{name: message, value: C}]",
        "[{name: message, value: \"{{tasks.B.outputs.result}}\"}]",
    );
    reject(
        &y,
        "spec.templates[0].dag.tasks[2].arguments.parameters[0].value",
        &["not a dependency of \"C\""],
    );
    let y = ARGO_DIAMOND.replace(
        "[{name: message, value: D}]",
        "[{name: message, value: \"{{tasks.X.outputs.result}}\"}]",
    );
    reject(
        &y,
        "spec.templates[0].dag.tasks[3].arguments.parameters[0].value",
        &["unknown task \"X\""],
    );
    // A transitive dependency is fine.
    let y = ARGO_DIAMOND.replace(
        "[{name: message, value: D}]",
        "[{name: message, value: \"{{tasks.A.outputs.result}}\"}]",
    );
    parse_workflow("wf.yaml", &y).unwrap();
    // Outputs a template does not declare.
    let y = ARGO_DIAMOND.replace(
        "[{name: message, value: D}]",
        "[{name: message, value: \"{{tasks.B.outputs.parameters.loss}}\"}]",
    );
    reject(
        &y,
        "spec.templates[0].dag.tasks[3].arguments.parameters[0].value",
        &["no output parameter \"loss\""],
    );
}

#[test]
fn mixing_dependencies_and_depends() {
    reject(
        &ARGO_DIAMOND.replace(
            "depends: \"B && C\"",
            "depends: \"B && C\"\n        dependencies: [B]",
        ),
        "spec.templates[0].dag.tasks[3].depends",
        &["either `depends` or `dependencies`"],
    );
}

#[test]
fn bad_depends_syntax_shows_position_and_expectation() {
    reject(
        &ARGO_DIAMOND.replace("depends: \"B && C\"", "depends: \"B && (C || \""),
        "spec.templates[0].dag.tasks[3].depends",
        &[
            "syntax error",
            "column 12",
            "expected a task name",
            "found the end",
        ],
    );
    reject(
        &ARGO_DIAMOND.replace("depends: \"B && C\"", "depends: \"B.Succeded\""),
        "spec.templates[0].dag.tasks[3].depends",
        &["column 3", "Succeeded, Failed"],
    );
}

#[test]
fn bad_when_syntax() {
    reject(
        &ARGO_DIAMOND.replace(
            "depends: \"B && C\"",
            "depends: \"B && C\"\n        when: \"{{tasks.B.outputs.result}} == (x\"",
        ),
        "spec.templates[0].dag.tasks[3].when",
        &["syntax error", "expected \")\""],
    );
}

#[test]
fn recursion_without_a_base_case() {
    let y = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: rec}
spec:
  entrypoint: a
  templates:
  - name: a
    dag:
      tasks:
      - {name: go, template: b}
  - name: b
    dag:
      tasks:
      - {name: step, template: leaf}
      - {name: again, dependencies: [step], template: a}
  - name: leaf
    container: {command: [echo]}
"#;
    reject(
        y,
        "spec.templates[1].dag.tasks[1].template",
        &["recursion without a base case: a -> b -> a"],
    );
    // With a `when` on the loop it is a legitimate recursion.
    let ok = y.replace(
        "template: a}",
        "template: a, when: \"{{tasks.step.outputs.result}} != done\"}",
    );
    parse_workflow("wf.yaml", &ok).unwrap();
}

#[test]
fn with_items_and_with_param_together() {
    reject(
        &ARGO_DIAMOND.replace("depends: \"B && C\"", "depends: \"B && C\"\n        withItems: [1, 2]\n        withParam: \"{{tasks.B.outputs.result}}\""),
        "spec.templates[0].dag.tasks[3].withParam",
        &["either `withItems` or `withParam`"],
    );
    // {{item}} outside a fan-out.
    reject(
        &ARGO_DIAMOND.replace(
            "[{name: message, value: D}]",
            "[{name: message, value: \"{{item}}\"}]",
        ),
        "spec.templates[0].dag.tasks[3].arguments.parameters[0].value",
        &["withItems"],
    );
}

#[test]
fn retry_limits_must_be_sane() {
    let base = ARGO_TRAINING;
    reject(
        &base.replace("limit: \"2\"", "limit: -1"),
        "spec.templates[3].retryStrategy.limit",
        &["zero or more"],
    );
    reject(
        &base.replace("limit: \"2\"", "limit: 1000000"),
        "spec.templates[3].retryStrategy.limit",
        &["absurd"],
    );
    reject(
        &base.replace("limit: \"2\"", "limit: lots"),
        "spec.templates[3].retryStrategy.limit",
        &["whole number"],
    );
    // No limit: Argo retries until the step succeeds; so does gpuctl.
    parse_workflow("wf.yaml", &base.replace("      limit: \"2\"\n", "")).unwrap();
    reject(
        &base.replace("duration: \"30s\"", "duration: \"30 parsecs\""),
        "spec.templates[3].retryStrategy.backoff.duration",
        &["invalid duration"],
    );
    reject(
        &base.replace("retryPolicy: Always", "retryPolicy: Sometimes"),
        "spec.templates[3].retryStrategy.retryPolicy",
        &["unknown variant"],
    );
}

#[test]
fn malformed_variables() {
    reject(
        &ARGO_DIAMOND.replace(
            "\"{{inputs.parameters.message}}\"",
            "\"{{inputs.parameters.message\"",
        ),
        "spec.templates[1].container.command[1]",
        &["unterminated"],
    );
    reject(
        &ARGO_DIAMOND.replace(
            "{{inputs.parameters.message}}",
            "{{inputs.parameters.mesage}}",
        ),
        "spec.templates[1].container.command[1]",
        &["no input parameter \"mesage\""],
    );
    reject(
        &ARGO_DIAMOND.replace(
            "{{inputs.parameters.message}}",
            "{{=sprig.env(inputs.parameters.message)}}",
        ),
        "spec.templates[1].container.command[1]",
        &["function \"sprig.env\"", "not supported"],
    );
    reject(
        &ARGO_DIAMOND.replace(
            "{{inputs.parameters.message}}",
            "{{tasks.A.outputs.result}}",
        ),
        "spec.templates[1].container.command[1]",
        &["only a DAG task"],
    );
    reject(
        &ARGO_TRAINING.replace(
            "{{workflow.parameters.dataset}}",
            "{{workflow.parameters.data}}",
        ),
        "spec.templates[0].dag.tasks[0].arguments.parameters[0].value",
        &["no workflow parameter \"data\""],
    );
}

#[test]
fn other_checks() {
    // Required input not supplied by the task.
    reject(
        &ARGO_DIAMOND.replace(
            "        arguments:\n          parameters: [{name: message, value: A}]\n",
            "",
        ),
        "spec.templates[0].dag.tasks[0].arguments.parameters",
        &["missing parameter \"message\""],
    );
    // GPU counts.
    reject(
        &ARGO_DIAMOND.replace("nvidia.com/gpu: 1,", "nvidia.com/gpu: 1.5,"),
        "spec.templates[1].container.resources.limits.nvidia.com/gpu",
        &["neither whole"],
    );
    reject(
        &ARGO_DIAMOND.replace("memory: 32Mi", "memory: 32Qi"),
        "spec.templates[1].container.resources.limits.memory",
        &["unknown size unit"],
    );
    // A container with no command (gpuctl has no image entrypoint).
    reject(
        &ARGO_DIAMOND.replace(
            "      command: [echo, \"{{inputs.parameters.message}}\"]\n",
            "      args: [hi]\n",
        ),
        "spec.templates[1].container.command",
        &["node's environment"],
    );
    // An image that would read as an option of the container runtime.
    reject(
        &ARGO_DIAMOND.replacen("image: alpine:3.7", "image: \"--privileged\"", 1),
        "spec.templates[1].container.image",
        &["must start with a letter or digit"],
    );
    reject(
        &ARGO_TRAINING.replace("activeDeadlineSeconds: 86400", "activeDeadlineSeconds: 0"),
        "spec.activeDeadlineSeconds",
        &["at least 1"],
    );
    reject(
        &ARGO_DIAMOND.replace("  - name: echo\n", "  - name: diamond\n"),
        "spec.templates[1].name",
        &["duplicate template name"],
    );
}

#[test]
fn all_problems_are_listed() {
    let y = ARGO_DIAMOND
        .replace("depends: \"B && C\"", "depends: \"B && trian\"")
        .replace(
            "{{inputs.parameters.message}}",
            "{{inputs.parameters.mesage}}",
        );
    let wf = gpuctl_pipelines::spec::parse_unvalidated(&y).unwrap();
    let errs = validate_all(&wf);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.templates[0].dag.tasks[3].depends",
            "spec.templates[1].container.command[1]"
        ]
    );
}

#[test]
fn the_training_example_runs_end_to_end() {
    let wf = parse_workflow("train.yaml", ARGO_TRAINING).unwrap();
    let name = wf.run_name("k3x9z");
    let run = Run::new(&wf, &name, &BTreeMap::new(), 0).unwrap();
    let mut sim = common::Sim::new(run);
    let phase = sim.finish(&mut |s: &StepToLaunch| {
        let ok = StepOutcome::succeeded();
        match s.template.as_str() {
            "prepare" => (60_000, ok.with_param("rows", "1000").with_artifact("data")),
            "list-configs" => (1000, ok.with_result(r#"[{"lr": 0.1}, {"lr": 0.01}]"#)),
            // The lr=0.1 run fails once, then succeeds; lr=0.01 writes no loss file.
            "train" if s.args[1] == "0.1" && s.attempt == 0 => (5000, StepOutcome::failed(1)),
            "train" if s.args[1] == "0.1" => (5000, ok.with_param("loss", "0.3")),
            "train" => (5000, ok),
            "pick-best" => (1000, ok.with_result("0.3")),
            _ => (1000, ok),
        }
    });
    assert_eq!(phase, WorkflowPhase::Succeeded, "{:#?}", sim.run.status());
    let train = sim.step_named("train(0:lr:0.1)(0)");
    assert_eq!(train.id, format!("{name}.train(0:lr:0.1)(0)"));
    assert_eq!(train.resources.gpus, 2.0);
    assert_eq!(train.resources.memory.unwrap().0, 64 << 30);
    assert_eq!(train.env["ROWS"], "1000");
    assert_eq!(train.args, ["--lr", "0.1", "--data", "/data"]);
    assert_eq!(
        train.input_artifacts[0].from.step,
        format!("{name}.prepare")
    );
    // Retried after 30s of backoff.
    let retry_at = sim
        .log
        .iter()
        .find(|(_, s)| s.display_name == "train(0:lr:0.1)(1)")
        .unwrap()
        .0;
    assert_eq!(retry_at, 60_000 + 5000 + 30_000);
    // Fan-in of losses: the missing file fell back to valueFrom.default.
    let pick = sim.step_named("pick-best");
    assert!(
        pick.script_source
            .as_deref()
            .unwrap()
            .contains(r#"["0.3","1.0"]"#),
        "{pick:?}"
    );
    assert_eq!(sim.phase_of("deploy"), NodePhase::Succeeded);
    let exit = sim.log.last().unwrap();
    assert_eq!(exit.1.command[2], format!("echo {name} Succeeded"));
}

#[test]
fn ttl_strategy_sets_when_a_finished_run_is_deleted() {
    let run_with = |ttl: &str, fail: bool| {
        let text = ARGO_DIAMOND.replace("ttlStrategy: {secondsAfterCompletion: 300}", ttl);
        let wf = parse_workflow("diamond.yaml", &text).unwrap();
        let mut run = Run::new(&wf, &wf.run_name("x"), &BTreeMap::new(), 0).unwrap();
        assert_eq!(run.delete_at_ms(), None, "not while it runs");
        if fail {
            run.terminate(5_000, "stopped by the user");
            (run.finished_ms().unwrap(), run)
        } else {
            let mut sim = common::Sim::new(run);
            let phase = sim.finish(&mut |_: &StepToLaunch| (1000, StepOutcome::succeeded()));
            assert_eq!(phase, WorkflowPhase::Succeeded);
            (sim.run.finished_ms().unwrap(), sim.run)
        }
    };
    let (done, run) = run_with("ttlStrategy: {secondsAfterCompletion: 300}", false);
    assert_eq!(run.delete_at_ms(), Some(done + 300_000));
    let both = "ttlStrategy: {secondsAfterCompletion: 300, secondsAfterSuccess: 10, secondsAfterFailure: 60}";
    let (done, run) = run_with(both, false);
    assert_eq!(
        run.delete_at_ms(),
        Some(done + 10_000),
        "success's own field wins"
    );
    let (done, run) = run_with(both, true);
    assert_eq!(
        run.delete_at_ms(),
        Some(done + 60_000),
        "failure's own field wins"
    );
    let (_, run) = run_with("ttlStrategy: {secondsAfterSuccess: 10}", true);
    assert_eq!(run.delete_at_ms(), None, "no TTL for a failed run");
    let (_, run) = run_with("", false);
    assert_eq!(run.delete_at_ms(), None, "no TTL at all");
    // A misspelt field is an error naming it, not a run kept forever.
    let text = ARGO_DIAMOND.replace("secondsAfterCompletion", "secondsAfterCompletoin");
    let err = parse_workflow("diamond.yaml", &text)
        .unwrap_err()
        .to_string();
    assert!(err.contains("secondsAfterCompletoin"), "{err}");
}

#[test]
fn kubernetes_only_fields_are_named_as_such_and_valid_argo_fields_are_not_yet() {
    // A `resource` template (Argo creates a Kubernetes object).
    let with_resource = ARGO_DIAMOND.replace(
        "  - name: diamond\n    dag:",
        "  - name: make-cm\n    resource: {action: create, manifest: \"kind: ConfigMap\"}\n  - name: diamond\n    dag:",
    );
    let e = parse_workflow("wf.yaml", &with_resource).unwrap_err();
    assert_eq!(e.path, "spec.templates[0].resource", "{e}");
    assert_eq!(
        e.reason,
        "Kubernetes-only Argo feature \"resource\" at spec.templates[0].resource: gpuctl runs steps as tasks; see README"
    );
    for (from, to, path) in [
        (
            "entrypoint: diamond",
            "entrypoint: diamond\n  volumeClaimTemplates: [{metadata: {name: work}}]",
            "spec.volumeClaimTemplates",
        ),
        (
            "entrypoint: diamond",
            "entrypoint: diamond\n  hostNetwork: true",
            "spec.hostNetwork",
        ),
        (
            "  - name: echo\n",
            "  - name: echo\n    daemon: true\n",
            "spec.templates[1].daemon",
        ),
        (
            "  - name: echo\n",
            "  - name: echo\n    sidecars: [{name: nginx, image: nginx}]\n",
            "spec.templates[1].sidecars",
        ),
        (
            "      image: alpine:3.7\n",
            "      image: alpine:3.7\n      readinessProbe: {httpGet: {path: /, port: 80}}\n",
            "spec.templates[1].container.readinessProbe",
        ),
    ] {
        let e = parse_workflow("wf.yaml", &ARGO_DIAMOND.replace(from, to)).unwrap_err();
        assert_eq!(e.path, path, "{e}");
        assert!(e.reason.starts_with("Kubernetes-only Argo feature"), "{e}");
        assert!(e.reason.contains("see README"), "{e}");
    }
    // Valid Argo fields gpuctl lacks: "not supported yet", never "unknown field".
    for (from, to, path) in [
        (
            "entrypoint: diamond",
            "entrypoint: diamond\n  metrics: {prometheus: []}",
            "spec.metrics",
        ),
        (
            "  - name: echo\n",
            "  - name: echo\n    synchronization: {mutex: {name: m}}\n",
            "spec.templates[1].synchronization",
        ),
        (
            "  - name: echo\n",
            "  - name: echo\n    http: {url: \"https://example.com\"}\n",
            "spec.templates[1].http",
        ),
    ] {
        let e = parse_workflow("wf.yaml", &ARGO_DIAMOND.replace(from, to)).unwrap_err();
        assert_eq!(e.path, path, "{e}");
        assert!(e.reason.contains("not supported yet"), "{e}");
        assert!(!e.reason.contains("unknown field"), "{e}");
    }
}
