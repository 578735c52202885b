//! What `get` and `describe` print. Pure functions of the objects and `now`,
//! so the tests pin the output exactly.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use gpuctl_common::api::{format_bytes, Event, Job, Node, NodePhase, TaskPhase, TaskSpec};
use gpuctl_common::queue::Queue;

/// Lay out rows under a header in columns separated by three spaces, the way
/// kubectl does. The last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            if i + 1 < cols {
                let _ = write!(l, "{c:<w$}   ", w = width[i]);
            } else {
                l.push_str(c);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// GPUs as users write them: `2`, `0.5`, `1.25`.
pub fn format_gpus(g: f64) -> String {
    if g.fract() == 0.0 {
        format!("{}", g as i64)
    } else {
        let s = format!("{g:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn format_milli(m: u64) -> String {
    format_gpus(m as f64 / 1000.0)
}

/// Bytes for reading: `80Gi`, `23.5Gi`, `512Mi`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (u, m) in UNITS {
        if b >= m {
            return if b & (m - 1) == 0 {
                format!("{}{u}", b / m)
            } else {
                format!("{:.1}{u}", b as f64 / m as f64)
            };
        }
    }
    format!("{b}")
}

/// Age like kubectl: `45s`, `3m20s`, `25m`, `5h10m`, `30h`, `3d4h`, `20d`.
pub fn format_age(from_ms: Option<u64>, now_ms: u64) -> String {
    let Some(from) = from_ms.filter(|&t| t > 0) else {
        return "<unknown>".into();
    };
    let s = now_ms.saturating_sub(from) / 1000;
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        format!("{m}m{}s", s % 60)
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if d < 2 {
        format!("{h}h")
    } else if d < 8 {
        format!("{d}d{}h", h % 24)
    } else {
        format!("{d}d")
    }
}

pub use gpuctl_common::format_time;

fn time_and_age(ms: Option<u64>, now_ms: u64) -> String {
    match ms.filter(|&t| t > 0) {
        None => "-".into(),
        Some(t) => format!("{} ({} ago)", format_time(t), format_age(Some(t), now_ms)),
    }
}

/// Total GPUs a job asks for across all its tasks.
pub fn job_gpus(job: &Job) -> f64 {
    job.gpu_milli_requested() as f64 / 1000.0
}

/// `gpuctl get jobs`.
pub fn jobs_table(jobs: &[Job], now_ms: u64) -> String {
    // IMAGE only when some job runs in one (a workflow step's `image`).
    let with_image = jobs
        .iter()
        .any(|j| j.spec.tasks.iter().any(|t| t.image.is_some()));
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let running = j
                .status
                .tasks
                .iter()
                .filter(|t| t.phase == TaskPhase::Running)
                .count();
            let mut row = vec![
                j.metadata.name.clone(),
                j.metadata.queue.clone().unwrap_or_else(|| "default".into()),
                j.status.phase.to_string(),
                format!("{running}/{}", j.task_count()),
                format_gpus(job_gpus(j)),
                j.status.attempt.to_string(),
            ];
            if with_image {
                let images: Vec<&str> = j
                    .spec
                    .tasks
                    .iter()
                    .filter_map(|t| t.image.as_deref())
                    .collect();
                row.push(if images.is_empty() {
                    "-".into()
                } else {
                    images.join(",")
                });
            }
            row.push(format_age(j.metadata.creation_timestamp_ms, now_ms));
            row
        })
        .collect();
    let mut headers = vec!["NAME", "QUEUE", "PHASE", "TASKS", "GPUS", "ATTEMPT"];
    if with_image {
        headers.push("IMAGE");
    }
    headers.push("AGE");
    table(&headers, &rows)
}

/// `Ready`, `Lost`, with `,SchedulingDisabled` when cordoned.
pub fn node_status(n: &Node) -> String {
    let phase = match n.status.phase {
        NodePhase::Ready => "Ready",
        NodePhase::Lost => "Lost",
    };
    if n.spec.unschedulable {
        format!("{phase},SchedulingDisabled")
    } else {
        phase.to_string()
    }
}

/// One task's hold on one GPU of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuUse {
    pub job: String,
    pub task: u32,
    pub milli: u32,
}

/// GPU index → the tasks that hold it, for one node, from the jobs' tasks
/// that are bound or running there.
pub fn gpu_usage(node: &str, jobs: &[Job]) -> BTreeMap<u32, Vec<GpuUse>> {
    let mut m: BTreeMap<u32, Vec<GpuUse>> = BTreeMap::new();
    for j in jobs {
        for t in &j.status.tasks {
            if t.node.as_deref() != Some(node) || !t.phase.holds_resources() {
                continue;
            }
            for g in &t.gpus {
                m.entry(g.index).or_default().push(GpuUse {
                    job: j.metadata.name.clone(),
                    task: t.index,
                    milli: g.milli,
                });
            }
        }
    }
    m
}

/// GPUs allocated on a node in thousandths (fractional shares summed).
pub fn allocated_milli(node: &str, jobs: &[Job]) -> u64 {
    gpu_usage(node, jobs)
        .values()
        .flatten()
        .map(|u| u64::from(u.milli))
        .sum()
}

/// `8xA100-80GB` or `4xA100-80GB,4xH100-80GB`.
pub fn node_models(n: &Node) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for g in &n.status.gpus {
        *counts.entry(g.model.as_str()).or_default() += 1;
    }
    if counts.is_empty() {
        return "-".into();
    }
    counts
        .iter()
        .map(|(m, c)| format!("{c}x{m}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn node_created(n: &Node) -> Option<u64> {
    n.metadata
        .creation_timestamp_ms
        .or(Some(n.status.registered_ms))
}

/// `gpuctl get nodes`; `jobs` give the allocation.
pub fn nodes_table(nodes: &[Node], jobs: &[Job], now_ms: u64) -> String {
    // A REASON column only when some node was cordoned with one.
    let reasons = nodes.iter().any(|n| n.spec.cordon_reason.is_some());
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let alloc = allocated_milli(&n.metadata.name, jobs);
            let mut row = vec![
                n.metadata.name.clone(),
                node_status(n),
                format!("{}/{}", format_milli(alloc), n.status.gpus.len()),
                node_models(n),
                n.status.inventory.clone(),
                format_age(node_created(n), now_ms),
            ];
            if reasons {
                row.push(n.spec.cordon_reason.clone().unwrap_or_else(|| "-".into()));
            }
            row
        })
        .collect();
    let mut header = vec!["NAME", "STATUS", "GPUS", "MODELS", "INVENTORY", "AGE"];
    if reasons {
        header.push("REASON");
    }
    table(&header, &rows)
}

/// Quote a command for display so it can be pasted into a shell.
pub fn shell_join(cmd: &[String]) -> String {
    cmd.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn resources_line(t: &TaskSpec) -> String {
    let r = &t.resources;
    let mut parts = vec![format!("gpus={}", format_gpus(r.gpus))];
    if let Some(m) = &r.gpu_model {
        parts.push(format!("gpuModel={m}"));
    }
    if let Some(m) = &r.gpu_memory {
        parts.push(format!("gpuMemory={}", format_bytes(m.0)));
    }
    if let Some(c) = &r.cpu {
        parts.push(format!("cpu={}", format_gpus(c.0 as f64 / 1000.0)));
    }
    if let Some(m) = &r.memory {
        parts.push(format!("memory={}", format_bytes(m.0)));
    }
    parts.join(" ")
}

pub(crate) fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}\n"))
        .collect::<String>()
}

fn gpu_list(gpus: &[gpuctl_common::api::GpuShare]) -> String {
    if gpus.is_empty() {
        return "-".into();
    }
    gpus.iter()
        .map(|g| {
            if g.milli >= 1000 {
                g.index.to_string()
            } else {
                format!("{}({})", g.index, format_milli(u64::from(g.milli)))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `gpuctl describe job NAME`.
pub fn describe_job(j: &Job, now_ms: u64) -> String {
    let s = &j.status;
    let mut o = String::new();
    let mut kv = |k: &str, v: String| {
        let _ = writeln!(o, "{:<14}{v}", format!("{k}:"));
    };
    kv("Name", j.metadata.name.clone());
    if let Some(owner) = &j.metadata.owner {
        kv("Owner", owner.clone());
    }
    kv(
        "Queue",
        j.metadata.queue.clone().unwrap_or_else(|| "default".into()),
    );
    kv("Priority", j.spec.priority.to_string());
    kv("Phase", s.phase.to_string());
    kv(
        "Attempt",
        format!("{} (maxRetries {})", s.attempt, j.spec.max_retries),
    );
    kv(
        "Created",
        time_and_age(j.metadata.creation_timestamp_ms, now_ms),
    );
    kv("Started", time_and_age(s.start_time_ms, now_ms));
    kv("Completed", time_and_age(s.completion_time_ms, now_ms));
    if let Some(t) = j.spec.timeout_seconds {
        kv("Timeout", format!("{t}s"));
    }
    if let Some(t) = j.spec.ttl_seconds_after_finished {
        let when = match s.completion_time_ms {
            Some(done) => format!(
                "{t}s after it finished (in {})",
                format_age(Some(now_ms), done.saturating_add(t.saturating_mul(1000)))
            ),
            None => format!("{t}s after it finishes"),
        };
        kv("Deleted", when);
    }
    if let Some(m) = j.spec.min_available {
        kv("MinAvailable", m.to_string());
    }
    kv("Tasks", j.task_count().to_string());
    kv("GPUs", format_gpus(job_gpus(j)));
    kv("Message", s.message.clone().unwrap_or_else(|| "-".into()));
    if let Some(w) = &s.waiting {
        kv("Waiting", w.clone());
    }
    if !j.metadata.labels.is_empty() {
        kv("Labels", labels_line(&j.metadata.labels));
    }
    task_groups(&mut o, &j.spec.tasks);
    // CPU time and peak memory, once a node with cgroups reported them.
    let with_usage = s.tasks.iter().any(|t| t.usage.is_some());
    let rows: Vec<Vec<String>> = s
        .tasks
        .iter()
        .map(|t| {
            let mut row = vec![
                t.index.to_string(),
                t.group.clone(),
                t.phase.to_string(),
                t.node.clone().unwrap_or_else(|| "-".into()),
                gpu_list(&t.gpus),
                t.exit_code.map_or("-".into(), |c| c.to_string()),
            ];
            if with_usage {
                row.push(
                    t.usage
                        .map_or("-".into(), |u| format!("{:.1}s", u.cpu_ms as f64 / 1000.0)),
                );
                row.push(match t.usage {
                    Some(u) if u.memory_peak_bytes > 0 => human_bytes(u.memory_peak_bytes),
                    _ => "-".into(),
                });
            }
            row.push(t.message.clone().unwrap_or_else(|| "-".into()));
            row
        })
        .collect();
    let mut headers = vec!["INDEX", "GROUP", "PHASE", "NODE", "GPUS", "EXIT"];
    if with_usage {
        headers.extend(["CPU", "MEM PEAK"]);
    }
    headers.push("MESSAGE");
    push_section(&mut o, "Tasks", &headers, &rows);
    push_events(&mut o, &s.events, now_ms);
    o
}

/// The `Events:` section of `describe`: newest last, with their age.
pub fn push_events(o: &mut String, events: &[Event], now_ms: u64) {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                format!("{} ago", format_age(Some(e.time_ms), now_ms)),
                e.reason.clone(),
                e.message.clone(),
            ]
        })
        .collect();
    push_section(o, "Events", &["AGE", "REASON", "MESSAGE"], &rows);
}

/// `Title:` and the table below it, indented, or `<none>`.
fn push_section(o: &mut String, title: &str, header: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(o, "{title}:");
    if rows.is_empty() {
        o.push_str("  <none>\n");
    } else {
        o.push_str(&indent(&table(header, rows), "  "));
    }
}

fn labels_line(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A job's task groups as `describe job` lists them: the spec, not the tasks.
fn task_groups(o: &mut String, tasks: &[TaskSpec]) {
    o.push_str("Task groups:\n");
    for t in tasks {
        let _ = writeln!(o, "  {}:", t.name);
        let _ = writeln!(o, "    Replicas:   {}", t.replicas);
        if let Some(image) = &t.image {
            let _ = writeln!(o, "    Image:      {image}");
        }
        let _ = writeln!(o, "    Command:    {}", shell_join(&t.command));
        let _ = writeln!(o, "    Resources:  {}", resources_line(t));
        if let Some(w) = &t.working_dir {
            let _ = writeln!(o, "    WorkingDir: {w}");
        }
        if !t.env.is_empty() {
            o.push_str("    Env:\n");
            for (k, v) in &t.env {
                let _ = writeln!(o, "      {k}={v}");
            }
        }
    }
}

/// `gpuctl describe node NAME`; `jobs` give what runs on it.
pub fn describe_node(n: &Node, jobs: &[Job], now_ms: u64) -> String {
    let name = &n.metadata.name;
    let st = &n.status;
    let usage = gpu_usage(name, jobs);
    let mut o = String::new();
    let mut kv = |k: &str, v: String| {
        let _ = writeln!(o, "{:<14}{v}", format!("{k}:"));
    };
    kv("Name", name.clone());
    kv("Status", node_status(n));
    if let Some(r) = &n.spec.cordon_reason {
        kv("Cordoned", r.clone());
    }
    kv("Address", st.address.clone());
    kv("Agent", st.agent_endpoint.clone());
    kv("Inventory", st.inventory.clone());
    kv("Registered", time_and_age(Some(st.registered_ms), now_ms));
    kv(
        "Last change",
        time_and_age(Some(st.last_transition_ms), now_ms),
    );
    if !n.metadata.labels.is_empty() {
        kv("Labels", labels_line(&n.metadata.labels));
    }
    let alloc: u64 = usage.values().flatten().map(|u| u64::from(u.milli)).sum();
    o.push_str("Capacity:\n");
    let _ = writeln!(o, "  cpu:     {}", format_milli(st.cpu_milli));
    let _ = writeln!(o, "  memory:  {}", human_bytes(st.memory_bytes));
    let _ = writeln!(
        o,
        "  gpus:    {} ({} allocated)",
        st.gpus.len(),
        format_milli(alloc)
    );
    let rows: Vec<Vec<String>> = st
        .gpus
        .iter()
        .map(|g| {
            vec![
                g.index.to_string(),
                g.model.clone(),
                human_bytes(g.memory_bytes),
                g.uuid.clone(),
                match (g.healthy, g.xid) {
                    (true, _) => "yes".into(),
                    (false, 0) => "no".into(),
                    (false, x) => format!("no ({})", gpuctl_common::xid::describe(x)),
                },
                allocated_to(usage.get(&g.index)),
            ]
        })
        .collect();
    push_section(
        &mut o,
        "GPUs",
        &[
            "INDEX",
            "MODEL",
            "MEMORY",
            "UUID",
            "HEALTHY",
            "ALLOCATED-TO",
        ],
        &rows,
    );
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .flat_map(|j| {
            j.status
                .tasks
                .iter()
                .filter(|t| t.node.as_deref() == Some(name.as_str()) && t.phase.holds_resources())
                .map(move |t| {
                    vec![
                        j.metadata.name.clone(),
                        t.index.to_string(),
                        t.phase.to_string(),
                        gpu_list(&t.gpus),
                        format_age(t.start_time_ms, now_ms),
                    ]
                })
        })
        .collect();
    push_section(
        &mut o,
        "Tasks",
        &["JOB", "TASK", "PHASE", "GPUS", "AGE"],
        &rows,
    );
    push_events(&mut o, &st.events, now_ms);
    o
}

/// Who holds one GPU: `job/task`, with the share when it is part of one.
fn allocated_to(uses: Option<&Vec<GpuUse>>) -> String {
    uses.map_or("-".into(), |us| {
        us.iter()
            .map(|u| {
                if u.milli >= 1000 {
                    format!("{}/{}", u.job, u.task)
                } else {
                    format!("{}/{}({})", u.job, u.task, format_milli(u64::from(u.milli)))
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    })
}

fn queue_quota(q: &Queue) -> String {
    q.spec.gpu_quota.map_or("-".into(), format_gpus)
}

/// `gpuctl get queues`.
pub fn queues_table(queues: &[Queue], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            let st = q.status.clone().unwrap_or_default();
            vec![
                q.metadata.name.clone(),
                queue_quota(q),
                format_gpus(st.gpus_in_use),
                q.spec.weight.to_string(),
                if q.spec.borrow { "yes" } else { "no" }.into(),
                st.running_jobs.to_string(),
                st.pending_jobs.to_string(),
                q.metadata
                    .resource_version
                    .map_or("-".into(), |v| v.to_string()),
                format_age(q.metadata.creation_timestamp_ms, now_ms),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "QUOTA", "IN-USE", "WEIGHT", "BORROW", "RUNNING", "PENDING", "VERSION", "AGE",
        ],
        &rows,
    )
}

/// `gpuctl describe queue NAME`; `jobs` list what the queue holds and waits for.
pub fn describe_queue(q: &Queue, jobs: &[Job], now_ms: u64) -> String {
    let st = q.status.clone().unwrap_or_default();
    let mut o = String::new();
    let mut kv = |k: &str, v: String| {
        let _ = writeln!(o, "{:<18}{v}", format!("{k}:"));
    };
    kv("Name", q.metadata.name.clone());
    kv(
        "GPU quota",
        q.spec
            .gpu_quota
            .map_or("none (no limit)".into(), format_gpus),
    );
    kv("GPUs in use", format_gpus(st.gpus_in_use));
    kv("Weight", q.spec.weight.to_string());
    kv("Borrow", q.spec.borrow.to_string());
    kv("Preemptible", q.spec.preemptible.to_string());
    if q.spec.teams.is_empty() && q.spec.users.is_empty() {
        kv("Open to", "every user".into());
    } else {
        let mut who = Vec::new();
        if !q.spec.teams.is_empty() {
            who.push(format!("teams {}", q.spec.teams.join(", ")));
        }
        if !q.spec.users.is_empty() {
            who.push(format!("users {}", q.spec.users.join(", ")));
        }
        kv("Open to", who.join("; "));
    }
    kv(
        "ResourceVersion",
        q.metadata
            .resource_version
            .map_or("-".into(), |v| v.to_string()),
    );
    kv(
        "Created",
        time_and_age(q.metadata.creation_timestamp_ms, now_ms),
    );
    let mine: Vec<Job> = jobs
        .iter()
        .filter(|j| j.metadata.queue.as_deref().unwrap_or("default") == q.metadata.name)
        .filter(|j| !j.status.phase.is_terminal())
        .cloned()
        .collect();
    o.push_str("Jobs:\n");
    if mine.is_empty() {
        o.push_str("  <none>\n");
    } else {
        for line in jobs_table(&mine, now_ms).lines() {
            let _ = writeln!(o, "  {line}");
        }
    }
    o
}

#[cfg(test)]
mod tests;
