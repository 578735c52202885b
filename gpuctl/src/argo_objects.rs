//! `WorkflowTemplate`, `ClusterWorkflowTemplate` and `CronWorkflow` on the
//! command line: reading them from files (checked here first, with file and
//! field in errors), their tables and `describe`, and the document `gpuctl
//! cron suspend|resume` applies again with `spec.suspend` changed (what
//! `argo cron suspend` does).

use serde::Deserialize as _;

use crate::error::{Error, Result};
use crate::render::format_age;

/// The kinds stored by `apply` that are neither gpuctl objects nor runs.
pub const KINDS: [&str; 3] = [
    "WorkflowTemplate",
    "ClusterWorkflowTemplate",
    "CronWorkflow",
];

/// One of them, read from a file and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ArgoObject {
    pub source: String,
    /// `workflowtemplate`, `clusterworkflowtemplate` or `cronworkflow`.
    pub kind: String,
    pub name: String,
    pub json: String,
}

/// Whether the file holds these kinds (every document one of them).
pub fn is_argo_object_text(text: &str) -> bool {
    let mut any = false;
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        let Ok(v) = serde_yaml_ng::Value::deserialize(de) else {
            return false;
        };
        if v.is_null() {
            continue;
        }
        match v.get("kind").and_then(|k| k.as_str()) {
            Some(k) if KINDS.contains(&k) => any = true,
            _ => return false,
        }
    }
    any
}

/// Every document of the file, checked as its kind.
pub fn parse_file(source: &str, text: &str) -> Result<Vec<ArgoObject>> {
    let mut out = Vec::new();
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(text)
        .map(serde_yaml_ng::Value::deserialize)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Other(format!("{source}: malformed YAML: {e}")))?;
    let docs: Vec<_> = docs.into_iter().filter(|d| !d.is_null()).collect();
    let many = docs.len() > 1;
    for (i, doc) in docs.into_iter().enumerate() {
        let src = if many {
            format!("{source} (document {})", i + 1)
        } else {
            source.to_string()
        };
        let kind = doc
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        let bad = |e: gpuctl_common::api::ManifestError| Error::Other(e.to_string());
        let (name, json) = if kind == "CronWorkflow" {
            let c = gpuctl_pipelines::cron::parse_cron_workflow_document(&src, doc.clone())
                .map_err(bad)?;
            (c.name().to_string(), serde_json::to_string(&doc))
        } else {
            let t = gpuctl_pipelines::parse_workflow_template_document(&src, doc.clone())
                .map_err(bad)?;
            (
                t.metadata.name.clone().unwrap_or_default(),
                serde_json::to_string(&doc),
            )
        };
        out.push(ArgoObject {
            source: src,
            kind: kind.to_ascii_lowercase(),
            name,
            json: json.map_err(|e| Error::Other(format!("{source}: {e}")))?,
        });
    }
    Ok(out)
}

fn created_ms(v: &serde_json::Value) -> Option<u64> {
    v["metadata"]["creationTimestamp"]
        .as_str()?
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond() as u64)
}

fn table(head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `gpuctl get workflowtemplates` / `clusterworkflowtemplates`: NAME,
/// ENTRYPOINT, TEMPLATES, AGE.
pub fn templates_table(objs: &[serde_json::Value], now_ms: u64) -> String {
    let rows = objs
        .iter()
        .map(|v| {
            let names: Vec<&str> = v["spec"]["templates"]
                .as_array()
                .map(|a| a.iter().filter_map(|t| t["name"].as_str()).collect())
                .unwrap_or_default();
            vec![
                v["metadata"]["name"].as_str().unwrap_or("").to_string(),
                v["spec"]["entrypoint"].as_str().unwrap_or("-").to_string(),
                names.join(","),
                format_age(created_ms(v), now_ms),
            ]
        })
        .collect();
    table(&["NAME", "ENTRYPOINT", "TEMPLATES", "AGE"], rows)
}

fn schedules(v: &serde_json::Value) -> String {
    let mut s: Vec<&str> = v["spec"]["schedules"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    if let Some(x) = v["spec"]["schedule"].as_str() {
        s.push(x);
    }
    s.join(",")
}

fn time_ms(v: &serde_json::Value) -> Option<u64> {
    v.as_str()?
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond() as u64)
}

/// `gpuctl get cronworkflows`, as `argo cron list`: NAME, AGE, LAST RUN,
/// NEXT RUN, SCHEDULES, TIMEZONE, SUSPENDED, ACTIVE.
pub fn cron_table(objs: &[serde_json::Value], now_ms: u64) -> String {
    let rows = objs
        .iter()
        .map(|v| {
            let st = &v["status"];
            let next = match time_ms(&st["nextScheduledTime"]) {
                Some(t) if t >= now_ms => format!("{}s", (t - now_ms) / 1000),
                Some(_) => "now".to_string(),
                None => "-".to_string(),
            };
            vec![
                v["metadata"]["name"].as_str().unwrap_or("").to_string(),
                format_age(created_ms(v), now_ms),
                time_ms(&st["lastScheduledTime"])
                    .map_or("N/A".to_string(), |t| format_age(Some(t), now_ms)),
                next,
                schedules(v),
                v["spec"]["timezone"]
                    .as_str()
                    .unwrap_or(LOCAL_ZONE)
                    .to_string(),
                v["spec"]["suspend"].as_bool().unwrap_or(false).to_string(),
                st["active"].as_array().map_or(0, Vec::len).to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "AGE",
            "LAST RUN",
            "NEXT RUN",
            "SCHEDULES",
            "TIMEZONE",
            "SUSPENDED",
            "ACTIVE",
        ],
        rows,
    )
}

/// `gpuctl describe cronworkflow`, as `argo cron get`.
pub fn describe_cron(v: &serde_json::Value) -> String {
    let st = &v["status"];
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("-").to_string();
    let active: Vec<&str> = st["active"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let spec = &v["spec"];
    let mut out = String::new();
    for (k, val) in [
        ("Name", s(&v["metadata"]["name"])),
        ("Owner", s(&v["metadata"]["owner"])),
        ("Created", s(&v["metadata"]["creationTimestamp"])),
        ("Schedules", schedules(v)),
        (
            "Timezone",
            spec["timezone"].as_str().unwrap_or(LOCAL_ZONE).into(),
        ),
        (
            "Suspended",
            spec["suspend"].as_bool().unwrap_or(false).to_string(),
        ),
        (
            "StartingDeadlineSeconds",
            spec["startingDeadlineSeconds"]
                .as_i64()
                .map_or("-".into(), |n| n.to_string()),
        ),
        (
            "ConcurrencyPolicy",
            spec["concurrencyPolicy"].as_str().unwrap_or("Allow").into(),
        ),
        ("LastScheduledTime", s(&st["lastScheduledTime"])),
        ("NextScheduledTime", s(&st["nextScheduledTime"])),
        ("Active Workflows", active.join(", ")),
        ("Phase", s(&st["phase"])),
        (
            "Runs",
            format!(
                "{} succeeded, {} failed",
                st["succeeded"].as_u64().unwrap_or(0),
                st["failed"].as_u64().unwrap_or(0)
            ),
        ),
        ("Last", s(&st["message"])),
    ] {
        out.push_str(&format!("{:<25}{}\n", format!("{k}:"), val));
    }
    out
}

/// How a CronWorkflow without `timezone` shows its zone: the scheduler's
/// local one (`gpu-scheduler --cron-timezone`, or its process's), as Argo
/// uses its controller's.
const LOCAL_ZONE: &str = "(scheduler's)";

/// The CronWorkflow `v` (as `get` shows it) as a document to apply again,
/// with `spec.suspend` set to `suspend`.
pub fn with_suspend(v: &serde_json::Value, suspend: bool) -> serde_json::Value {
    let mut meta = serde_json::json!({ "name": v["metadata"]["name"] });
    for k in ["labels", "annotations"] {
        if !v["metadata"][k].is_null() {
            meta[k] = v["metadata"][k].clone();
        }
    }
    let mut spec = v["spec"].clone();
    spec["suspend"] = serde_json::Value::Bool(suspend);
    serde_json::json!({
        "apiVersion": v["apiVersion"],
        "kind": "CronWorkflow",
        "metadata": meta,
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRON: &str = "apiVersion: argoproj.io/v1alpha1\nkind: CronWorkflow\nmetadata: {name: nightly}\nspec:\n  schedules: [\"0 2 * * *\"]\n  timezone: Europe/Paris\n  workflowSpec:\n    entrypoint: m\n    templates:\n    - {name: m, container: {image: x, command: [\"true\"]}}\n";

    #[test]
    fn files_of_these_kinds_are_read_and_checked_with_file_and_field() {
        assert!(is_argo_object_text(CRON));
        assert!(!is_argo_object_text("apiVersion: v1\nkind: Workflow\n"));
        let objs = parse_file("c.yaml", CRON).unwrap();
        assert_eq!(objs[0].kind, "cronworkflow");
        assert_eq!(objs[0].name, "nightly");
        let bad = CRON.replace("0 2 * * *", "0 25 * * *");
        let e = parse_file("c.yaml", &bad).unwrap_err().to_string();
        assert!(
            e.starts_with("c.yaml: spec.schedules[0]: hour field: 25"),
            "{e}"
        );
    }

    #[test]
    fn suspend_keeps_the_document_and_flips_the_flag() {
        let v = serde_json::json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "CronWorkflow",
            "metadata": {"name": "n", "uid": "4", "labels": {"a": "b"}},
            "spec": {"schedules": ["* * * * *"], "workflowSpec": {"entrypoint": "m"}},
            "status": {"active": []},
        });
        let d = with_suspend(&v, true);
        assert_eq!(d["spec"]["suspend"], true);
        assert_eq!(
            d["metadata"],
            serde_json::json!({"name": "n", "labels": {"a": "b"}})
        );
        assert!(d.get("status").is_none());
    }
}
