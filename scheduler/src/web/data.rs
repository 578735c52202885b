//! The UI's JSON API, read from this replica's applied state:
//!
//! ```text
//!  GET /api/session              who the browser is, and this replica
//!  GET /api/cluster              nodes with their GPUs' use and health (in
//!                                columns, see [`cluster`]), queues, GPUs
//!                                allocated over the last hour
//!  GET /api/jobs?queue=&phase=&owner=&limit=   jobs, newest first
//!  GET /api/jobs/NAME            one job (tasks, nodes, GPUs, events)
//!  GET /api/jobs/NAME/logs?task=N   a task's log so far (text)
//!  GET /api/jobs/NAME/logs/stream?task=N   the same, followed (log_stream.rs)
//!  GET /api/workflows            workflows with their phase and progress
//!  GET /api/workflows/NAME       one workflow, and its DAG laid out (graph.rs)
//!  GET /api/endpoints            endpoints with replicas ready/desired, and
//!                                their load, latency and replicas over the
//!                                last hour with scale events (the charts)
//!  GET /api/control              the control plane: replicas, leader, term, indices
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use gpuctl_common::api::{Job, JobPhase, TaskPhase};
use gpuctl_common::queue::DEFAULT_QUEUE;
use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::control_server::Control;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use tokio_stream::StreamExt;

use super::endpoint_history::EndpointHistory;
use super::history::History;
use super::{error, param, respond, Body, Session};
use crate::api::Api;
use crate::state::State;

/// The most jobs one list answer holds (the newest).
const MAX_JOBS: usize = 2000;
/// The most log bytes one answer holds (the end of the log).
const MAX_LOG: usize = 1 << 20;
/// How long reading a log may take.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer to `GET /api/{path}?{query}`.
pub async fn answer(
    api: &Api,
    history: &History,
    endpoint_history: &EndpointHistory,
    who: &Session,
    path: &str,
    query: &str,
) -> Response<Body> {
    let ok = |v: Value| super::json(StatusCode::OK, &v);
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["session"] => ok(json!({
            "user": who.user,
            "role": who.role,
            "replica": api.raft.shared.status().id,
            "authentication": api.opts.auth.enabled,
        })),
        ["cluster"] => {
            let mut v = cluster(&api.raft.shared.read());
            v["history"] = history.to_json();
            ok(v)
        }
        ["jobs"] => ok(jobs(&api.raft.shared.read(), &Filter::from_query(query))),
        ["jobs", name] => match job(api, &super::url_decode(name)) {
            Some(v) => ok(v),
            None => error(StatusCode::NOT_FOUND, format!("job {name:?} not found")),
        },
        ["jobs", name, "logs"] => logs(api, who, &super::url_decode(name), query).await,
        ["workflows"] => ok(workflows(&api.raft.shared.read())),
        ["workflows", name] => {
            let name = super::url_decode(name);
            let st = api.raft.shared.read();
            match st.workflows.get(&name) {
                Some(w) => {
                    let mut graph =
                        super::graph::layout(w.run.workflow(), &w.run.status(), &w.jobs);
                    // Each step's inputs (parameters, artifacts and where they come from).
                    for s in &mut graph.steps {
                        if let Some(n) = w.run.node(&s.id) {
                            s.inputs = serde_json::to_value(&n.inputs).unwrap_or_default();
                        }
                    }
                    ok(json!({ "workflow": w.view(), "graph": graph }))
                }
                None => error(StatusCode::NOT_FOUND, format!("workflow {name:?} not found")),
            }
        }
        ["endpoints"] => ok(endpoints(
            &api.raft.shared.read(),
            endpoint_history,
            gpuctl_common::now_ms(),
        )),
        ["control"] => ok(control(api)),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such API path /api/{path}: see /api/session, cluster, jobs, workflows, endpoints, control"),
        ),
    }
}

/// Nodes, queues and totals. Each node is
///
/// ```text
///  {name, phase, cordoned (only when true), inventory,
///   cpu: [used, total] (milli-CPUs), memory: [used, total] (bytes),
///   jobs: [names of the jobs with a task there],
///   gpus: {models: [[model, memoryBytes, count], ...]   runs, in GPU order
///          index: [...]         only when the indexes are not 0, 1, ...
///          used: [milli, ...]   per GPU; absent when none is used
///          unhealthy: [[gpu, xid or null], ...]   absent when none
///          tasks: [[gpu, job (its place in jobs), task, milli], ...]}}
/// ```
///
/// columns per node rather than an object per GPU, the per-node fields said
/// once: a free 8-GPU node is about 200 bytes, not 1.2 KB.
pub fn cluster(st: &State) -> Value {
    // (node, GPU index, job, task, milli) of every task holding resources.
    let mut on_node: BTreeMap<&str, Vec<(u32, &str, u32, u32)>> = BTreeMap::new();
    for j in st.jobs.values() {
        for t in &j.status.tasks {
            let Some(node) = t.node.as_deref() else {
                continue;
            };
            if !t.phase.holds_resources() {
                continue;
            }
            let held = on_node.entry(node).or_default();
            if t.gpus.is_empty() {
                held.push((u32::MAX, &j.metadata.name, t.index, 0));
            }
            for g in &t.gpus {
                held.push((g.index, &j.metadata.name, t.index, g.milli));
            }
        }
    }
    let nodes: Vec<Value> = st
        .nodes
        .values()
        .map(|n| {
            let name = n.metadata.name.as_str();
            let usage = st.usage(name);
            let held = on_node.remove(name).unwrap_or_default();
            let mut jobs: Vec<&str> = held.iter().map(|h| h.1).collect();
            jobs.sort_unstable();
            jobs.dedup();
            let mut v = json!({
                "name": name,
                "phase": n.status.phase,
                "inventory": n.status.inventory,
                "cpu": [usage.cpu_milli, n.status.cpu_milli],
                "memory": [usage.memory_bytes, n.status.memory_bytes],
                "jobs": jobs,
                "gpus": gpu_columns(&n.status.gpus, &usage.gpu_milli, &held, &jobs),
            });
            if n.spec.unschedulable {
                v["cordoned"] = json!(true);
            }
            v
        })
        .collect();
    let counts = st.counts();
    json!({
        "nodes": nodes,
        "queues": queues(st),
        "counts": {
            "nodesReady": counts.nodes_ready,
            "nodesLost": counts.nodes_lost,
            "gpusReady": counts.gpus_ready,
            "gpusAllocated": st.gpu_milli_allocated() as f64 / 1000.0,
            "jobsPending": counts.jobs_in(JobPhase::Pending),
            "jobsRunning": counts.jobs_in(JobPhase::Running),
        },
    })
}

/// A node's GPUs as columns (see [`cluster`]).
fn gpu_columns(
    gpus: &[gpuctl_common::node::Gpu],
    used: &BTreeMap<u32, u32>,
    held: &[(u32, &str, u32, u32)],
    jobs: &[&str],
) -> Value {
    let mut models: Vec<(&str, u64, u32)> = Vec::new();
    for g in gpus {
        match models.last_mut() {
            Some((m, b, n)) if *m == g.model && *b == g.memory_bytes => *n += 1,
            _ => models.push((&g.model, g.memory_bytes, 1)),
        }
    }
    let mut v = json!({
        "models": models.iter().map(|(m, b, n)| json!([m, b, n])).collect::<Vec<_>>(),
    });
    if gpus.iter().enumerate().any(|(i, g)| g.index as usize != i) {
        v["index"] = json!(gpus.iter().map(|g| g.index).collect::<Vec<_>>());
    }
    let milli: Vec<u32> = gpus
        .iter()
        .map(|g| used.get(&g.index).copied().unwrap_or(0))
        .collect();
    if milli.iter().any(|&m| m > 0) {
        v["used"] = json!(milli);
    }
    let bad: Vec<Value> = gpus
        .iter()
        .filter(|g| !g.healthy)
        .map(|g| json!([g.index, g.xid]))
        .collect();
    if !bad.is_empty() {
        v["unhealthy"] = Value::Array(bad);
    }
    let tasks: Vec<Value> = held
        .iter()
        .filter(|h| h.0 != u32::MAX)
        .map(|(gpu, job, task, milli)| {
            let j = jobs.binary_search(job).unwrap_or(0);
            json!([gpu, j, task, milli])
        })
        .collect();
    if !tasks.is_empty() {
        v["tasks"] = Value::Array(tasks);
    }
    v
}

/// Every queue (the default one too) with its quota, weight, use and a
/// weight-proportional share of the Ready GPUs.
fn queues(st: &State) -> Vec<Value> {
    let mut names: Vec<&str> = st.queues.keys().map(String::as_str).collect();
    if !st.queues.contains_key(DEFAULT_QUEUE) {
        names.insert(0, DEFAULT_QUEUE);
    }
    let weight = |n: &str| st.queues.get(n).map_or(1, |q| q.spec.weight.max(1));
    let total: u32 = names.iter().map(|n| weight(n)).sum();
    let gpus = st.counts().gpus_ready as f64;
    names
        .into_iter()
        .map(|n| {
            let s = st.queue_status(n);
            let q = st.queues.get(n);
            json!({
                "name": n,
                "gpuQuota": q.and_then(|q| q.spec.gpu_quota),
                "weight": weight(n),
                "borrow": q.is_some_and(|q| q.spec.borrow),
                "gpusInUse": s.gpus_in_use,
                "runningJobs": s.running_jobs,
                "pendingJobs": s.pending_jobs,
                "fairShareGpus": (gpus * weight(n) as f64 / total.max(1) as f64 * 100.0).round() / 100.0,
            })
        })
        .collect()
}

/// What the job list keeps: `None` fields match everything.
#[derive(Debug, Default, PartialEq)]
pub struct Filter {
    pub queue: Option<String>,
    pub phase: Option<String>,
    pub owner: Option<String>,
    pub limit: usize,
}

impl Filter {
    pub fn from_query(q: &str) -> Filter {
        let f = |k| param(q, k).filter(|v| !v.is_empty());
        Filter {
            queue: f("queue"),
            phase: f("phase"),
            owner: f("owner"),
            limit: f("limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(MAX_JOBS)
                .min(MAX_JOBS),
        }
    }

    fn keeps(&self, j: &Job) -> bool {
        let queue = j.metadata.queue.as_deref().unwrap_or(DEFAULT_QUEUE);
        self.queue.as_deref().is_none_or(|q| q == queue)
            && self
                .phase
                .as_deref()
                .is_none_or(|p| p.eq_ignore_ascii_case(&j.status.phase.to_string()))
            && self
                .owner
                .as_deref()
                .is_none_or(|o| j.metadata.owner.as_deref() == Some(o))
    }
}

/// One row of the job list.
fn job_row(j: &Job) -> Value {
    let nodes: std::collections::BTreeSet<&str> = j
        .status
        .tasks
        .iter()
        .filter_map(|t| t.node.as_deref())
        .collect();
    let gpus: f64 = j
        .spec
        .tasks
        .iter()
        .map(|t| t.resources.gpus * t.replicas as f64)
        .sum();
    json!({
        "name": j.metadata.name,
        "queue": j.metadata.queue.as_deref().unwrap_or(DEFAULT_QUEUE),
        "owner": j.metadata.owner,
        "phase": j.status.phase,
        "tasks": j.status.tasks.len(),
        "tasksRunning": j.status.tasks.iter().filter(|t| t.phase == TaskPhase::Running).count(),
        "gpus": gpus,
        "nodes": nodes,
        "attempt": j.status.attempt,
        "created": j.metadata.creation_timestamp_ms,
        "started": j.status.start_time_ms,
        "finished": j.status.completion_time_ms,
        "message": j.status.message,
        "labels": j.metadata.labels,
    })
}

/// The jobs `filter` keeps, newest first, at most `filter.limit`, with the
/// values the filters can take.
pub fn jobs(st: &State, filter: &Filter) -> Value {
    let mut all: Vec<&Job> = st.jobs.values().collect();
    all.sort_by_key(|j| std::cmp::Reverse(j.metadata.uid));
    let kept: Vec<&&Job> = all.iter().filter(|j| filter.keeps(j)).collect();
    let owners: std::collections::BTreeSet<&str> = all
        .iter()
        .filter_map(|j| j.metadata.owner.as_deref())
        .collect();
    let mut queues: std::collections::BTreeSet<&str> =
        st.queues.keys().map(String::as_str).collect();
    queues.insert(DEFAULT_QUEUE);
    json!({
        "total": kept.len(),
        "jobs": kept.iter().take(filter.limit).map(|j| job_row(j)).collect::<Vec<_>>(),
        "owners": owners,
        "queues": queues,
        "phases": crate::state::JOB_PHASES.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
    })
}

/// One job as `gpuctl get job NAME -o json` shows it, with why it waits.
fn job(api: &Api, name: &str) -> Option<Value> {
    let mut j = api.raft.shared.read().jobs.get(name)?.clone();
    if j.status.phase == JobPhase::Pending {
        j.status.waiting = api.waiting_reason(name);
    }
    serde_json::to_value(&j).ok()
}

/// A task's log so far (the last MiB), read from its node as `gpuctl logs`
/// does; a plain-text error saying why when the node cannot be reached.
async fn logs(api: &Api, who: &Session, name: &str, query: &str) -> Response<Body> {
    let task_index = match param(query, "task").map(|t| t.parse::<u32>()) {
        None => 0,
        Some(Ok(t)) => t,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "task: expected a task index (0, 1, ...)",
            )
        }
    };
    let mut req = tonic::Request::new(pb::LogsRequest {
        job: name.to_string(),
        task_index,
        attempt: 0,
        follow: false,
    });
    *req.metadata_mut() = who.metadata();
    let read = async {
        let mut stream = Control::logs(api, req).await?.into_inner();
        let mut out: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?.data);
            if out.len() > 2 * MAX_LOG {
                out.drain(..out.len() - MAX_LOG);
            }
        }
        Ok::<_, tonic::Status>(out)
    };
    match tokio::time::timeout(LOG_TIMEOUT, read).await {
        Ok(Ok(mut out)) => {
            if out.len() > MAX_LOG {
                out.drain(..out.len() - MAX_LOG);
            }
            respond(StatusCode::OK, "text/plain; charset=utf-8", out)
        }
        Ok(Err(s)) => error(StatusCode::BAD_GATEWAY, s.message().to_string()),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the log of job {name:?} task {task_index} did not arrive within {LOG_TIMEOUT:?}"
            ),
        ),
    }
}

/// Every workflow with its phase and progress, newest first.
pub fn workflows(st: &State) -> Value {
    let mut all: Vec<_> = st.workflows.values().collect();
    all.sort_by_key(|w| std::cmp::Reverse(w.metadata.uid));
    Value::Array(
        all.into_iter()
            .map(|w| {
                let s = w.run.status();
                let (done, total) = w.progress();
                json!({
                    "name": w.metadata.name,
                    "owner": w.metadata.owner,
                    "queue": w.metadata.queue.as_deref().unwrap_or(DEFAULT_QUEUE),
                    "phase": s.phase,
                    "progress": format!("{done}/{total}"),
                    "started": s.started_ms,
                    "finished": s.finished_ms,
                    "message": s.message,
                })
            })
            .collect(),
    )
}

/// Endpoints with their replicas (API key hashes left out), each with its
/// figures over time (`history`, see [`EndpointHistory::to_json`]) and its
/// scale events as chart marks (`marks`: `[ms, "coldStart" | "scale",
/// message]`), and this replica's clock (`now`, ms) for the charts' end.
pub fn endpoints(st: &State, history: &EndpointHistory, now_ms: u64) -> Value {
    let cold = gpuctl_common::autoscaler::Reason::ColdStart.to_string();
    Value::Array(
        st.endpoint_views()
            .into_iter()
            .map(|mut e| {
                e.status.api_key_hashes.clear();
                let marks: Vec<Value> = e
                    .status
                    .events
                    .iter()
                    .filter(|ev| ev.reason == "Scaled")
                    .map(|ev| {
                        let kind = if ev.message.ends_with(&cold) {
                            "coldStart"
                        } else {
                            "scale"
                        };
                        json!([ev.time_ms, kind, ev.message])
                    })
                    .collect();
                let ready = e
                    .status
                    .replicas
                    .iter()
                    .filter(|r| r.phase == Some(TaskPhase::Running) && !r.draining())
                    .count();
                let mut v = serde_json::to_value(&e).unwrap_or_default();
                v["ready"] = json!(ready);
                v["history"] = history.to_json(&e.metadata.name);
                v["marks"] = Value::Array(marks);
                v["now"] = json!(now_ms);
                v
            })
            .collect(),
    )
}

/// This replica's view of the control plane.
fn control(api: &Api) -> Value {
    let s = api.raft.shared.status();
    let members = api.raft.shared.members.borrow().clone();
    json!({
        "id": s.id,
        "leader": s.leader_id,
        "term": s.term,
        "commit": s.commit,
        "applied": s.applied,
        "role": s.role,
        "voters": s.voters,
        "members": members.into_iter().map(|(id, url)| json!({"id": id, "url": api.peers.url(&url)})).collect::<Vec<_>>(),
        "progress": s.progress.iter().map(|p| json!({
            "id": p.id, "matched": p.matched, "next": p.next_index,
            "state": p.state, "recentActive": p.recent_active,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_filter_reads_the_query() {
        let f = Filter::from_query("queue=research&phase=running&owner=&limit=5");
        assert_eq!(
            f,
            Filter {
                queue: Some("research".into()),
                phase: Some("running".into()),
                owner: None,
                limit: 5,
            }
        );
        assert_eq!(Filter::from_query("limit=999999").limit, MAX_JOBS);
    }
}
