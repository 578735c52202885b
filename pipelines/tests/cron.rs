//! CronWorkflow documents and schedules: Argo's example is accepted, bad
//! schedules and time zones are refused naming the field, and the times a
//! schedule runs at follow cron and the time zone's wall clock (Argo's
//! documented daylight-saving table for America/Los_Angeles).

use std::path::Path;

use gpuctl_pipelines::cron::ConcurrencyPolicy;
use gpuctl_pipelines::cron::{
    parse_cron_workflow_document, rfc3339, CronSchedule, ANNOTATION_SCHEDULED_TIME,
    LABEL_CRON_WORKFLOW,
};

fn doc(text: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(text).unwrap()
}

fn example() -> String {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/argo-examples/cron/cron-workflow.yaml");
    std::fs::read_to_string(p).unwrap()
}

/// Unix seconds of an RFC 3339 time.
fn at(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().unwrap().as_second()
}

fn sched(exprs: &[&str], tz: &str) -> CronSchedule {
    let e: Vec<String> = exprs.iter().map(|s| s.to_string()).collect();
    CronSchedule::new(&e, tz).unwrap()
}

/// The next `n` times after `from`, as RFC 3339 in UTC.
fn next_n(s: &CronSchedule, from: &str, n: usize) -> Vec<String> {
    let mut t = at(from);
    let mut v = Vec::new();
    for _ in 0..n {
        t = s.next_after(t).unwrap();
        v.push(rfc3339(t));
    }
    v
}

#[test]
fn argos_example_is_accepted_and_makes_named_labelled_workflows() {
    let c = parse_cron_workflow_document("cron-workflow.yaml", doc(&example())).unwrap();
    assert_eq!(c.concurrency_policy(), ConcurrencyPolicy::Replace);
    assert_eq!(c.history_limits(), (4, 4));
    let wf = c.workflow_at(1_700_000_040);
    assert_eq!(wf.metadata.name.as_deref(), Some("hello-world-1700000040"));
    assert_eq!(wf.metadata.labels[LABEL_CRON_WORKFLOW], "hello-world");
    assert_eq!(
        wf.metadata.annotations[ANNOTATION_SCHEDULED_TIME],
        "2023-11-14T22:14:00Z"
    );
    gpuctl_pipelines::validate_all(&wf)
        .is_empty()
        .then_some(())
        .expect("the workflow it makes is valid");
}

#[test]
fn bad_schedules_time_zones_and_specs_are_refused_naming_the_field() {
    let cases = [
        (
            r#"    - "* * * * *""#,
            r#"    - "61 * * * *""#,
            "spec.schedules[0]: minute field: 61 is out of range 0-59",
        ),
        (
            r#"    - "* * * * *""#,
            r#"    - "* * *""#,
            "spec.schedules[0]: \"* * *\" has 3 fields; expected 5",
        ),
        (
            r#"    - "* * * * *""#,
            r#"    - "0 0 * JANUARY *""#,
            "spec.schedules[0]: month field: \"JANUARY\" is not a number",
        ),
        (
            "\"America/Los_Angeles\"",
            "\"Mars/Olympus\"",
            "spec.timezone: unknown time zone \"Mars/Olympus\"",
        ),
        (
            "concurrencyPolicy: \"Replace\"",
            "concurrencyPolicy: \"Sometimes\"",
            "spec.concurrencyPolicy: unknown variant `Sometimes`",
        ),
        (
            "failedJobsHistoryLimit: 4",
            "failedJobsHistoryLimit: -1",
            "spec.failedJobsHistoryLimit: must not be negative",
        ),
        (
            "entrypoint: hello-world-with-time",
            "entrypoint: nope",
            "spec.workflowSpec.entrypoint: no template named \"nope\"",
        ),
        (
            "  schedules:\n    - \"* * * * *\"\n",
            "",
            "spec.schedules: missing",
        ),
    ];
    for (from, to, want) in cases {
        let text = example().replacen(from, to, 1);
        assert_ne!(text, example(), "{from}");
        let e = parse_cron_workflow_document("c.yaml", doc(&text)).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("c.yaml: {want}")),
            "want {want}\n got {e}"
        );
    }
}

#[test]
fn fields_ranges_steps_lists_names_and_macros() {
    let s = sched(&["*/15 9-10 * * MON-FRI"], "UTC");
    // 2026-12-04 is a Friday.
    assert_eq!(
        next_n(&s, "2026-12-04T10:40:00Z", 3),
        [
            "2026-12-04T10:45:00Z",
            "2026-12-07T09:00:00Z",
            "2026-12-07T09:15:00Z"
        ]
    );
    let s = sched(&["@daily", "30 12 1,15 * *"], "");
    assert_eq!(
        next_n(&s, "2026-12-14T23:00:00Z", 3),
        [
            "2026-12-15T00:00:00Z",
            "2026-12-15T12:30:00Z",
            "2026-12-16T00:00:00Z"
        ]
    );
    // Both day fields restricted: either matches (the 13th, or a Friday).
    let s = sched(&["0 0 13 * 5"], "UTC");
    assert_eq!(
        next_n(&s, "2026-12-03T00:00:00Z", 3),
        [
            "2026-12-04T00:00:00Z",
            "2026-12-11T00:00:00Z",
            "2026-12-13T00:00:00Z"
        ]
    );
    // A date that comes rarely is still found.
    let s = sched(&["0 0 29 2 *"], "UTC");
    assert_eq!(
        next_n(&s, "2026-03-01T00:00:00Z", 1),
        ["2028-02-29T00:00:00Z"]
    );
}

#[test]
fn the_time_zone_decides_the_wall_clock_and_daylight_saving_as_argo_documents() {
    // 02:00 in Los Angeles is 10:00 UTC in winter.
    let s = sched(&["0 2 * * *"], "America/Los_Angeles");
    assert_eq!(
        next_n(&s, "2026-12-03T00:00:00Z", 1),
        ["2026-12-03T10:00:00Z"]
    );
    // Clocks move forward at 02:00 on 2020-03-08: 02:00 does not exist that day.
    assert_eq!(
        next_n(&s, "2020-03-07T12:00:00Z", 2),
        ["2020-03-09T09:00:00Z", "2020-03-10T09:00:00Z"]
    );
    let s = sched(&["59 1 * * *"], "America/Los_Angeles");
    assert_eq!(
        next_n(&s, "2020-03-07T12:00:00Z", 2),
        ["2020-03-08T09:59:00Z", "2020-03-09T08:59:00Z"]
    );
    // Clocks move back at 02:00 on 2020-11-01: 01:59 happens twice.
    assert_eq!(
        next_n(&s, "2020-10-31T12:00:00Z", 3),
        [
            "2020-11-01T08:59:00Z",
            "2020-11-01T09:59:00Z",
            "2020-11-02T09:59:00Z"
        ]
    );
}

#[test]
fn latest_between_finds_the_last_missed_time_only() {
    let s = sched(&["* * * * *"], "UTC");
    let t0 = at("2026-12-03T10:00:00Z");
    assert_eq!(s.latest_between(t0, t0 + 59), None);
    assert_eq!(s.latest_between(t0, t0 + 60), Some(t0 + 60));
    // Days of missed minutes: the last one.
    assert_eq!(
        s.latest_between(t0, t0 + 3 * 86_400 + 30),
        Some(t0 + 3 * 86_400)
    );
    let s = sched(&["0 0 1 1 *"], "UTC");
    assert_eq!(
        s.latest_between(t0, at("2028-06-01T00:00:00Z"))
            .map(rfc3339),
        Some("2028-01-01T00:00:00Z".to_string())
    );
}

#[test]
fn every_schedules_stop_strategies_and_their_mistakes() {
    // `@every` as robfig parses it (Argo's schema: whole numbers, Go units).
    let s = sched(&["@every 1h30m"], "UTC");
    assert_eq!(
        s.next_after(at("2026-01-01T00:00:00Z")),
        Some(at("2026-01-01T01:30:00Z"))
    );
    assert_eq!(
        s.latest_between(at("2026-01-01T00:00:00Z"), at("2026-01-01T04:00:00Z")),
        Some(at("2026-01-01T03:00:00Z"))
    );
    let s = sched(&["@every 500ms"], "UTC");
    assert_eq!(s.next_after(10), Some(11), "under a second counts as one");
    // Mixed with a five-field schedule: whichever comes first.
    let s = sched(&["@every 2h", "30 0 * * *"], "UTC");
    assert_eq!(
        s.next_after(at("2026-01-01T00:00:00Z")),
        Some(at("2026-01-01T00:30:00Z"))
    );
    let refused = |from: &str, to: &str| {
        let text = example().replacen(from, to, 1);
        assert_ne!(text, example(), "{from}");
        parse_cron_workflow_document("c.yaml", doc(&text))
            .unwrap_err()
            .to_string()
    };
    let e = refused(r#"    - "* * * * *""#, r#"    - "@every 1.5h""#);
    assert!(
        e.starts_with("c.yaml: spec.schedules[0]: \"@every 1.5h\": \"1.5h\" is not a duration"),
        "{e}"
    );
    let e = refused(r#"    - "* * * * *""#, r#"    - "@reboot""#);
    assert!(e.contains("@every DURATION"), "{e}");
    // stopStrategy: Argo 3.6's names; the release candidates' `condition`
    // is refused with the new name given.
    let stop = |s: &str| format!("  stopStrategy:\n    {s}\n  startingDeadlineSeconds: 0");
    let ok = example().replacen(
        "  startingDeadlineSeconds: 0",
        &stop("expression: \"cronworkflow.failed >= 3\""),
        1,
    );
    let c = parse_cron_workflow_document("c.yaml", doc(&ok)).unwrap();
    let st = c.spec.stop_strategy.clone().unwrap();
    let n = |succeeded, failed| gpuctl_pipelines::cron::Counts { succeeded, failed };
    assert_eq!(st.holds("x", n(5, 2)), Ok(false));
    assert_eq!(st.holds("x", n(0, 3)), Ok(true));
    let e = refused(
        "  startingDeadlineSeconds: 0",
        &stop("condition: \"failed >= 3\""),
    );
    assert!(
        e.starts_with("c.yaml: spec.stopStrategy.condition: `condition` is the name Argo 3.6's release candidates used")
            && e.contains("cronworkflow.failed >= 3"),
        "{e}"
    );
    let e = refused(
        "  startingDeadlineSeconds: 0",
        &stop("expression: \"failed >= 3\""),
    );
    assert!(
        e.starts_with("c.yaml: spec.stopStrategy.expression: "),
        "{e}"
    );
    assert!(e.contains("cronworkflow.failed"), "{e}");
    let e = refused(
        "  startingDeadlineSeconds: 0",
        &stop("expression: \"cronworkflow.failed\""),
    );
    assert!(e.contains("not true or false"), "{e}");
    let e = refused(
        "  startingDeadlineSeconds: 0",
        "  when: \"true\"\n  startingDeadlineSeconds: 0",
    );
    assert!(
        e.starts_with("c.yaml: spec.when: `when` on a CronWorkflow is not supported yet"),
        "{e}"
    );
}
