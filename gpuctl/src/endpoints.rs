//! Endpoints on the command line: `get endpoints`, `describe endpoint`, and making a
//! manifest's relative model path absolute before it is sent.

use std::fmt::Write as _;
use std::path::Path;

use gpuctl_common::api::Manifest;
use gpuctl_common::endpoint::Endpoint;

use crate::manifest::{Loaded, STDIN_SOURCE};
use crate::render::{format_age, format_gpus, indent, push_events, shell_join, table};

/// A relative `spec.model.path` or `spec.server.workingDir` is relative to the
/// manifest's folder (to the current folder for stdin), as the node daemon on this
/// machine would not know it.
pub fn resolve_model_paths(loaded: &mut [Loaded], cwd: &Path) {
    for l in loaded {
        let Manifest::Endpoint(ep) = &mut l.manifest else {
            continue;
        };
        let base = if l.source == STDIN_SOURCE {
            cwd.to_path_buf()
        } else {
            let dir = Path::new(&l.source).parent().unwrap_or(Path::new(""));
            if dir.is_absolute() {
                dir.to_path_buf()
            } else {
                cwd.join(dir)
            }
        };
        let paths = [
            ep.spec.model.as_mut().map(|m| &mut m.path),
            ep.spec.server.as_mut().and_then(|s| s.working_dir.as_mut()),
        ];
        for path in paths.into_iter().flatten() {
            if Path::new(path.as_str()).is_absolute() {
                continue;
            }
            let joined = base.join(&*path);
            *path = joined
                .canonicalize()
                .unwrap_or(joined)
                .to_string_lossy()
                .into_owned();
        }
    }
}

/// Where clients send requests for `ep`: the gateway's model URL.
pub fn endpoint_url(ep: &Endpoint, gateway: Option<&str>) -> String {
    match gateway {
        Some(g) => format!("{}/v2/models/{}", g.trim_end_matches('/'), ep.metadata.name),
        None => format!("<gateway>/v2/models/{}", ep.metadata.name),
    }
}

fn what(ep: &Endpoint) -> String {
    match (&ep.spec.model, &ep.spec.server) {
        (Some(m), _) => Path::new(&m.path)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| m.path.clone()),
        (None, Some(s)) => shell_join(&s.command),
        (None, None) => "-".into(),
    }
}

fn ready(ep: &Endpoint) -> usize {
    ep.status.replicas.iter().filter(|r| r.serving()).count()
}

/// The traffic split by revision (`r1 80% r2 20%`), `-` before revisions.
fn traffic(e: &Endpoint) -> String {
    let t = e.traffic_summary();
    if t.is_empty() {
        "-".into()
    } else {
        t
    }
}

/// `gpuctl get endpoints`.
pub fn endpoints_table(eps: &[Endpoint], gateway: Option<&str>, now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = eps
        .iter()
        .map(|e| {
            let a = &e.spec.autoscaling;
            vec![
                e.metadata.name.clone(),
                what(e),
                format!("{}/{}", ready(e), e.status.desired_replicas),
                format!("{}-{}", a.min_replicas, a.max_replicas),
                traffic(e),
                format!("{:.1}", e.status.requests_per_second),
                endpoint_url(e, gateway),
                format_age(e.metadata.creation_timestamp_ms, now_ms),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "MODEL", "READY", "MIN-MAX", "TRAFFIC", "RPS", "URL", "AGE",
        ],
        &rows,
    )
}

/// `gpuctl describe endpoint NAME`.
pub fn describe_endpoint(e: &Endpoint, gateway: Option<&str>, now_ms: u64) -> String {
    let s = &e.spec;
    let a = &s.autoscaling;
    let mut o = String::new();
    let mut kv = |k: &str, v: String| {
        let _ = writeln!(o, "{:<20}{v}", format!("{k}:"));
    };
    kv("Name", e.metadata.name.clone());
    kv("URL", endpoint_url(e, gateway));
    match (&s.model, &s.server) {
        (Some(m), _) => {
            kv(
                "Model",
                format!(
                    "{} ({}, {})",
                    m.path,
                    m.format,
                    m.name.as_deref().unwrap_or(&e.metadata.name)
                ),
            );
            kv(
                "Batching",
                format!(
                    "up to {} rows, {} ms",
                    s.batching.max_batch_size, s.batching.max_delay_millis
                ),
            );
        }
        (None, Some(srv)) => kv("Server", shell_join(&srv.command)),
        (None, None) => {}
    }
    kv(
        "Resources",
        format!("{} GPU(s) per replica", format_gpus(s.resources.gpus)),
    );
    kv(
        "Autoscaling",
        format!(
            "{}-{} replicas, target concurrency {}, scale to zero after {}s, window {}s",
            a.min_replicas,
            a.max_replicas,
            a.target_concurrency,
            a.scale_to_zero_after_seconds,
            a.stable_window_seconds
        ),
    );
    kv(
        "Replicas",
        format!("{} ready, {} desired", ready(e), e.status.desired_replicas),
    );
    kv(
        "Load",
        format!(
            "{:.1} req/s, concurrency {:.1}",
            e.status.requests_per_second, e.status.concurrency
        ),
    );
    if let Some(r) = &e.status.reason {
        kv("Last scaled", r.clone());
    }
    if e.status.latest_revision > 0 {
        kv(
            "Revision",
            format!(
                "{} (stable {}); traffic {}",
                e.status.latest_revision,
                e.status.stable_revision,
                traffic(e)
            ),
        );
        let per_rev: Vec<String> = e
            .revision_counts()
            .iter()
            .map(|c| format!("r{}: {}/{} ready", c.revision, c.ready, c.replicas))
            .collect();
        if !per_rev.is_empty() {
            kv("Revisions", per_rev.join(", "));
        }
    }
    if let Some(r) = &e.status.rollout {
        kv(
            "Rollout",
            format!(
                "{} → {}: {} ({})",
                r.from_revision, r.to_revision, r.phase, r.message
            ),
        );
    }
    if let Some(until) = e.status.backoff_until_ms.filter(|&t| t > now_ms) {
        kv(
            "Back-off",
            format!(
                "{} replicas in a row ended soon after starting; the next starts in {:.0}s",
                e.status.consecutive_failures,
                (until - now_ms) as f64 / 1000.0
            ),
        );
    }
    kv(
        "Created",
        format_age(e.metadata.creation_timestamp_ms, now_ms) + " ago",
    );
    if !e.status.replicas.is_empty() {
        o.push_str("Replica jobs:\n");
        o.push_str(&indent(&replicas_table(e), "  "));
    }
    push_events(&mut o, &e.status.events, now_ms);
    o
}

/// An endpoint's replica jobs: where each runs and whether it gets requests.
fn replicas_table(e: &Endpoint) -> String {
    let rows: Vec<Vec<String>> = e
        .status
        .replicas
        .iter()
        .map(|r| {
            vec![
                r.job.clone(),
                r.phase.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                r.node.clone().unwrap_or_else(|| "-".into()),
                r.url.clone().unwrap_or_else(|| "-".into()),
                e.replica_revision(r).to_string(),
                if r.ready { "yes" } else { "no" }.into(),
                if r.draining() { "draining" } else { "serving" }.into(),
            ]
        })
        .collect();
    table(
        &[
            "JOB", "PHASE", "NODE", "URL", "REVISION", "READY", "ROUTING",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpoint {
        gpuctl_testkit::endpoint("lin")
            .model("../testdata/linear.onnx")
            .build()
    }

    #[test]
    fn relative_model_paths_follow_the_manifest() {
        let mut loaded = vec![
            Loaded {
                source: "examples/ep.yaml".into(),
                manifest: Manifest::Endpoint(ep()),
            },
            Loaded {
                source: STDIN_SOURCE.into(),
                manifest: Manifest::Endpoint(ep()),
            },
        ];
        resolve_model_paths(&mut loaded, Path::new("/nonexistent/work"));
        let path = |l: &Loaded| match &l.manifest {
            Manifest::Endpoint(e) => e.spec.model.as_ref().unwrap().path.clone(),
            _ => unreachable!(),
        };
        assert_eq!(
            path(&loaded[0]),
            "/nonexistent/work/examples/../testdata/linear.onnx"
        );
        assert_eq!(
            path(&loaded[1]),
            "/nonexistent/work/../testdata/linear.onnx"
        );
    }

    #[test]
    fn a_relative_server_working_dir_follows_the_manifest() {
        let mut e = gpuctl_testkit::endpoint("chat").build();
        e.spec.model = None;
        e.spec.server = Some(gpuctl_common::endpoint::ServerSpec {
            command: vec!["python3".into(), "openai-server.py".into()],
            env: Default::default(),
            env_from: vec![],
            secret_files: vec![],
            working_dir: Some(".".into()),
            tls: None,
        });
        let mut abs = e.clone();
        abs.spec.server.as_mut().unwrap().working_dir = Some("/srv/llm".into());
        let mut loaded = vec![
            Loaded {
                source: "examples/ep.yaml".into(),
                manifest: Manifest::Endpoint(e),
            },
            Loaded {
                source: "examples/ep.yaml".into(),
                manifest: Manifest::Endpoint(abs),
            },
        ];
        resolve_model_paths(&mut loaded, Path::new("/nonexistent/work"));
        let dir = |l: &Loaded| match &l.manifest {
            Manifest::Endpoint(e) => e.spec.server.as_ref().unwrap().working_dir.clone(),
            _ => unreachable!(),
        };
        assert_eq!(
            dir(&loaded[0]).as_deref(),
            Some("/nonexistent/work/examples/.")
        );
        assert_eq!(dir(&loaded[1]).as_deref(), Some("/srv/llm"));
    }

    #[test]
    fn tables_show_replicas_and_the_url() {
        let mut e = ep();
        e.status.desired_replicas = 2;
        let t = endpoints_table(&[e.clone()], Some("http://127.0.0.1:8080"), 0);
        assert!(t.contains("0/2"), "{t}");
        assert!(t.contains("http://127.0.0.1:8080/v2/models/lin"), "{t}");
        let d = describe_endpoint(&e, None, 0);
        assert!(d.contains("linear.onnx"), "{d}");
        assert!(d.contains("0-4 replicas"), "{d}");
    }
}
