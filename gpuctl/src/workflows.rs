//! Workflows on the command line: reading `kind: Workflow` files, and what
//! `get workflows`, `describe workflow` and `logs workflow` print. The
//! renderers are pure functions of the object the server sends and `now`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use gpuctl_common::api::ObjectMeta;
use gpuctl_pipelines::{NodeView, WorkflowStatus};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::render::{format_age, format_time, table};

/// A workflow as the server sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowDoc {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: serde_json::Value,
    pub status: WorkflowDocStatus,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowDocStatus {
    #[serde(flatten)]
    pub run: WorkflowStatus,
    /// `done/all` steps.
    #[serde(default)]
    pub progress: String,
    /// Step id → job name.
    #[serde(default)]
    pub jobs: BTreeMap<String, String>,
}

/// Does this YAML text hold a `kind: Workflow` document?
pub fn is_workflow_text(text: &str) -> bool {
    use serde::Deserialize as _;
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        // Malformed YAML: not a workflow here; the manifest parser reports
        // it. (After an error the document iterator does not end.)
        let Ok(v) = serde_yaml_ng::Value::deserialize(de) else {
            return false;
        };
        if v.get("kind").and_then(|k| k.as_str()) == Some("Workflow") {
            return true;
        }
    }
    false
}

/// Parse and validate a workflow file: errors name the file and the field.
pub fn parse_workflow_file(source: &str, text: &str) -> Result<gpuctl_pipelines::Workflow> {
    gpuctl_pipelines::parse_workflow(source, text).map_err(Error::Manifest)
}

/// `-p name=value` workflow arguments.
pub fn parse_parameters(ps: &[String]) -> Result<BTreeMap<String, String>> {
    ps.iter()
        .map(|p| {
            p.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "-p {p:?}: expected NAME=VALUE, e.g. -p learning-rate=0.01"
                    ))
                })
        })
        .collect()
}

fn duration(started: Option<u64>, finished: Option<u64>, now_ms: u64) -> String {
    let Some(s) = started else {
        return "-".into();
    };
    let end = finished.unwrap_or(now_ms);
    let ms = end.saturating_sub(s);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format_age(Some(s), end)
    }
}

/// The run's phase, `Running (Suspended)` as Argo shows a run that is
/// suspended or waits in a `suspend` step.
fn phase_text(st: &gpuctl_pipelines::WorkflowStatus) -> String {
    fn waiting(n: &gpuctl_pipelines::NodeView) -> bool {
        (n.node_type == gpuctl_pipelines::NodeType::Suspend
            && n.phase == gpuctl_pipelines::NodePhase::Running)
            || n.children.iter().any(waiting)
    }
    let waits = st.root.iter().chain(st.on_exit.iter()).any(waiting);
    if !st.phase.is_terminal() && (st.suspended || waits) {
        format!("{} (Suspended)", st.phase)
    } else {
        st.phase.to_string()
    }
}

/// `gpuctl get workflows`.
pub fn workflows_table(wfs: &[WorkflowDoc], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = wfs
        .iter()
        .map(|w| {
            let st = &w.status.run;
            vec![
                w.metadata.name.clone(),
                phase_text(st),
                w.status.progress.clone(),
                duration(Some(st.started_ms), st.finished_ms, now_ms),
                format_age(w.metadata.creation_timestamp_ms, now_ms),
                st.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["NAME", "PHASE", "PROGRESS", "DURATION", "AGE", "MESSAGE"],
        &rows,
    )
}

fn phase_mark(phase: gpuctl_pipelines::NodePhase) -> &'static str {
    use gpuctl_pipelines::NodePhase as P;
    match phase {
        P::Succeeded => "✔",
        P::Failed | P::Error => "✖",
        P::Running => "●",
        P::Pending => "◷",
        P::Skipped | P::Omitted => "○",
    }
}

fn outputs_line(n: &NodeView) -> String {
    let mut parts = Vec::new();
    for (k, v) in &n.outputs.parameters {
        parts.push(format!("{k}={}", short(v)));
    }
    if let Some(r) = &n.outputs.result {
        parts.push(format!("result={}", short(r)));
    }
    for k in n.outputs.artifacts.keys() {
        parts.push(format!("artifact:{k}"));
    }
    parts.join(" ")
}

fn short(s: &str) -> String {
    let one = s.replace('\n', "\\n");
    if one.chars().count() > 40 {
        format!("{}…", one.chars().take(39).collect::<String>())
    } else {
        one
    }
}

fn tree_rows(
    n: &NodeView,
    prefix: &str,
    last: bool,
    root: bool,
    jobs: &BTreeMap<String, String>,
    now_ms: u64,
    rows: &mut Vec<Vec<String>>,
) {
    let branch = if root {
        String::new()
    } else if last {
        format!("{prefix}└─")
    } else {
        format!("{prefix}├─")
    };
    let kind = match n.node_type {
        gpuctl_pipelines::NodeType::Pod => String::new(),
        t => format!(" ({t})"),
    };
    let memo = if n.memoized { " (memoized)" } else { "" };
    let message = match (&n.message, outputs_line(n)) {
        (Some(m), o) if !o.is_empty() => format!("{m}; {o}"),
        (Some(m), _) => m.clone(),
        (None, o) => o,
    };
    rows.push(vec![
        format!(
            "{branch}{} {}{kind}{memo}",
            phase_mark(n.phase),
            n.display_name
        ),
        n.template.clone().unwrap_or_default(),
        n.phase.to_string(),
        duration(n.started_ms, n.finished_ms, now_ms),
        if n.retries > 0 {
            n.retries.to_string()
        } else {
            String::new()
        },
        jobs.get(&n.id).cloned().unwrap_or_default(),
        message,
    ]);
    let child_prefix = if root {
        String::new()
    } else if last {
        format!("{prefix}  ")
    } else {
        format!("{prefix}│ ")
    };
    for (i, c) in n.children.iter().enumerate() {
        let last = i + 1 == n.children.len();
        tree_rows(c, &child_prefix, last, false, jobs, now_ms, rows);
    }
}

/// `gpuctl describe workflow NAME`: the header, then the tree of steps.
pub fn describe_workflow(w: &WorkflowDoc, now_ms: u64) -> String {
    let st = &w.status.run;
    let mut out = String::new();
    let _ = writeln!(out, "Name:       {}", w.metadata.name);
    let _ = writeln!(out, "Phase:      {}", phase_text(st));
    if let Some(m) = &st.message {
        let _ = writeln!(out, "Message:    {m}");
    }
    let _ = writeln!(
        out,
        "Started:    {} ({} ago)",
        format_time(st.started_ms),
        format_age(Some(st.started_ms), now_ms)
    );
    if let Some(f) = st.finished_ms {
        let _ = writeln!(out, "Finished:   {}", format_time(f));
    }
    let _ = writeln!(
        out,
        "Duration:   {}",
        duration(Some(st.started_ms), st.finished_ms, now_ms)
    );
    let _ = writeln!(out, "Progress:   {}", w.status.progress);
    if let Some(params) = w
        .spec
        .get("arguments")
        .and_then(|a| a.get("parameters"))
        .and_then(|p| p.as_array())
    {
        if !params.is_empty() {
            let _ = writeln!(out, "Parameters:");
            for p in params {
                let name = p.get("name").and_then(|v| v.as_str()).unwrap_or("?");
                let value = p
                    .get("value")
                    .map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()))
                    .unwrap_or_default();
                let _ = writeln!(out, "  {name}: {value}");
            }
        }
    }
    out.push('\n');
    let mut rows = Vec::new();
    if let Some(root) = &st.root {
        tree_rows(root, "", true, true, &w.status.jobs, now_ms, &mut rows);
    }
    if let Some(e) = &st.on_exit {
        tree_rows(e, "", true, true, &w.status.jobs, now_ms, &mut rows);
    }
    out.push_str(&table(
        &[
            "STEP", "TEMPLATE", "PHASE", "DURATION", "RETRIES", "JOB", "MESSAGE",
        ],
        &rows,
    ));
    out
}

/// The steps that ran (have a job), in tree order, optionally only those
/// `step` names: (display name, job). `step` is a display name (`train`,
/// which also names its fan-out items `train(0:a)` and retries), a job, or
/// a node's path in the run (`outer.train`, `[1].train`, or its full id).
pub fn step_jobs(w: &WorkflowDoc, step: Option<&str>) -> Vec<(String, String)> {
    step_matches(w, step)
        .into_iter()
        .map(|(d, _, j)| (d, j))
        .collect()
}

/// When `step` is a display name that steps in different places carry
/// (`A` in each of four nested DAGs), their paths, to choose from.
pub fn ambiguous_step(w: &WorkflowDoc, step: &str) -> Option<Vec<String>> {
    let mut places: Vec<String> = step_matches(w, Some(step))
        .into_iter()
        .map(|(_, path, _)| base_path(&path).to_string())
        .collect();
    places.dedup();
    (places.len() > 1).then_some(places)
}

/// A step's path without its fan-out item and retry suffixes.
fn base_path(path: &str) -> &str {
    let mut p = path;
    while p.ends_with(')') {
        match p.rfind('(') {
            Some(i) if i > 0 => p = &p[..i],
            _ => break,
        }
    }
    p
}

/// (display name, path in the run, job) of each step `step` names.
fn step_matches(w: &WorkflowDoc, step: Option<&str>) -> Vec<(String, String, String)> {
    fn walk(
        n: &NodeView,
        run: &str,
        jobs: &BTreeMap<String, String>,
        out: &mut Vec<(String, String, String)>,
    ) {
        if let Some(j) = jobs.get(&n.id) {
            let path = n.id.strip_prefix(run).unwrap_or(&n.id);
            let path = path.strip_prefix('.').unwrap_or(path);
            out.push((n.display_name.clone(), path.to_string(), j.clone()));
        }
        for c in &n.children {
            walk(c, run, jobs, out);
        }
    }
    let mut all = Vec::new();
    let st = &w.status.run;
    for root in [&st.root, &st.on_exit].into_iter().flatten() {
        walk(root, &st.name, &w.status.jobs, &mut all);
    }
    let Some(s) = step else { return all };
    let by_path: Vec<_> = all
        .iter()
        .filter(|(_, path, _)| {
            path == s || base_path(path) == s || format!("{}.{path}", st.name) == s
        })
        .cloned()
        .collect();
    if !by_path.is_empty() {
        return by_path;
    }
    let by_name: Vec<_> = all
        .iter()
        .filter(|(d, _, j)| d == s || j == s || d.split('(').next() == Some(s))
        .cloned()
        .collect();
    if !by_name.is_empty() {
        return by_name;
    }
    // A step of the entrypoint itself (its id is the run's name).
    all.into_iter()
        .filter(|(_, path, _)| path.is_empty() && s == st.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> WorkflowDoc {
        let v = r#"{
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "wf", "creationTimestampMs": 1000},
            "spec": {"entrypoint": "main", "arguments": {"parameters": [{"name": "x", "value": "1"}]}},
            "status": {
                "name": "wf", "phase": "Running", "startedMs": 1000, "finishedMs": null,
                "message": null, "progress": "1/2",
                "jobs": {"wf.a": "wf-a", "wf.b(0:x)": "wf-b-0-x"},
                "root": {"id": "wf", "displayName": "wf", "nodeType": "DAG", "template": "main",
                    "phase": "Running", "startedMs": 1000, "finishedMs": null, "retries": 0,
                    "exitCode": null, "memoized": false, "message": null, "outputs": {},
                    "children": [
                        {"id": "wf.a", "displayName": "a", "nodeType": "Pod", "template": "t",
                         "phase": "Succeeded", "startedMs": 1000, "finishedMs": 2500, "retries": 0,
                         "exitCode": 0, "memoized": false, "message": null,
                         "outputs": {"parameters": {"p": "42"}}, "children": []},
                        {"id": "wf.b(0:x)", "displayName": "b(0:x)", "nodeType": "Pod", "template": "t",
                         "phase": "Running", "startedMs": 2500, "finishedMs": null, "retries": 0,
                         "exitCode": null, "memoized": false, "message": null,
                         "outputs": {}, "children": []}
                    ]},
                "onExit": null
            }
        }"#;
        serde_json::from_str(v).unwrap()
    }

    #[test]
    fn table_and_tree_render() {
        let w = doc();
        let t = workflows_table(std::slice::from_ref(&w), 4000);
        assert!(
            t.starts_with("NAME   PHASE     PROGRESS   DURATION   AGE"),
            "{t}"
        );
        assert!(
            t.contains("wf     Running   1/2        3.0s       3s"),
            "{t}"
        );
        let d = describe_workflow(&w, 4000);
        assert!(d.contains("Progress:   1/2"), "{d}");
        assert!(d.contains("  x: 1"), "{d}");
        assert!(d.contains("├─✔ a"), "{d}");
        assert!(d.contains("└─● b(0:x)"), "{d}");
        assert!(d.contains("p=42"), "{d}");
        assert!(d.contains("wf-b-0-x"), "{d}");
        assert_eq!(
            step_jobs(&w, None),
            [
                ("a".to_string(), "wf-a".to_string()),
                ("b(0:x)".to_string(), "wf-b-0-x".to_string())
            ]
        );
        assert_eq!(step_jobs(&w, Some("b")).len(), 1);
        assert_eq!(step_jobs(&w, Some("wf.a"))[0].1, "wf-a");
    }

    #[test]
    fn malformed_yaml_is_not_a_workflow_and_ends() {
        assert!(!is_workflow_text("a: [1, 2\nb: {"));
        assert!(!is_workflow_text("kind: Job\n---\n: : :\n"));
        assert!(is_workflow_text("kind: Job\n---\nkind: Workflow\n"));
    }

    #[test]
    fn parameters_parse() {
        let p = parse_parameters(&["a=1".into(), "b=x=y".into()]).unwrap();
        assert_eq!(p["b"], "x=y");
        assert!(parse_parameters(&["nope".into()]).is_err());
    }
}
