//! `suspend` templates (wait for a resume, or for their duration) and
//! suspending and resuming a whole run, as `argo suspend`/`argo resume`.

mod common;
use common::{start, wf};

use std::collections::BTreeMap;

use gpuctl_pipelines::{
    parse_workflow, NoCache, NodePhase, NodeType, Run, StepOutcome, WorkflowPhase,
};

const APPROVE: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: wf}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: build, template: hello}
    - - {name: approve, template: approve}
    - - {name: release, template: hello}
  - name: approve
    suspend: {}
  - name: hello
    container: {image: busybox, command: [echo, hi]}
"#;

fn ready(run: &mut Run, now: u64) -> Vec<String> {
    run.ready_steps(now, &mut NoCache)
        .into_iter()
        .map(|s| s.display_name)
        .collect()
}

fn done(run: &mut Run, id: &str, now: u64) {
    run.on_step_finished(id, StepOutcome::succeeded(), now, &mut NoCache)
        .unwrap();
}

fn node(run: &Run, display: &str) -> gpuctl_pipelines::NodeView {
    run.status().root.unwrap().find(display).unwrap().clone()
}

#[test]
fn a_suspend_template_waits_until_the_run_is_resumed() {
    let mut run = start(APPROVE);
    assert_eq!(ready(&mut run, 0), ["build"]);
    done(&mut run, "wf[0].build", 1000);
    assert!(ready(&mut run, 1000).is_empty());
    let approve = node(&run, "approve");
    assert_eq!(approve.node_type, NodeType::Suspend);
    assert_eq!(approve.phase, NodePhase::Running);
    assert_eq!(run.suspended_nodes(), ["wf[1].approve"]);
    // No timer: it waits for as long as it takes.
    assert_eq!(run.next_wakeup_ms(1000), None);
    let tick = run.on_tick(3_600_000);
    assert!(tick.cancel.is_empty());
    assert!(ready(&mut run, 3_600_000).is_empty());
    assert_eq!(run.phase(), WorkflowPhase::Running);

    run.resume(3_600_500).unwrap();
    assert_eq!(node(&run, "approve").phase, NodePhase::Succeeded);
    assert_eq!(ready(&mut run, 3_600_500), ["release"]);
    done(&mut run, "wf[2].release", 3_601_000);
    assert_eq!(run.phase(), WorkflowPhase::Succeeded);
}

#[test]
fn a_suspend_with_a_duration_resumes_itself_after_it() {
    // Argo's duration syntax: seconds as a bare number, or with units,
    // or from a parameter.
    for (duration, ms) in [
        ("\"20\"", 20_000),
        ("20", 20_000),
        ("\"2m\"", 120_000),
        ("\"1h\"", 3_600_000),
        ("\"{{inputs.parameters.wait}}\"", 90_000),
    ] {
        let yaml = APPROVE
            .replace(
                "    suspend: {}",
                &format!(
                    "    inputs: {{parameters: [{{name: wait, value: 90s}}]}}\n    suspend: {{duration: {duration}}}"
                ),
            );
        let mut run = start(&yaml);
        assert_eq!(ready(&mut run, 0), ["build"]);
        done(&mut run, "wf[0].build", 1000);
        assert_eq!(run.next_wakeup_ms(1000), Some(1000 + ms), "{duration}");
        run.on_tick(1000 + ms - 1);
        assert_eq!(node(&run, "approve").phase, NodePhase::Running);
        assert!(ready(&mut run, 1000 + ms - 1).is_empty());
        run.on_tick(1000 + ms);
        assert_eq!(node(&run, "approve").phase, NodePhase::Succeeded);
        assert_eq!(ready(&mut run, 1000 + ms), ["release"], "{duration}");
    }
}

#[test]
fn resuming_before_the_duration_ends_the_wait_early() {
    let yaml = APPROVE.replace("suspend: {}", "suspend: {duration: 1h}");
    let mut run = start(&yaml);
    ready(&mut run, 0);
    done(&mut run, "wf[0].build", 1000);
    run.resume(2000).unwrap();
    assert_eq!(ready(&mut run, 2000), ["release"]);
    assert_eq!(run.next_wakeup_ms(2000), None);
}

const TWO_STEPS: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: wf}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: a, template: hello}
      - {name: b, template: hello}
    - - {name: c, template: hello}
  - name: hello
    container: {image: busybox, command: [echo, hi]}
"#;

#[test]
fn a_suspended_run_starts_no_step_until_resumed_and_running_ones_finish() {
    let mut run = start(TWO_STEPS);
    assert_eq!(ready(&mut run, 0), ["a", "b"]);
    run.suspend().unwrap();
    assert!(run.is_suspended());
    assert!(run.status().suspended);
    // Suspending twice changes nothing.
    run.suspend().unwrap();
    done(&mut run, "wf[0].a", 1000);
    done(&mut run, "wf[0].b", 1000);
    assert_eq!(node(&run, "b").phase, NodePhase::Succeeded);
    assert!(ready(&mut run, 5000).is_empty());
    assert_eq!(run.phase(), WorkflowPhase::Running);

    // The run survives being stored and restored suspended.
    let text = serde_json::to_string(&run).unwrap();
    let mut run: Run = serde_json::from_str(&text).unwrap();
    assert!(run.is_suspended());
    assert!(ready(&mut run, 6000).is_empty());

    run.resume(7000).unwrap();
    assert!(!run.is_suspended());
    assert_eq!(ready(&mut run, 7000), ["c"]);
    done(&mut run, "wf[1].c", 8000);
    assert_eq!(run.phase(), WorkflowPhase::Succeeded);
    assert!(run.suspend().unwrap_err().contains("already Succeeded"));
    assert!(run.resume(9000).unwrap_err().contains("already Succeeded"));
}

#[test]
fn spec_suspend_true_starts_the_run_suspended() {
    let yaml = TWO_STEPS.replace("  entrypoint: main", "  entrypoint: main\n  suspend: true");
    let mut run = Run::new(&wf(&yaml), "wf", &BTreeMap::new(), 0).unwrap();
    assert!(run.is_suspended());
    assert!(ready(&mut run, 0).is_empty());
    run.resume(10).unwrap();
    assert_eq!(ready(&mut run, 10), ["a", "b"]);
}

#[test]
fn a_suspend_duration_argo_would_not_accept_is_refused_at_its_field() {
    let yaml = APPROVE.replace("suspend: {}", "suspend: {duration: 20x}");
    let e = parse_workflow("wf.yaml", &yaml).unwrap_err().to_string();
    assert!(
        e.contains("spec.templates[1].suspend.duration") && e.contains("invalid duration \"20x\""),
        "{e}"
    );
    let yaml = APPROVE.replace("suspend: {}", "suspend: {duration: 20, forever: true}");
    let e = parse_workflow("wf.yaml", &yaml).unwrap_err().to_string();
    assert!(e.contains("forever"), "{e}");
}

#[test]
fn values_supplied_at_resume_are_refused_as_not_supported_yet() {
    let yaml = APPROVE.replace(
        "    suspend: {}",
        "    suspend: {}\n    outputs:\n      parameters:\n      - name: approve\n        valueFrom: {supplied: {}}",
    );
    let e = parse_workflow("wf.yaml", &yaml).unwrap_err().to_string();
    assert!(e.contains("not supported yet"), "{e}");
    assert!(!e.contains("unknown field"), "{e}");
}

#[test]
fn a_bad_duration_from_a_parameter_errors_the_suspend_node() {
    let yaml = APPROVE.replace(
        "    suspend: {}",
        "    inputs: {parameters: [{name: wait, value: soon}]}\n    suspend: {duration: \"{{inputs.parameters.wait}}\"}",
    );
    let mut run = start(&yaml);
    ready(&mut run, 0);
    done(&mut run, "wf[0].build", 1000);
    let n = node(&run, "approve");
    assert_eq!(n.phase, NodePhase::Error);
    assert!(n.message.unwrap().contains("suspend.duration"));
    assert_eq!(run.phase(), WorkflowPhase::Error);
}
