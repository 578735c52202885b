//! The CronWorkflow controller on an injected clock: the schedule fires at
//! its times (in its time zone), a repeated decision changes nothing,
//! Forbid skips while a run goes on, Replace stops it and starts anew,
//! late times past the deadline are recorded, not run, history limits
//! prune, `workflowTemplateRef` is copied at each run, and a restart keeps
//! what was decided.

use super::{due, due_in};
use crate::state::testutil::register;
use crate::state::{
    Applied, ApplyError, Binding, Command, Envelope, State, TaskPlacement, TaskReport,
};
use gpuctl_common::api::TaskPhase;
use gpuctl_pipelines::cron::parse_cron_workflow_document;
use gpuctl_pipelines::WorkflowPhase;
use jiff::tz::TimeZone;

/// 2026-12-03T10:00:00Z.
const T0: u64 = 1_796_292_000;

fn cron(extra: &str) -> Command {
    let text = format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: CronWorkflow
metadata: {{name: nightly}}
spec:
  schedules: ["*/10 * * * *"]
{extra}
  workflowSpec:
    entrypoint: main
    templates:
    - name: main
      container: {{image: x, command: [echo, "{{{{workflow.scheduledTime}}}}"]}}
"#
    );
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let c = parse_cron_workflow_document("c.yaml", doc).unwrap_or_else(|e| panic!("{e}"));
    Command::PutCronWorkflow {
        cron: Box::new(c),
        owner: Some("alice".into()),
    }
}

struct H {
    s: State,
    index: u64,
}

impl H {
    fn new(extra: &str) -> H {
        let mut h = H {
            s: State::default(),
            index: 0,
        };
        h.apply_at(T0, register(&gpuctl_testkit::node("n1").build()))
            .unwrap();
        h.apply_at(T0 * 1000, cron(extra)).unwrap();
        h
    }

    fn apply_at(&mut self, now_ms: u64, cmd: Command) -> Result<Applied, ApplyError> {
        self.index += 1;
        self.s.apply(self.index, &Envelope::new(now_ms, cmd))
    }

    /// The controller's round at `now_s` (seconds after T0), applied.
    fn tick(&mut self, after_t0_s: u64) -> Vec<Command> {
        self.tick_in(after_t0_s, &TimeZone::UTC)
    }

    /// The round with the scheduler's local zone `local`.
    fn tick_in(&mut self, after_t0_s: u64, local: &TimeZone) -> Vec<Command> {
        let now_ms = (T0 + after_t0_s) * 1000;
        let cmds = due_in(&self.s, now_ms, local);
        for c in &cmds {
            self.apply_at(now_ms, c.clone()).unwrap();
        }
        cmds
    }

    fn workflows(&self) -> Vec<String> {
        self.s
            .cron_children("nightly")
            .iter()
            .map(|w| w.metadata.name.clone())
            .collect()
    }

    fn phase(&self, wf: &str) -> WorkflowPhase {
        self.s.workflows[wf].run.phase()
    }

    fn message(&self) -> String {
        self.s.cron_workflows["nightly"]
            .status
            .message
            .clone()
            .unwrap_or_default()
    }

    /// Run the one step of workflow `wf` to the end with exit `code`.
    fn finish(&mut self, wf: &str, code: i32) {
        let job = self
            .s
            .jobs
            .values()
            .find(|j| {
                j.metadata
                    .labels
                    .get(crate::state::LABEL_WORKFLOW)
                    .map(String::as_str)
                    == Some(wf)
            })
            .map(|j| j.metadata.name.clone())
            .expect("a step job");
        let attempt = self.s.jobs[&job].status.attempt;
        let now = T0 * 1000;
        self.apply_at(
            now,
            Command::Bind {
                bindings: vec![Binding {
                    job: job.clone(),
                    attempt,
                    tasks: vec![TaskPlacement {
                        index: 0,
                        node: "n1".into(),
                        gpus: vec![],
                    }],
                }],
            },
        )
        .unwrap();
        let phase = if code == 0 {
            TaskPhase::Succeeded
        } else {
            TaskPhase::Failed
        };
        self.apply_at(
            now,
            Command::TaskReport {
                report: TaskReport {
                    node: "n1".into(),
                    job,
                    index: 0,
                    attempt,
                    phase,
                    exit_code: Some(code),
                    message: None,
                    pid: None,
                    outputs: None,
                    port: None,
                    usage: None,
                    gpu_fault: None,
                },
            },
        )
        .unwrap();
    }
}

#[test]
fn the_schedule_fires_at_its_times_once_each_named_as_argo() {
    let mut h = H::new("");
    assert!(h.tick(0).is_empty());
    assert!(h.tick(599).is_empty(), "not before 10:10");
    let cmds = h.tick(600);
    assert_eq!(
        cmds,
        [Command::CronRun {
            name: "nightly".into(),
            scheduled_s: (T0 + 600) as i64
        }]
    );
    let first = format!("nightly-{}", T0 + 600);
    assert_eq!(h.workflows(), std::slice::from_ref(&first));
    let w = &h.s.workflows[&first];
    assert_eq!(w.metadata.owner.as_deref(), Some("alice"));
    assert_eq!(
        w.metadata.labels["workflows.argoproj.io/cron-workflow"],
        "nightly"
    );
    // The step sees the scheduled time.
    let step =
        h.s.jobs
            .values()
            .find(|j| j.metadata.labels.values().any(|v| v == &first))
            .unwrap();
    assert_eq!(step.spec.tasks[0].command, ["echo", "2026-12-03T10:10:00Z"]);
    assert!(h.tick(601).is_empty(), "handled: nothing more until 10:20");
    // A new leader proposing the same time again changes nothing.
    h.apply_at(
        (T0 + 602) * 1000,
        Command::CronRun {
            name: "nightly".into(),
            scheduled_s: (T0 + 600) as i64,
        },
    )
    .unwrap();
    assert_eq!(h.workflows().len(), 1);
    // Allow (the default): a second run while the first goes on.
    h.tick(1200);
    assert_eq!(h.workflows().len(), 2);
    assert!(h
        .message()
        .ends_with(&format!("started workflow nightly-{}", T0 + 1200)));
}

#[test]
fn the_time_zone_decides_when_a_daily_schedule_runs() {
    // 02:00 in Tokyo is 17:00 UTC the day before.
    let mut h = H::new("  timezone: Asia/Tokyo");
    h.apply_at(
        T0 * 1000,
        Command::DeleteCronWorkflow {
            name: "nightly".into(),
        },
    )
    .unwrap();
    let Command::PutCronWorkflow { mut cron, owner } = cron("  timezone: Asia/Tokyo") else {
        unreachable!()
    };
    cron.spec.schedules = vec!["0 2 * * *".into()];
    h.apply_at(T0 * 1000, Command::PutCronWorkflow { cron, owner })
        .unwrap();
    // T0 is 10:00 UTC = 19:00 in Tokyo; next 02:00 Tokyo = 17:00 UTC.
    assert!(h.tick(7 * 3600 - 1).is_empty());
    let cmds = h.tick(7 * 3600);
    assert_eq!(cmds.len(), 1, "{cmds:?}");
}

#[test]
fn forbid_skips_while_one_runs_and_replace_stops_it_and_starts_anew() {
    let mut h = H::new("  concurrencyPolicy: Forbid");
    h.tick(600);
    let first = format!("nightly-{}", T0 + 600);
    h.tick(1200);
    assert_eq!(h.workflows(), std::slice::from_ref(&first), "skipped");
    assert!(
        h.message()
            .contains("still running (concurrencyPolicy Forbid)"),
        "{}",
        h.message()
    );
    h.finish(&first, 0);
    h.tick(1800);
    assert_eq!(h.workflows().len(), 2, "runs again once the first ended");

    let mut h = H::new("  concurrencyPolicy: Replace");
    h.tick(600);
    h.tick(1200);
    let (a, b) = (
        format!("nightly-{}", T0 + 600),
        format!("nightly-{}", T0 + 1200),
    );
    assert_eq!(h.workflows(), [a.clone(), b.clone()]);
    assert!(h.phase(&a).is_terminal(), "the first was stopped");
    assert!(!h.phase(&b).is_terminal());
}

#[test]
fn a_time_noticed_past_the_deadline_is_recorded_not_run_and_suspend_stops_runs() {
    let mut h = H::new("  startingDeadlineSeconds: 120");
    // The control plane was away from 10:09 to 10:35: one decision, for
    // the latest time (10:30), 5 minutes late.
    let cmds = h.tick(35 * 60);
    assert_eq!(cmds.len(), 1);
    assert!(h.workflows().is_empty());
    assert!(
        h.message().contains("past startingDeadlineSeconds (120s)"),
        "{}",
        h.message()
    );
    // On time again at 10:40.
    h.tick(40 * 60 + 1);
    assert_eq!(h.workflows().len(), 1);

    let Command::PutCronWorkflow { mut cron, owner } = cron("") else {
        unreachable!()
    };
    cron.spec.suspend = true;
    h.apply_at(
        (T0 + 41 * 60) * 1000,
        Command::PutCronWorkflow { cron, owner },
    )
    .unwrap();
    assert!(h.tick(50 * 60).is_empty(), "suspended");
    assert_eq!(h.workflows().len(), 1);
}

#[test]
fn history_limits_prune_the_oldest_finished_workflows() {
    let mut h = H::new("  successfulJobsHistoryLimit: 1\n  failedJobsHistoryLimit: 1");
    let mut deleted = Vec::new();
    let mut tick = |h: &mut H, t: u64| {
        for c in h.tick(t) {
            if let Command::DeleteWorkflow { name } = c {
                deleted.push(name);
            }
        }
    };
    for (i, code) in [0, 0, 1, 1].into_iter().enumerate() {
        let t = 600 * (i as u64 + 1);
        tick(&mut h, t);
        h.finish(&format!("nightly-{}", T0 + t), code);
    }
    tick(&mut h, 2401);
    // The older success went when the second one ended, the older
    // failure when the second failure did; running ones are never pruned.
    assert_eq!(
        deleted,
        [
            format!("nightly-{}", T0 + 600),
            format!("nightly-{}", T0 + 1800)
        ]
    );
    assert_eq!(
        h.workflows(),
        [
            format!("nightly-{}", T0 + 1200),
            format!("nightly-{}", T0 + 2400)
        ]
    );
    assert_eq!(
        h.phase(&format!("nightly-{}", T0 + 1200)),
        WorkflowPhase::Succeeded
    );
    assert!(h.tick(2402).is_empty());
}

#[test]
fn a_workflow_template_ref_is_copied_at_each_run_and_the_decision_survives_a_restart() {
    let mut h = H::new("");
    let Command::PutCronWorkflow { mut cron, owner } = cron("") else {
        unreachable!()
    };
    cron.spec.workflow_spec = gpuctl_pipelines::spec::WorkflowSpec {
        workflow_template_ref: Some(gpuctl_pipelines::spec::WorkflowTemplateRef {
            name: "t".into(),
            cluster_scope: false,
        }),
        ..Default::default()
    };
    h.apply_at(T0 * 1000, Command::PutCronWorkflow { cron, owner })
        .unwrap();
    // No template yet: the time is recorded with why.
    h.tick(600);
    assert!(h.workflows().is_empty());
    assert!(
        h.message().contains("no WorkflowTemplate named \"t\""),
        "{}",
        h.message()
    );
    let t = "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata: {name: t}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    container: {image: x, command: [echo, one]}\n";
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(t).unwrap();
    let tmpl = gpuctl_pipelines::parse_workflow_template_document("t.yaml", doc).unwrap();
    let put = |tmpl: &gpuctl_pipelines::Workflow| Command::PutWorkflowTemplate {
        cluster: false,
        template: Box::new(tmpl.clone()),
        owner: None,
    };
    h.apply_at(T0 * 1000, put(&tmpl)).unwrap();
    h.tick(1200);
    let wf = format!("nightly-{}", T0 + 1200);
    assert_eq!(h.workflows(), std::slice::from_ref(&wf));
    // Changing the template later does not change the running workflow.
    let mut changed = tmpl.clone();
    changed.spec.templates[0]
        .container
        .as_mut()
        .unwrap()
        .command = vec!["echo".into(), "two".into()];
    h.apply_at(T0 * 1000, put(&changed)).unwrap();
    let spec = String::from_utf8(h.s.workflows[&wf].spec_json().unwrap()).unwrap();
    assert!(
        spec.contains("\"one\"") && !spec.contains("\"two\""),
        "{spec}"
    );

    // A restart from the stored objects keeps the cron, its last time and
    // the templates: nothing is due again for 10:20.
    let restored = State::from_stored(&h.s.stored_objects()).unwrap();
    assert_eq!(restored.cron_workflows, h.s.cron_workflows);
    assert_eq!(restored.workflow_templates, h.s.workflow_templates);
    assert!(due(&restored, (T0 + 1201) * 1000).is_empty());
}

/// The `nightly` CronWorkflow again with `schedules` and `extra`.
fn replace(h: &mut H, schedules: &[&str], extra: &str) {
    h.apply_at(
        T0 * 1000,
        Command::DeleteCronWorkflow {
            name: "nightly".into(),
        },
    )
    .unwrap();
    let Command::PutCronWorkflow { mut cron, owner } = cron(extra) else {
        unreachable!()
    };
    cron.spec.schedules = schedules.iter().map(|s| s.to_string()).collect();
    h.apply_at(T0 * 1000, Command::PutCronWorkflow { cron, owner })
        .unwrap();
}

#[test]
fn without_timezone_the_schedule_runs_in_the_scheduler_s_local_zone() {
    // Argo: "timezone: Machine timezone". 02:00 in the leader's zone.
    let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
    let mut h = H::new("");
    replace(&mut h, &["0 2 * * *"], "");
    // T0 is 10:00 UTC = 19:00 in Tokyo: 02:00 Tokyo is 17:00 UTC.
    assert!(h.tick_in(7 * 3600 - 1, &tokyo).is_empty());
    assert_eq!(h.tick_in(7 * 3600, &tokyo).len(), 1);
    assert_eq!(h.workflows(), [format!("nightly-{}", T0 + 7 * 3600)]);
    // In UTC the same schedule waits for 02:00 UTC (16 hours after T0).
    let mut h = H::new("");
    replace(&mut h, &["0 2 * * *"], "");
    assert!(h.tick_in(7 * 3600, &TimeZone::UTC).is_empty());
    assert_eq!(h.tick_in(16 * 3600, &TimeZone::UTC).len(), 1);
    // An explicit `timezone` wins over the local zone.
    let mut h = H::new("");
    replace(&mut h, &["0 2 * * *"], "  timezone: UTC");
    assert!(h.tick_in(7 * 3600, &tokyo).is_empty());
    // The process's zone is what `due` uses: `TZ`, /etc/localtime, or
    // `--cron-timezone`; here the system's name is only checked to exist.
    let _ = crate::cron_zone::local();
}

#[test]
fn deleting_a_cron_workflow_stops_and_deletes_the_workflows_it_made() {
    // Argo's workflows carry an ownerReference to their CronWorkflow, so
    // Kubernetes deletes them (and their pods) with it.
    let mut h = H::new("");
    h.tick(600);
    h.tick(1200);
    let (done, running) = (
        format!("nightly-{}", T0 + 600),
        format!("nightly-{}", T0 + 1200),
    );
    h.finish(&done, 0);
    assert!(!h.phase(&running).is_terminal());
    let steps = |h: &H, wf: &str| {
        h.s.jobs
            .values()
            .filter(|j| {
                j.metadata
                    .labels
                    .get(crate::state::LABEL_WORKFLOW)
                    .map(String::as_str)
                    == Some(wf)
            })
            .count()
    };
    assert_eq!(steps(&h, &running), 1);
    // A workflow of the user's, not made by it, stays.
    let Command::PutCronWorkflow { cron: other, .. } = cron("") else {
        unreachable!()
    };
    let mut mine = other.workflow_at(1);
    mine.metadata.name = Some("mine".into());
    mine.metadata.labels.clear();
    h.apply_at(
        T0 * 1000,
        Command::SubmitWorkflow {
            name: "mine".into(),
            workflow: Box::new(mine),
            arguments: Default::default(),
            owner: None,
        },
    )
    .unwrap();
    let Applied::Object(view) = h
        .apply_at(
            (T0 + 1300) * 1000,
            Command::DeleteCronWorkflow {
                name: "nightly".into(),
            },
        )
        .unwrap()
    else {
        panic!("a view")
    };
    assert_eq!(
        view["status"]["deletedWorkflows"],
        serde_json::json!([done, running])
    );
    assert!(h.s.cron_workflows.is_empty());
    assert!(h.workflows().is_empty());
    assert!(!h.s.workflows.contains_key(&running));
    assert_eq!(steps(&h, &running), 0, "its step jobs went too");
    assert_eq!(steps(&h, &done), 0);
    assert!(h.s.workflows.contains_key("mine"));
    // Gone from what a restart reads back too.
    let restored = State::from_stored(&h.s.stored_objects()).unwrap();
    assert!(!restored.workflows.contains_key(&running));
    assert!(restored.cron_workflows.is_empty());
}

#[test]
fn every_schedules_run_that_long_after_the_last_time() {
    // robfig's `@every`, which Argo accepts: from the creation, then from
    // each scheduled time; a long outage collapses into the latest one.
    let mut h = H::new("");
    replace(&mut h, &["@every 1m30s"], "");
    assert!(h.tick(89).is_empty());
    assert_eq!(
        h.tick(90),
        [Command::CronRun {
            name: "nightly".into(),
            scheduled_s: (T0 + 90) as i64
        }]
    );
    assert!(h.tick(179).is_empty());
    assert_eq!(h.tick(180).len(), 1);
    // Away until 10:10:00: one decision, for T0+540 (the last of 180+90k).
    let cmds = h.tick(600);
    assert_eq!(
        cmds,
        [Command::CronRun {
            name: "nightly".into(),
            scheduled_s: (T0 + 540) as i64
        }]
    );
    let next = h.s.cron_view("nightly")["status"]["nextScheduledTime"].clone();
    assert_eq!(
        next,
        serde_json::json!(gpuctl_pipelines::cron::rfc3339((T0 + 630) as i64))
    );
}

#[test]
fn a_stop_strategy_stops_scheduling_once_its_expression_holds() {
    // Argo 3.6: `cronworkflow.failed` counts every failed run, also those
    // the history limit has deleted since; once it holds the CronWorkflow
    // is Stopped, labelled completed, and schedules nothing more.
    let mut h = H::new("  stopStrategy: {expression: \"cronworkflow.failed >= 2\"}");
    h.tick(600);
    h.finish(&format!("nightly-{}", T0 + 600), 1);
    let v = h.s.cron_view("nightly");
    assert_eq!(v["status"]["failed"], 1);
    assert_eq!(v["status"]["phase"], "Active");
    h.tick(1200);
    h.finish(&format!("nightly-{}", T0 + 1200), 1);
    // The controller prunes the older failure (failedJobsHistoryLimit 1).
    h.tick(1201);
    assert_eq!(h.workflows(), [format!("nightly-{}", T0 + 1200)]);
    let v = h.s.cron_view("nightly");
    assert_eq!(v["status"]["failed"], 2, "{v:#}");
    assert_eq!(v["status"]["succeeded"], 0);
    assert_eq!(v["status"]["phase"], "Stopped");
    assert_eq!(
        v["metadata"]["labels"]["cronworkflows.argoproj.io/completed"],
        "true"
    );
    assert!(h.message().contains("stopStrategy"), "{}", h.message());
    assert!(h.tick(1800).is_empty(), "nothing more is scheduled");
    assert_eq!(h.workflows().len(), 1);
    // A replayed decision for a later time does not run either.
    h.apply_at(
        (T0 + 1800) * 1000,
        Command::CronRun {
            name: "nightly".into(),
            scheduled_s: (T0 + 1800) as i64,
        },
    )
    .unwrap();
    assert_eq!(h.workflows().len(), 1);
    // The counts and the stop survive a restart.
    let restored = State::from_stored(&h.s.stored_objects()).unwrap();
    assert_eq!(restored.cron_workflows, h.s.cron_workflows);

    // Successes count too.
    let mut h = H::new("  stopStrategy: {expression: \"cronworkflow.succeeded >= 1\"}");
    h.tick(600);
    h.finish(&format!("nightly-{}", T0 + 600), 0);
    assert_eq!(h.s.cron_view("nightly")["status"]["phase"], "Stopped");
    assert!(h.tick(1200).is_empty());
}

#[test]
fn argo_s_stop_condition_cron_workflows_stop_as_its_tests_expect() {
    // Argo's e2e TestStoppingConditionWithSucceeded/WithFailed: after the
    // first run ends the CronWorkflow is Stopped, labelled completed, with
    // the counts Argo asserts.
    for (file, code, succeeded, failed) in [
        ("stop-condition-succeeded.yaml", 0, 1, 0),
        ("stop-condition-failed.yaml", 1, 0, 1),
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../pipelines/tests/argo-examples/cron")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let c = parse_cron_workflow_document(file, doc).unwrap_or_else(|e| panic!("{e}"));
        let name = c.name().to_string();
        let mut h = H {
            s: State::default(),
            index: 0,
        };
        h.apply_at(T0, register(&gpuctl_testkit::node("n1").build()))
            .unwrap();
        h.apply_at(
            T0 * 1000,
            Command::PutCronWorkflow {
                cron: Box::new(c),
                owner: None,
            },
        )
        .unwrap();
        assert_eq!(h.tick(60).len(), 1, "{file}");
        h.finish(&format!("{name}-{}", T0 + 60), code);
        let v = h.s.cron_view(&name);
        assert_eq!(v["status"]["phase"], "Stopped", "{file}: {v:#}");
        assert_eq!(v["status"]["succeeded"], succeeded, "{file}");
        assert_eq!(v["status"]["failed"], failed, "{file}");
        assert_eq!(
            v["metadata"]["labels"]["cronworkflows.argoproj.io/completed"],
            "true"
        );
        assert!(h.tick(120).is_empty(), "{file}: stopped");
    }
}
