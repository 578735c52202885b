// gpuctl's web UI: hash routes (#/cluster, #/jobs, #/jobs/NAME, #/workflows,
// #/workflows/NAME, #/endpoints, #/control), each view read from /api/* and
// drawn again when /api/events says the state changed. No dependencies.
"use strict";

const main = document.getElementById("main");

// h("td", {class: "x"}, "text", child...): an element.
function h(tag, attrs, ...kids) {
  const svg = ["svg", "g", "rect", "text", "path", "title"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return el;
}

const badge = (phase, extra) => h("span", { class: "badge p-" + phase + (extra ? " " + extra : "") }, phase);

function ago(ms) {
  if (!ms) return "";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m ago";
  if (s < 86400) return Math.floor(s / 3600) + "h ago";
  return new Date(ms).toISOString().slice(0, 16).replace("T", " ");
}

function when(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "";
}

function gib(b) {
  return (b / 2 ** 30).toFixed(0) + " GiB";
}

async function api(path) {
  const r = await fetch("/api/" + path, { credentials: "same-origin" });
  if (r.status === 401) {
    location.href = "/login";
    throw new Error("signed out");
  }
  const text = await r.text();
  if (!r.ok) {
    let msg = text;
    try { msg = JSON.parse(text).error; } catch (_) { /* plain text */ }
    throw new Error(msg);
  }
  return (r.headers.get("content-type") || "").startsWith("application/json") ? JSON.parse(text) : text;
}

// The route: view, name, and the query after "?".
function route() {
  const [path, q] = (location.hash.slice(1) || "/cluster").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { view: parts[0] || "cluster", name: parts[1], query: new URLSearchParams(q || "") };
}

function setQuery(key, value) {
  const r = route();
  if (value) r.query.set(key, value); else r.query.delete(key);
  const base = "#/" + r.view + (r.name ? "/" + encodeURIComponent(r.name) : "");
  const q = r.query.toString();
  location.hash = base + (q ? "?" + q : "");
}

// ---- Cluster ----

function gpuCell(node, g) {
  const used = g.usedMilli || 0;
  let cls = "gpu";
  if (!g.healthy) cls += " unhealthy";
  else if (used >= 1000) cls += " whole";
  else if (used > 0) cls += " shared";
  if (node.phase !== "Ready") cls += " lost";
  const jobs = (g.tasks || []).map((t) => t.job + "[" + t.task + "] " + t.milli / 1000).join(", ");
  const tip = "GPU " + g.index + " · " + g.model + " · " + gib(g.memoryBytes) +
    (g.healthy ? "" : " · unhealthy" + (g.xid ? " (XID " + g.xid + ")" : "")) +
    " · used " + used / 1000 + (jobs ? " · " + jobs : "");
  const label = !g.healthy ? (g.xid ? "XID " + g.xid : "bad") : used ? (used / 1000).toFixed(used % 1000 ? 2 : 0) : "free";
  return h("div", { class: cls, title: tip, "data-gpu": node.name + "/" + g.index, "data-used": used },
    h("div", null, "#" + g.index), h("div", null, label));
}

// A node's GPUs from the columns /api/cluster sends: models as runs
// [model, memoryBytes, count], and the used, unhealthy and tasks columns.
function gpusOf(n) {
  const c = n.gpus || {};
  const out = [];
  for (const [model, memoryBytes, count] of c.models || []) {
    for (let k = 0; k < count; k++) {
      const i = out.length;
      out.push({ index: c.index ? c.index[i] : i, model, memoryBytes, healthy: true, xid: 0,
        usedMilli: c.used ? c.used[i] : 0, tasks: [] });
    }
  }
  const at = new Map(out.map((g) => [g.index, g]));
  for (const [i, xid] of c.unhealthy || []) if (at.has(i)) { at.get(i).healthy = false; at.get(i).xid = xid; }
  for (const [i, job, task, milli] of c.tasks || []) if (at.has(i)) at.get(i).tasks.push({ job: n.jobs[job], task, milli });
  return out;
}

async function viewCluster() {
  const c = await api("cluster");
  const k = c.counts;
  const cards = h("div", { class: "cards" },
    h("div", { class: "card" }, h("b", null, k.nodesReady), "nodes ready"),
    h("div", { class: "card" }, h("b", null, k.nodesLost), "nodes lost"),
    h("div", { class: "card" }, h("b", { id: "gpus-allocated" }, k.gpusAllocated + " / " + k.gpusReady), "GPUs allocated"),
    h("div", { class: "card" }, h("b", null, k.jobsRunning), "jobs running"),
    h("div", { class: "card" }, h("b", null, k.jobsPending), "jobs pending"));
  const legend = h("div", { class: "legend" },
    h("span", null, h("span", { class: "gpu" }), " free"),
    h("span", null, h("span", { class: "gpu shared" }), " shared (fraction used)"),
    h("span", null, h("span", { class: "gpu whole" }), " whole"),
    h("span", null, h("span", { class: "gpu unhealthy" }), " unhealthy"));
  const nodes = h("table", { id: "nodes" },
    h("tr", null, h("th", null, "Node"), h("th", null, "Status"), h("th", null, "GPUs"),
      h("th", null, "CPU"), h("th", null, "Memory"), h("th", null, "Jobs")),
    c.nodes.map((n) => h("tr", { "data-node": n.name },
      h("td", null, h("b", null, n.name), h("div", { class: "muted" }, n.inventory)),
      h("td", null, badge(n.phase), " ", n.cordoned ? h("span", { class: "badge cordoned", "data-cordoned": "1" }, "cordoned") : null),
      h("td", null, h("div", { class: "gpus" }, gpusOf(n).map((g) => gpuCell(n, g)))),
      h("td", { class: "num" }, (n.cpu[0] / 1000).toFixed(1) + " / " + (n.cpu[1] / 1000).toFixed(0)),
      h("td", { class: "num" }, gib(n.memory[0]) + " / " + gib(n.memory[1])),
      h("td", null, (n.jobs || []).map((j) => h("div", null, h("a", { href: "#/jobs/" + encodeURIComponent(j) }, j)))))));
  const queues = h("table", { id: "queues" },
    h("tr", null, h("th", null, "Queue"), h("th", { class: "num" }, "Quota"), h("th", { class: "num" }, "Weight"),
      h("th", { class: "num" }, "Fair share"), h("th", { class: "num" }, "In use"), h("th", null, ""),
      h("th", { class: "num" }, "Running"), h("th", { class: "num" }, "Pending")),
    c.queues.map((q) => {
      const cap = q.gpuQuota || q.fairShareGpus || 1;
      const pct = Math.min(100, Math.round((100 * q.gpusInUse) / cap));
      const bar = h("span");
      bar.style.width = pct + "%";
      return h("tr", { "data-queue": q.name },
        h("td", null, h("a", { href: "#/jobs?queue=" + encodeURIComponent(q.name) }, q.name)),
        h("td", { class: "num" }, q.gpuQuota === null ? "none" : q.gpuQuota),
        h("td", { class: "num" }, q.weight), h("td", { class: "num" }, q.fairShareGpus),
        h("td", { class: "num" }, q.gpusInUse), h("td", null, h("div", { class: "bar" }, bar)),
        h("td", { class: "num" }, q.runningJobs), h("td", { class: "num" }, q.pendingJobs));
    }));
  return [h("h1", null, "Cluster"), cards, chart(c.history), h("h2", null, "Nodes"), legend, nodes, h("h2", null, "Queues"), queues];
}

// ---- Jobs ----

function select(key, label, values, current) {
  return h("label", null, label + " ",
    h("select", { "data-filter": key, onchange: (e) => setQuery(key, e.target.value) },
      h("option", { value: "" }, "all"),
      values.map((v) => h("option", { value: v, selected: v === current }, v))));
}

async function viewJobs(r) {
  const q = new URLSearchParams();
  for (const k of ["queue", "phase", "owner"]) if (r.query.get(k)) q.set(k, r.query.get(k));
  const d = await api("jobs?" + q.toString());
  const filters = h("div", { class: "filters" },
    select("queue", "Queue", d.queues, r.query.get("queue")),
    select("phase", "Phase", d.phases, r.query.get("phase")),
    select("owner", "Owner", d.owners, r.query.get("owner")),
    h("span", { class: "muted" }, d.total + " job(s)" + (d.total > d.jobs.length ? ", newest " + d.jobs.length + " shown" : "")));
  const rows = d.jobs.map((j) => h("tr", { "data-job": j.name, "data-phase": j.phase },
    h("td", null, h("a", { href: "#/jobs/" + encodeURIComponent(j.name) }, j.name)),
    h("td", null, badge(j.phase)), h("td", null, j.queue), h("td", null, j.owner || ""),
    h("td", { class: "num" }, j.tasksRunning + "/" + j.tasks), h("td", { class: "num" }, j.gpus),
    h("td", null, j.nodes.join(", ")), h("td", null, ago(j.created)),
    h("td", { class: "muted" }, j.message || "")));
  const table = h("table", { id: "jobs" },
    h("tr", null, h("th", null, "Job"), h("th", null, "Phase"), h("th", null, "Queue"), h("th", null, "Owner"),
      h("th", { class: "num" }, "Tasks running"), h("th", { class: "num" }, "GPUs"), h("th", null, "Nodes"),
      h("th", null, "Created"), h("th", null, "Message")), rows);
  return [h("h1", null, "Jobs"), filters, table];
}

async function viewJob(r) {
  const j = await api("jobs/" + encodeURIComponent(r.name));
  const s = j.status;
  const logTask = r.query.get("log");
  const tasks = h("table", { id: "tasks" },
    h("tr", null, h("th", null, "Task"), h("th", null, "Group"), h("th", null, "Phase"), h("th", null, "Node"),
      h("th", null, "GPUs"), h("th", null, "Exit"), h("th", null, "Started"), h("th", null, "Finished"),
      h("th", null, "Message"), h("th", null, "")),
    (s.tasks || []).map((t) => h("tr", { "data-task": t.index, "data-phase": t.phase },
      h("td", null, t.index), h("td", null, t.group), h("td", null, badge(t.phase)), h("td", null, t.node || ""),
      h("td", null, (t.gpus || []).map((g) => "#" + g.index + (g.milli < 1000 ? " (" + g.milli / 1000 + ")" : "")).join(", ")),
      h("td", null, t.exitCode === undefined || t.exitCode === null ? "" : t.exitCode),
      h("td", null, when(t.startTimeMs)), h("td", null, when(t.finishTimeMs)),
      h("td", { class: "muted" }, t.message || ""),
      h("td", null, h("a", { href: "#", "data-log": t.index, onclick: (e) => { e.preventDefault(); setQuery("log", String(t.index)); } }, "log")))));
  const events = h("table", { id: "events" },
    h("tr", null, h("th", null, "Time"), h("th", null, "Reason"), h("th", null, "Message")),
    (s.events || []).slice().reverse().map((e) => h("tr", null, h("td", null, when(e.timeMs)), h("td", null, e.reason), h("td", null, e.message))));
  const info = h("dl", null,
    h("dt", null, "Phase"), h("dd", { id: "job-phase", "data-phase": s.phase }, badge(s.phase)),
    h("dt", null, "Queue"), h("dd", null, j.metadata.queue || "default"),
    h("dt", null, "Owner"), h("dd", null, j.metadata.owner || ""),
    h("dt", null, "Attempt"), h("dd", null, s.attempt),
    h("dt", null, "Created"), h("dd", null, when(j.metadata.creationTimestampMs)),
    h("dt", null, "Started"), h("dd", null, when(s.startTimeMs)),
    h("dt", null, "Finished"), h("dd", null, when(s.completionTimeMs)),
    s.waiting ? [h("dt", null, "Waiting"), h("dd", null, s.waiting)] : null,
    s.message ? [h("dt", null, "Message"), h("dd", null, s.message)] : null);
  const out = [h("h1", null, "Job ", j.metadata.name), h("div", { class: "panel" }, info),
    h("h2", null, "Tasks"), tasks, h("h2", null, "Events"), events];
  if (logTask !== null) {
    out.push(h("h2", null, "Log of task " + logTask), streamedLog(r.name, logTask));
  }
  return out;
}

// ---- Workflows ----

async function viewWorkflows() {
  const ws = await api("workflows");
  return [h("h1", null, "Workflows"), h("table", { id: "workflows" },
    h("tr", null, h("th", null, "Workflow"), h("th", null, "Phase"), h("th", null, "Progress"), h("th", null, "Queue"),
      h("th", null, "Owner"), h("th", null, "Started"), h("th", null, "Message")),
    ws.map((w) => h("tr", { "data-workflow": w.name, "data-phase": w.phase },
      h("td", null, h("a", { href: "#/workflows/" + encodeURIComponent(w.name) }, w.name)),
      h("td", null, badge(w.phase)), h("td", null, w.progress), h("td", null, w.queue), h("td", null, w.owner || ""),
      h("td", null, ago(w.started)), h("td", { class: "muted" }, w.message || ""))))];
}

const BOX_W = 170, BOX_H = 40, GAP_X = 60, GAP_Y = 18, PAD = 16;

function dag(g, selected) {
  const rows = Math.max(1, ...g.steps.map((s) => s.row + 1));
  const width = PAD * 2 + g.layers * BOX_W + Math.max(0, g.layers - 1) * GAP_X;
  const height = PAD * 2 + rows * BOX_H + (rows - 1) * GAP_Y;
  const at = (s) => [PAD + s.layer * (BOX_W + GAP_X), PAD + s.row * (BOX_H + GAP_Y)];
  const edges = g.edges.map(([a, b]) => {
    const [x1, y1] = at(g.steps[a]);
    const [x2, y2] = at(g.steps[b]);
    const sx = x1 + BOX_W, sy = y1 + BOX_H / 2, ex = x2, ey = y2 + BOX_H / 2, mx = (sx + ex) / 2;
    return h("path", { d: `M${sx},${sy} C${mx},${sy} ${mx},${ey} ${ex},${ey}` });
  });
  const boxes = g.steps.map((s, i) => {
    const [x, y] = at(s);
    const label = s.name.length > 22 ? s.name.slice(0, 21) + "…" : s.name;
    return h("g", { class: "step" + (String(i) === selected ? " sel" : ""), "data-step": s.name, "data-phase": s.phase,
      onclick: () => setQuery("step", String(i)) },
      h("title", null, s.name + " · " + s.phase + (s.message ? " · " + s.message : "")),
      h("rect", { x, y, width: BOX_W, height: BOX_H, rx: 6, class: "f-" + s.phase }),
      h("text", { x: x + 10, y: y + 17 }, label),
      h("text", { x: x + 10, y: y + 32, "font-size": 10 }, s.phase + (s.memoized ? " · cached" : "")));
  });
  return h("svg", { class: "dag", id: "dag", width, height, viewBox: `0 0 ${width} ${height}` }, edges, boxes);
}

async function viewWorkflow(r) {
  const d = await api("workflows/" + encodeURIComponent(r.name));
  const w = d.workflow;
  const sel = r.query.get("step");
  const step = sel === null ? null : d.graph.steps[Number(sel)];
  const out = [h("h1", null, "Workflow ", w.metadata.name, " ", badge(w.status.phase)),
    h("p", { class: "muted" }, "progress " + w.status.progress + (w.status.message ? " · " + w.status.message : "")),
    h("div", { class: "split" }, dag(d.graph, sel), step ? stepPanel(step) : h("div", { class: "panel muted" }, "Click a step for its inputs, outputs and log."))];
  if (step && step.job) {
    out.push(h("h2", null, "Log of " + step.name), streamedLog(step.job, "0"));
  }
  return out;
}

// A task's log, streamed: /api/jobs/NAME/logs/stream follows it until the
// task ends. The element lives across redraws of its page (draw() closes the
// stream once a redraw no longer shows it); data-state is "streaming",
// "ended" or "error".
const MAX_LOG_CHARS = 1 << 20;
let logView = null;

function streamedLog(job, task) {
  const key = job + "/" + task;
  // The same log again: the same element (a log that could not be read, as
  // of a task not placed yet, is asked for again).
  if (logView && logView.key === key && logView.el.dataset.state !== "error") { logView.used = true; return logView.el; }
  closeLog();
  const el = h("pre", { class: "log", id: "log", "data-state": "streaming" });
  const es = new EventSource("/api/jobs/" + encodeURIComponent(job) + "/logs/stream?task=" + encodeURIComponent(task));
  logView = { key, el, es, used: true };
  let text = "";
  const show = () => {
    const atEnd = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
    el.textContent = text;
    if (atEnd) el.scrollTop = el.scrollHeight;
  };
  // The server sends the log from its start on every (re)connection.
  es.addEventListener("open", () => { text = ""; });
  es.addEventListener("log", (e) => {
    text += JSON.parse(e.data);
    if (text.length > MAX_LOG_CHARS) text = text.slice(text.length - MAX_LOG_CHARS);
    show();
  });
  es.addEventListener("end", () => {
    es.close();
    el.dataset.state = "ended";
    if (!text) { text = "(empty)"; show(); }
  });
  es.addEventListener("error", (e) => {
    if (e.data) {
      es.close();
      el.dataset.state = "error";
      text += (text ? "\n" : "") + "log not available: " + JSON.parse(e.data).error;
      show();
    }
  });
  es.addEventListener("unauthorized", () => { es.close(); location.href = "/login"; });
  return el;
}

function closeLog() {
  if (logView) { logView.es.close(); logView = null; }
}

function inputList(inputs) {
  const i = inputs || {};
  return [
    Object.entries(i.parameters || {}).map(([k, v]) => [h("dt", null, "in: " + k), h("dd", { "data-input": k }, h("code", null, v))]),
    Object.values(i.artifacts || {}).map((a) => [h("dt", null, "in artifact"),
      h("dd", { "data-input-artifact": a.name }, a.name, " ← ", h("code", null, a.from.step + "/" + a.from.name),
        a.path ? [" at ", h("code", null, a.path)] : null)]),
  ];
}

function stepPanel(s) {
  const o = s.outputs || {};
  return h("div", { class: "panel", id: "step" }, h("h2", null, s.name),
    h("dl", null,
      h("dt", null, "Phase"), h("dd", null, badge(s.phase)),
      h("dt", null, "Template"), h("dd", null, s.template || ""),
      h("dt", null, "Type"), h("dd", null, s.nodeType),
      h("dt", null, "Retries"), h("dd", null, s.retries),
      h("dt", null, "Exit code"), h("dd", null, s.exitCode === null ? "" : s.exitCode),
      h("dt", null, "Started"), h("dd", null, when(s.startedMs)),
      h("dt", null, "Finished"), h("dd", null, when(s.finishedMs)),
      s.job ? [h("dt", null, "Job"), h("dd", null, h("a", { href: "#/jobs/" + encodeURIComponent(s.job) }, s.job))] : null,
      s.message ? [h("dt", null, "Message"), h("dd", null, s.message)] : null,
      inputList(s.inputs),
      o.result !== undefined ? [h("dt", null, "Result"), h("dd", null, h("code", null, o.result))] : null,
      Object.entries(o.parameters || {}).map(([k, v]) => [h("dt", null, "out: " + k), h("dd", { "data-output": k }, h("code", null, v))]),
      Object.keys(o.artifacts || {}).map((k) => [h("dt", null, "out artifact"), h("dd", { "data-output-artifact": k }, k)])));
}

// ---- Endpoints and control plane ----

async function viewEndpoints() {
  const es = await api("endpoints");
  return [h("h1", null, "Endpoints"), h("table", { id: "endpoints" },
    h("tr", null, h("th", null, "Endpoint"), h("th", { class: "num" }, "Ready / desired"), h("th", null, "Replicas"),
      h("th", { class: "num" }, "Requests/s"), h("th", { class: "num" }, "Latency p50 / p99"),
      h("th", { class: "num" }, "Concurrency"), h("th", null, "Reason")),
    es.map((e) => h("tr", { "data-endpoint": e.metadata.name, "data-ready": e.ready, "data-desired": e.status.desiredReplicas },
      h("td", null, h("b", null, e.metadata.name)),
      h("td", { class: "num" }, e.ready + " / " + e.status.desiredReplicas),
      h("td", null, (e.status.replicas || []).map((p) => h("div", null,
        h("a", { href: "#/jobs/" + encodeURIComponent(p.job) }, p.job), " ", badge(p.phase || "Pending"), " ", p.node || ""))),
      h("td", { class: "num" }, (e.status.requestsPerSecond || 0).toFixed(2)),
      h("td", { class: "num" }, ms(e.status.latencyP50Ms) + " / " + ms(e.status.latencyP99Ms)),
      h("td", { class: "num" }, (e.status.concurrency || 0).toFixed(2)),
      h("td", { class: "muted" }, e.status.reason || "")))),
    es.map(endpointCharts)];
}

function ms(v) {
  return v ? (v < 10 ? v.toFixed(1) : v.toFixed(0)) + " ms" : "–";
}

// An endpoint's charts: history rows are [ms, rps, p50, p99, ready, desired,
// concurrency], one where the figures changed (so drawn as steps, held to
// `now`); marks are [ms, "coldStart" | "scale", message].
function endpointCharts(e) {
  const pts = e.history || [];
  const now = e.now || Date.now();
  const t0 = pts.length ? Math.min(pts[0][0], now - 60000) : now - 60000;
  const marks = (e.marks || []).filter((m) => m[0] >= t0);
  const colds = marks.filter((m) => m[1] === "coldStart").length;
  return h("div", { class: "ep-charts", "data-endpoint-charts": e.metadata.name, "data-points": pts.length },
    h("h2", null, e.metadata.name, h("span", { class: "muted" }, " · last " + Math.max(1, Math.round((now - t0) / 60000)) +
      " min · " + (marks.length - colds) + " scale event(s), " + colds + " cold start(s)")),
    h("div", { class: "charts" },
      stepChart("Requests per second", pts, [[1, "s-rps", "req/s"]], t0, now, marks, "rps"),
      stepChart("Latency (ms)", pts, [[2, "s-p50", "p50"], [3, "s-p99", "p99"]], t0, now, marks, "latency"),
      stepChart("Replicas", pts, [[5, "s-desired", "desired"], [4, "s-ready", "ready"]], t0, now, marks, "replicas")));
}

// A small step chart of the columns `series` ([column, class, name]) of
// `pts` between t0 and t1, with `marks` as vertical lines.
function stepChart(title, pts, series, t0, t1, marks, kind) {
  const W = 300, H = 90, P = 4;
  const top = Math.max(0, ...pts.flatMap((p) => series.map(([i]) => p[i])));
  const max = Math.max(1, top);
  const x = (t) => (P + ((W - 2 * P) * (t - t0)) / Math.max(1, t1 - t0)).toFixed(1);
  const y = (v) => (H - P - ((H - 2 * P) * v) / max).toFixed(1);
  const lines = series.map(([i, cls]) => {
    if (!pts.length) return null;
    let d = "M" + x(pts[0][0]) + "," + y(pts[0][i]);
    for (let k = 1; k < pts.length; k++) d += " H" + x(pts[k][0]) + " V" + y(pts[k][i]);
    d += " H" + x(t1);
    return h("path", { d, class: cls });
  });
  const ticks = marks.map((m) => h("path", { d: "M" + x(m[0]) + ",0 V" + H, class: m[1] === "coldStart" ? "m-cold" : "m-scale" },
    h("title", null, when(m[0]) + " · " + m[2])));
  const last = pts.length ? pts[pts.length - 1] : null;
  const legend = series.map(([i, cls, name]) => h("span", { class: "key " + cls }, name + " " + (last ? +last[i].toFixed(2) : "–")));
  return h("div", { class: "mini" },
    h("div", null, h("b", null, title), " ", h("span", { class: "muted" }, "max " + +max.toFixed(2))),
    h("svg", { class: "chart", "data-chart": kind, "data-max": top, width: W, height: H, viewBox: `0 0 ${W} ${H}` }, ticks, lines),
    h("div", { class: "muted" }, legend));
}

async function viewControl() {
  const c = await api("control");
  const prog = Object.fromEntries((c.progress || []).map((p) => [p.id, p]));
  const members = c.members.length ? c.members : [{ id: c.id, url: "(this replica)" }];
  return [h("h1", null, "Control plane"),
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("b", { id: "leader" }, c.leader || "none"), "leader"),
      h("div", { class: "card" }, h("b", null, c.term), "term"),
      h("div", { class: "card" }, h("b", null, c.commit), "commit index"),
      h("div", { class: "card" }, h("b", null, c.applied), "applied index"),
      h("div", { class: "card" }, h("b", null, c.id + " (" + c.role + ")"), "this replica")),
    h("table", { id: "replicas" },
      h("tr", null, h("th", null, "Replica"), h("th", null, "Address"), h("th", null, "Role"),
        h("th", { class: "num" }, "Matched"), h("th", null, "Replication")),
      members.map((m) => h("tr", { "data-replica": m.id },
        h("td", null, m.id), h("td", null, m.url),
        h("td", null, m.id === c.leader ? badge("Leader", "p-Running") : "follower"),
        h("td", { class: "num" }, prog[m.id] ? prog[m.id].matched : ""),
        h("td", null, prog[m.id] ? prog[m.id].state + (prog[m.id].recentActive ? "" : " (inactive)") : "")))),
    c.role !== "Leader" ? h("p", { class: "muted" }, "Replication progress is known on the leader only.") : null];
}

// ---- Router and live updates ----

// GPUs allocated over the last hour: [[ms, allocated, total], ...].
function chart(samples) {
  const W = 640, H = 90, P = 4;
  if (!samples || samples.length < 2) {
    return h("p", { class: "muted", id: "chart" }, "GPUs allocated over the last hour: a sample every 30 s; the chart starts with the second.");
  }
  const t0 = samples[0][0], t1 = samples[samples.length - 1][0];
  const max = Math.max(1, ...samples.map((s) => s[2]));
  const x = (t) => P + ((W - 2 * P) * (t - t0)) / Math.max(1, t1 - t0);
  const y = (v) => H - P - ((H - 2 * P) * v) / max;
  const line = (i) => samples.map((s, k) => (k ? "L" : "M") + x(s[0]).toFixed(1) + "," + y(s[i]).toFixed(1)).join(" ");
  const last = samples[samples.length - 1];
  return h("div", { id: "chart" },
    h("svg", { class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}` },
      h("path", { d: line(2), class: "total" }), h("path", { d: line(1), class: "alloc" })),
    h("div", { class: "muted" }, "GPUs allocated (blue) of GPUs ready (grey), last " +
      Math.round((t1 - t0) / 60000) + " min; now " + last[1] + " of " + last[2]));
}

const views = { cluster: viewCluster, jobs: viewJobs, workflows: viewWorkflows, endpoints: viewEndpoints, control: viewControl };
let drawing = false, again = false;

async function draw() {
  if (drawing) { again = true; return; }
  drawing = true;
  try {
    const r = route();
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === r.view);
    let fn = views[r.view] || viewCluster;
    if (r.view === "jobs" && r.name) fn = viewJob;
    if (r.view === "workflows" && r.name) fn = viewWorkflow;
    let content;
    if (logView) logView.used = false;
    try { content = await fn(r); }
    catch (e) { content = [h("h1", null, r.view), h("p", { class: "error", id: "error" }, e.message)]; }
    const x = window.scrollX, y = window.scrollY;
    if (logView && !logView.used) closeLog();
    main.replaceChildren(...[content].flat(Infinity).filter(Boolean));
    window.scrollTo(x, y);
    main.dataset.drawnAt = performance.now().toFixed(0);
  } finally {
    drawing = false;
    if (again) { again = false; draw(); }
  }
}

function live() {
  const el = document.getElementById("live");
  const es = new EventSource("/api/events");
  es.addEventListener("hello", (e) => {
    el.textContent = "live"; el.className = "live on";
    document.getElementById("user").textContent = JSON.parse(e.data).user;
  });
  es.addEventListener("change", () => draw());
  es.addEventListener("unauthorized", () => { es.close(); location.href = "/login"; });
  es.onerror = () => { el.textContent = "reconnecting"; el.className = "live off"; };
}

window.addEventListener("hashchange", draw);
// The Endpoints charts take a sample a second that is no change of the state:
// drawn again every 5 s while on screen.
setInterval(() => { if (route().view === "endpoints" && !document.hidden) draw(); }, 5000);
draw();
live();
