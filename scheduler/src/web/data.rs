//! The UI's JSON API, read from this replica's applied state:
//!
//! ```text
//!  GET /api/session              who the browser is, and this replica
//!  GET /api/cluster              nodes with each GPU's use and health, queues,
//!                                GPUs allocated over the last hour
//!  GET /api/jobs?queue=&phase=&owner=&limit=   jobs, newest first
//!  GET /api/jobs/NAME            one job (tasks, nodes, GPUs, events)
//!  GET /api/jobs/NAME/logs?task=N   a task's log so far (text)
//!  GET /api/workflows            workflows with their phase and progress
//!  GET /api/workflows/NAME       one workflow, and its DAG laid out (graph.rs)
//!  GET /api/endpoints            endpoints with replicas ready/desired
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
        ["jobs", name] => match job(&api.raft.shared.read(), &super::url_decode(name)) {
            Some(v) => ok(v),
            None => error(StatusCode::NOT_FOUND, format!("job {name:?} not found")),
        },
        ["jobs", name, "logs"] => logs(api, who, &super::url_decode(name), query).await,
        ["workflows"] => ok(workflows(&api.raft.shared.read())),
        ["workflows", name] => {
            let name = super::url_decode(name);
            let st = api.raft.shared.read();
            match st.workflows.get(&name) {
                Some(w) => ok(json!({
                    "workflow": w.view(),
                    "graph": super::graph::layout(w.run.workflow(), &w.run.status(), &w.jobs),
                })),
                None => error(StatusCode::NOT_FOUND, format!("workflow {name:?} not found")),
            }
        }
        ["endpoints"] => ok(endpoints(&api.raft.shared.read())),
        ["control"] => ok(control(api)),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such API path /api/{path}: see /api/session, cluster, jobs, workflows, endpoints, control"),
        ),
    }
}

/// Nodes (each GPU with its use, health and the jobs on it), queues and
/// totals.
pub fn cluster(st: &State) -> Value {
    let mut on_gpu: BTreeMap<(&str, u32), Vec<Value>> = BTreeMap::new();
    let mut on_node: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for j in st.jobs.values() {
        for t in &j.status.tasks {
            let Some(node) = t.node.as_deref() else {
                continue;
            };
            if !t.phase.holds_resources() {
                continue;
            }
            on_node.entry(node).or_default().insert(&j.metadata.name);
            for g in &t.gpus {
                on_gpu.entry((node, g.index)).or_default().push(json!({
                    "job": j.metadata.name,
                    "task": t.index,
                    "milli": g.milli,
                }));
            }
        }
    }
    let nodes: Vec<Value> = st
        .nodes
        .values()
        .map(|n| {
            let name = n.metadata.name.as_str();
            let usage = st.usage(name);
            let gpus: Vec<Value> = n
                .status
                .gpus
                .iter()
                .map(|g| {
                    json!({
                        "index": g.index,
                        "model": g.model,
                        "memoryBytes": g.memory_bytes,
                        "healthy": g.healthy,
                        "xid": g.xid,
                        "usedMilli": usage.gpu_milli.get(&g.index).copied().unwrap_or(0),
                        "tasks": on_gpu.remove(&(name, g.index)).unwrap_or_default(),
                    })
                })
                .collect();
            json!({
                "name": name,
                "phase": n.status.phase,
                "cordoned": n.spec.unschedulable,
                "inventory": n.status.inventory,
                "cpuMilli": n.status.cpu_milli,
                "cpuUsedMilli": usage.cpu_milli,
                "memoryBytes": n.status.memory_bytes,
                "memoryUsedBytes": usage.memory_bytes,
                "gpus": gpus,
                "jobs": on_node.remove(name).unwrap_or_default(),
                "events": n.status.events.iter().rev().take(5).collect::<Vec<_>>(),
            })
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
fn job(st: &State, name: &str) -> Option<Value> {
    let mut j = st.jobs.get(name)?.clone();
    if j.status.phase == JobPhase::Pending {
        let round = crate::placement::plan_round(st);
        j.status.waiting = crate::placement::waiting_reason(st, &round, name);
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

/// Endpoints with their replicas (API key hashes left out).
pub fn endpoints(st: &State) -> Value {
    Value::Array(
        st.endpoint_views()
            .into_iter()
            .map(|mut e| {
                e.status.api_key_hashes.clear();
                let ready = e
                    .status
                    .replicas
                    .iter()
                    .filter(|r| r.phase == Some(TaskPhase::Running) && !r.draining())
                    .count();
                let mut v = serde_json::to_value(&e).unwrap_or_default();
                v["ready"] = json!(ready);
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
