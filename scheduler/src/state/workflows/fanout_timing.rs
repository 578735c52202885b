//! A profiling aid, not a check: the state machine's cost of a 1,000-way
//! fan-out (`cargo test -p gpuctl-scheduler --lib time_fan_out -- --ignored
//! --nocapture`; `FAN_OUT=10000` for another width).

use super::super::testutil::register;
use super::super::{Binding, Command, Envelope, TaskPlacement, TaskReport};
use super::*;
use std::time::Instant;

#[test]
#[ignore]
fn time_fan_out() {
    let n: usize = std::env::var("FAN_OUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let y = format!("apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {{name: fan}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n      - name: f\n        template: step\n        withItems: [{}]\n  - name: step\n    container:\n      image: busybox\n      command: [\"true\"]\n", items.join(", "));
    let wf = gpuctl_pipelines::parse_workflow("f", &y).unwrap();
    let mut s = State::default();
    let mut index = 0;
    let mut apply = |s: &mut State, cmd: Command| {
        index += 1;
        s.apply(index, &Envelope::new(index, cmd)).unwrap()
    };
    apply(&mut s, register(&gpuctl_testkit::node("n1").build()));
    let t = Instant::now();
    apply(
        &mut s,
        Command::SubmitWorkflow {
            name: "fan".into(),
            workflow: Box::new(wf),
            arguments: Default::default(),
            owner: None,
        },
    );
    eprintln!("submit: {:?}, jobs {}", t.elapsed(), s.jobs.len());
    let names: Vec<String> = s.jobs.keys().cloned().collect();
    let (mut t_bind, mut t_done, mut t_ser) = (
        std::time::Duration::ZERO,
        std::time::Duration::ZERO,
        std::time::Duration::ZERO,
    );
    for j in names {
        let t = Instant::now();
        apply(
            &mut s,
            Command::Bind {
                bindings: vec![Binding {
                    job: j.clone(),
                    attempt: 1,
                    tasks: vec![TaskPlacement {
                        index: 0,
                        node: "n1".into(),
                        gpus: vec![],
                    }],
                }],
            },
        );
        t_bind += t.elapsed();
        let t = Instant::now();
        apply(
            &mut s,
            Command::TaskReport {
                report: TaskReport {
                    node: "n1".into(),
                    job: j,
                    index: 0,
                    attempt: 1,
                    phase: TaskPhase::Succeeded,
                    exit_code: Some(0),
                    message: None,
                    pid: None,
                    outputs: None,
                    port: None,
                    usage: None,
                    gpu_fault: None,
                },
            },
        );
        t_done += t.elapsed();
        let t = Instant::now();
        for k in s.take_dirty() {
            let _ = s.object_json(&k);
        }
        t_ser += t.elapsed();
    }
    eprintln!(
        "bind {t_bind:?} report {t_done:?} serialize {t_ser:?} phase {:?}",
        s.workflows["fan"].run.phase()
    );
}
