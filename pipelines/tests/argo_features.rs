//! More of Argo's language: `withSequence`, workflow and template
//! `parallelism`, template `timeout`, a `retryStrategy` without `limit`, and
//! `backoff.cap`.

mod common;

use common::{all_ok, start, Sim};
use gpuctl_pipelines::{parse_workflow, StepOutcome, StepToLaunch, WorkflowPhase};

fn wf(spec_extra: &str, main: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {{generateName: feat-}}
spec:
  entrypoint: main
{spec_extra}
  templates:
  - name: main
{main}
  - name: print
    inputs: {{parameters: [{{name: message, default: hi}}]}}
    container: {{command: [echo, "{{{{inputs.parameters.message}}}}"]}}
{extra}
"#
    )
}

#[test]
fn with_sequence_counts_and_ranges_with_formats() {
    let y = wf(
        "",
        r#"
    steps:
    - - {name: c, template: print, withSequence: {count: "3"}, arguments: {parameters: [{name: message, value: "{{item}}"}]}}
      - {name: r, template: print, withSequence: {start: "5", end: "3", format: "v%02d"}, arguments: {parameters: [{name: message, value: "{{item}}"}]}}"#,
        "",
    );
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    assert_eq!(
        sim.launched(),
        ["c(0:0)", "c(1:1)", "c(2:2)", "r(0:v05)", "r(1:v04)", "r(2:v03)"]
    );
    assert_eq!(sim.step_named("r(2:v03)").command, ["echo", "v03"]);

    let bad = |seq: &str, path: &str, why: &str| {
        let y = wf(
            "",
            &format!("    steps:\n    - - {{name: c, template: print, withSequence: {seq}}}"),
            "",
        );
        let e = parse_workflow("wf.yaml", &y).unwrap_err();
        assert_eq!(e.path, path, "{e}");
        assert!(e.reason.contains(why), "{e}");
    };
    bad(
        "{count: 2, end: 3}",
        "spec.templates[0].steps[0][0].withSequence",
        "either",
    );
    bad(
        "{count: 2, format: \"%s\"}",
        "spec.templates[0].steps[0][0].withSequence.format",
        "unsupported format",
    );
}

#[test]
fn parallelism_limits_the_run_and_a_template_invocation() {
    // The workflow: at most 2 steps at once.
    let y = wf(
        "  parallelism: 2",
        r#"
    steps:
    - - {name: p, template: print, withItems: [1, 2, 3, 4, 5]}"#,
        "",
    );
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    assert_eq!(sim.launched_at(0), ["p(0:1)", "p(1:2)"]);
    assert_eq!(sim.launched_at(1000), ["p(2:3)", "p(3:4)"]);
    assert_eq!(sim.launched_at(2000), ["p(4:5)"]);

    // A template: each invocation of `inner` runs one step at a time; the
    // two invocations run side by side.
    let y = wf(
        "",
        r#"
    dag:
      tasks:
      - {name: x, template: inner}
      - {name: y, template: inner}"#,
        r#"
  - name: inner
    parallelism: 1
    dag:
      tasks:
      - {name: a, template: print}
      - {name: b, template: print}"#,
    );
    let mut sim = Sim::new(start(&y));
    assert_eq!(sim.finish(&mut all_ok), WorkflowPhase::Succeeded);
    assert_eq!(sim.launched_at(0), ["a", "a"]);
    assert_eq!(sim.launched_at(1000), ["b", "b"]);

    let y = wf(
        "  parallelism: 0",
        "    steps:\n    - - {name: p, template: print}",
        "",
    );
    let e = parse_workflow("wf.yaml", &y).unwrap_err();
    assert_eq!(e.path, "spec.parallelism", "{e}");
}

#[test]
fn a_template_timeout_stops_its_step() {
    let y = wf(
        "",
        "    steps:\n    - - {name: slow, template: slow}",
        r#"
  - name: slow
    timeout: 2s
    container: {command: [sleep, "60"]}"#,
    );
    let mut sim = Sim::new(start(&y));
    let phase = sim.finish(&mut |_: &StepToLaunch| (60_000, StepOutcome::succeeded()));
    assert_eq!(phase, WorkflowPhase::Failed);
    assert_eq!(sim.step_named("slow").active_deadline_seconds, Some(2));
    assert_eq!(sim.cancelled, [(2000, "wf[0].slow".to_string())]);

    let y = wf(
        "",
        "    timeout: 1m\n    steps:\n    - - {name: p, template: print}",
        "",
    );
    let e = parse_workflow("wf.yaml", &y).unwrap_err();
    assert_eq!(e.path, "spec.templates[0].timeout", "{e}");
}

#[test]
fn retry_without_limit_goes_on_until_success_and_cap_bounds_the_wait() {
    let y = wf(
        "",
        "    steps:\n    - - {name: flaky, template: flaky}",
        r#"
  - name: flaky
    retryStrategy:
      backoff: {duration: "1s", factor: 2, cap: "3s"}
    container: {command: [sh, -c, "exit 1"]}"#,
    );
    let mut sim = Sim::new(start(&y));
    let mut n = 0;
    let phase = sim.finish(&mut |_: &StepToLaunch| {
        n += 1;
        if n < 6 {
            (1000, StepOutcome::failed(1))
        } else {
            (1000, StepOutcome::succeeded())
        }
    });
    assert_eq!(phase, WorkflowPhase::Succeeded);
    let starts: Vec<u64> = sim.log.iter().map(|(t, _)| *t).collect();
    // Waits of 1, 2, then 3 (4 capped), 3, 3 seconds after each 1 s attempt.
    assert_eq!(starts, [0, 2000, 5000, 9000, 13000, 17000]);
}
