//! Endpoints in the state machine: the pure `apply` side of `CreateEndpoint`,
//! `ScaleEndpoint`, `ReplicaDrained`, `DeleteEndpoint` and `EndpointLoad`.
//!
//! ```text
//! ScaleEndpoint { replicas: n }
//!   1. replicas whose job ended (failed, lost node) are removed, with an event;
//!   2. fewer than n serving: revive draining replicas (newest first), then submit
//!      new replica jobs `<endpoint>-replica-<serial>` (one task each, labelled
//!      gpuctl.io/endpoint) that placement binds like any job;
//!   3. more than n: replicas not yet running are stopped at once; running ones are
//!      marked draining (the gateway stops routing to them) and stopped later by
//!      `ReplicaDrained`, once the gateway reports no request in flight on them.
//! ```
//!
//! Deterministic like the rest of `apply`: replica names come from a serial in the
//! endpoint's status, time from the envelope.

use std::collections::BTreeMap;

use gpuctl_common::api::{
    Event, Job, JobSpec, TaskPhase, TaskSpec, Topology, API_VERSION, MAX_EVENTS,
};
use gpuctl_common::endpoint::{
    crash_loop_backoff_ms, Endpoint, ReplicaStatus, CRASH_LOOP_RESET_MS, ENDPOINT_LABEL,
};

use crate::state::{Applied, ApplyError, ObjKey, State};

/// The program the built-in model server runs as; the node daemon finds it next to
/// its own executable, else on `PATH`.
pub const MODEL_SERVER: &str = "gpu-model-server";

/// The replica job an endpoint runs (before the state machine fills in its status).
pub fn replica_job(ep: &Endpoint, job_name: &str) -> Job {
    let spec = &ep.spec;
    let (command, env, working_dir) = match (&spec.model, &spec.server) {
        (Some(m), _) => {
            let mut cmd = vec![
                MODEL_SERVER.to_string(),
                "--model".into(),
                m.path.clone(),
                "--name".into(),
                ep.metadata.name.clone(),
                "--listen".into(),
                "0.0.0.0".into(),
                "--max-batch-size".into(),
                spec.batching.max_batch_size.to_string(),
                "--max-delay-ms".into(),
                spec.batching.max_delay_millis.to_string(),
            ];
            // As many threads as the replica asked cores for (all of the
            // node's otherwise), so replicas sharing a node share its cores.
            if let Some(cpu) = spec.resources.cpu {
                cmd.extend(["--threads".into(), cpu.0.div_ceil(1000).max(1).to_string()]);
            }
            (cmd, BTreeMap::new(), None)
        }
        (None, Some(s)) => (s.command.clone(), s.env.clone(), s.working_dir.clone()),
        (None, None) => (vec!["false".into()], BTreeMap::new(), None),
    };
    let mut job = Job::new(
        job_name,
        JobSpec {
            tasks: vec![TaskSpec {
                name: "server".into(),
                replicas: 1,
                command,
                env,
                working_dir,
                resources: spec.resources.clone(),
            }],
            min_available: None,
            priority: 0,
            topology: Topology::Pack,
            max_retries: 0,
            timeout_seconds: None,
            ttl_seconds_after_finished: None,
        },
    );
    job.metadata
        .labels
        .insert(ENDPOINT_LABEL.to_string(), ep.metadata.name.clone());
    job
}

/// Whether `job` is a replica of some endpoint, and of which.
pub fn endpoint_of(job: &Job) -> Option<&str> {
    job.metadata.labels.get(ENDPOINT_LABEL).map(String::as_str)
}

/// A reported load figure, or 0 when it is negative, NaN or infinite.
fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v.max(0.0)
    } else {
        0.0
    }
}

fn push_ep_event(ep: &mut Endpoint, now: u64, reason: &str, message: String) {
    ep.status.events.push(Event {
        time_ms: now,
        reason: reason.to_string(),
        message,
    });
    let n = ep.status.events.len();
    if n > MAX_EVENTS {
        ep.status.events.drain(..n - MAX_EVENTS);
    }
}

impl State {
    fn touch_endpoint(&mut self, index: u64, name: &str) {
        if let Some(e) = self.endpoints.get_mut(name) {
            e.metadata.resource_version = Some(index);
        }
        self.mark_dirty(ObjKey::Endpoint(name.to_string()));
    }

    fn endpoint_applied(&self, name: &str) -> Applied {
        self.endpoint_view(name)
            .map(|e| Applied::Endpoint(Box::new(e)))
            .unwrap_or(Applied::Nothing)
    }

    /// Stop a replica's job and forget it (it is not kept like a user's job).
    fn remove_replica_job(&mut self, job: &str) {
        if self.jobs.contains_key(job) {
            self.stop_tasks(job, TaskPhase::Cancelled, "endpoint replica removed");
            self.jobs.remove(job);
            self.mark_dirty(ObjKey::Job(job.to_string()));
        }
    }

    pub(crate) fn create_endpoint(
        &mut self,
        index: u64,
        now: u64,
        ep: &Endpoint,
    ) -> Result<Applied, ApplyError> {
        let name = ep.metadata.name.clone();
        if self.endpoints.contains_key(&name) {
            return Err(ApplyError::AlreadyExists {
                kind: "endpoint",
                name,
            });
        }
        ep.validate()
            .map_err(|e| ApplyError::Invalid(e.to_string()))?;
        let mut e = ep.clone();
        e.api_version = API_VERSION.to_string();
        e.metadata.uid = Some(index);
        e.metadata.creation_timestamp_ms = Some(now);
        e.status = Default::default();
        push_ep_event(&mut e, now, "Created", "endpoint created".into());
        let min = e.spec.autoscaling.min_replicas;
        self.endpoints.insert(name.clone(), e);
        self.touch_endpoint(index, &name);
        self.reconcile_endpoint(index, now, &name, min, "minReplicas")?;
        Ok(self.endpoint_applied(&name))
    }

    pub(crate) fn delete_endpoint(
        &mut self,
        index: u64,
        _now: u64,
        name: &str,
    ) -> Result<Applied, ApplyError> {
        let Some(ep) = self.endpoints.remove(name) else {
            return Err(ApplyError::NotFound {
                kind: "endpoint",
                name: name.to_string(),
            });
        };
        for r in &ep.status.replicas {
            self.remove_replica_job(&r.job);
        }
        self.mark_dirty(ObjKey::Endpoint(name.to_string()));
        let mut gone = ep;
        gone.metadata.resource_version = Some(index);
        gone.status.desired_replicas = 0;
        gone.status.replicas.clear();
        Ok(Applied::Endpoint(Box::new(gone)))
    }

    pub(crate) fn scale_endpoint(
        &mut self,
        index: u64,
        now: u64,
        name: &str,
        replicas: u32,
        reason: &str,
    ) -> Result<Applied, ApplyError> {
        self.reconcile_endpoint(index, now, name, replicas, reason)?;
        Ok(self.endpoint_applied(name))
    }

    /// Bring the endpoint's replica jobs to `want` serving replicas (clamped to the
    /// endpoint's bounds).
    fn reconcile_endpoint(
        &mut self,
        index: u64,
        now: u64,
        name: &str,
        want: u32,
        reason: &str,
    ) -> Result<(), ApplyError> {
        let Some(ep) = self.endpoints.get(name) else {
            return Err(ApplyError::NotFound {
                kind: "endpoint",
                name: name.to_string(),
            });
        };
        let a = &ep.spec.autoscaling;
        let want = want.clamp(a.min_replicas, a.max_replicas);
        let old_desired = ep.status.desired_replicas;
        let mut replicas = ep.status.replicas.clone();
        let mut serial = ep.status.next_replica;
        let mut failures = ep.status.consecutive_failures;
        let mut backoff_until = ep.status.backoff_until_ms;
        let mut events: Vec<(&'static str, String)> = Vec::new();
        let mut remove_jobs: Vec<String> = Vec::new();
        let mut new_jobs: Vec<Job> = Vec::new();

        // 1. Replicas whose job ended are gone. One that ended on its own soon
        //    after it started is a step of a crash loop: its replacement waits.
        let mut newly_failed = false;
        replicas.retain(|r| match self.jobs.get(&r.job) {
            Some(j) if !j.status.phase.is_terminal() => true,
            Some(j) => {
                let why = j.status.message.clone().unwrap_or_default();
                if !r.draining() {
                    events.push((
                        "ReplicaEnded",
                        format!("replica {} ended ({}): {why}", r.job, j.status.phase),
                    ));
                    let task = j.status.tasks.first();
                    let finished = task.and_then(|t| t.finish_time_ms).unwrap_or(now);
                    let started = task.and_then(|t| t.start_time_ms);
                    let served_long =
                        started.is_some_and(|s| finished.saturating_sub(s) >= CRASH_LOOP_RESET_MS);
                    failures = if served_long { 1 } else { failures + 1 };
                    let until = finished + crash_loop_backoff_ms(failures);
                    backoff_until = Some(backoff_until.map_or(until, |b| b.max(until)));
                    newly_failed = true;
                }
                remove_jobs.push(r.job.clone());
                false
            }
            None => false,
        });
        let backing_off = backoff_until.is_some_and(|t| now < t);
        if !backing_off {
            backoff_until = None;
        }

        let serving = |rs: &[ReplicaStatus]| rs.iter().filter(|r| !r.draining()).count() as u32;
        // 2. Too few: revive draining replicas, newest first, then add new ones.
        while serving(&replicas) < want {
            if let Some(r) = replicas.iter_mut().rev().find(|r| r.draining()) {
                r.draining_since_ms = None;
                events.push(("ReplicaRevived", format!("replica {} serves again", r.job)));
                continue;
            }
            if backing_off {
                if newly_failed {
                    let wait = backoff_until.unwrap_or(now).saturating_sub(now);
                    events.push((
                        "BackOff",
                        format!(
                            "{failures} replicas in a row ended within {} s of starting; \
                             the next starts in {:.1} s",
                            CRASH_LOOP_RESET_MS / 1000,
                            wait as f64 / 1000.0
                        ),
                    ));
                }
                break;
            }
            let mut job_name = format!("{name}-replica-{serial}");
            serial += 1;
            while self.jobs.contains_key(&job_name)
                || new_jobs.iter().any(|j| j.metadata.name == job_name)
            {
                job_name = format!("{name}-replica-{serial}");
                serial += 1;
            }
            let ep = &self.endpoints[name];
            new_jobs.push(replica_job(ep, &job_name));
            replicas.push(ReplicaStatus {
                job: job_name,
                ..Default::default()
            });
        }
        // 3. Too many: drop replicas not yet running, then drain the newest running.
        while serving(&replicas) > want {
            let not_running = replicas.iter().rposition(|r| {
                !r.draining()
                    && self
                        .jobs
                        .get(&r.job)
                        .and_then(|j| j.status.tasks.first())
                        .is_none_or(|t| t.phase != TaskPhase::Running)
            });
            if let Some(i) = not_running {
                let r = replicas.remove(i);
                remove_jobs.push(r.job);
                continue;
            }
            if let Some(r) = replicas.iter_mut().rev().find(|r| !r.draining()) {
                r.draining_since_ms = Some(now);
                events.push(("ReplicaDraining", format!("replica {} is draining", r.job)));
            }
        }

        for j in remove_jobs {
            self.remove_replica_job(&j);
        }
        for j in new_jobs {
            let job_name = j.metadata.name.clone();
            self.submit(index, now, &j)?;
            events.push(("ReplicaCreated", format!("replica {job_name} created")));
        }
        let ep = self.endpoints.get_mut(name).expect("checked above");
        ep.status.replicas = replicas;
        ep.status.next_replica = serial;
        ep.status.consecutive_failures = failures;
        ep.status.backoff_until_ms = backoff_until;
        ep.status.desired_replicas = want;
        if want != old_desired {
            ep.status.reason = Some(reason.to_string());
            push_ep_event(
                ep,
                now,
                "Scaled",
                format!("{old_desired} → {want} replicas: {reason}"),
            );
        }
        for (r, m) in events {
            push_ep_event(ep, now, r, m);
        }
        self.touch_endpoint(index, name);
        Ok(())
    }

    pub(crate) fn replica_drained(
        &mut self,
        index: u64,
        now: u64,
        endpoint: &str,
        job: &str,
    ) -> Result<Applied, ApplyError> {
        let Some(ep) = self.endpoints.get_mut(endpoint) else {
            return Ok(Applied::Nothing);
        };
        let Some(i) = ep
            .status
            .replicas
            .iter()
            .position(|r| r.job == job && r.draining())
        else {
            return Ok(Applied::Nothing); // revived or already gone: a stale report
        };
        ep.status.replicas.remove(i);
        push_ep_event(
            ep,
            now,
            "ReplicaStopped",
            format!("replica {job} drained and stopped"),
        );
        self.remove_replica_job(job);
        self.touch_endpoint(index, endpoint);
        Ok(self.endpoint_applied(endpoint))
    }

    pub(crate) fn endpoint_load(
        &mut self,
        index: u64,
        name: &str,
        concurrency: f64,
        rps: f64,
    ) -> Result<Applied, ApplyError> {
        let Some(ep) = self.endpoints.get_mut(name) else {
            return Ok(Applied::Nothing);
        };
        ep.status.concurrency = finite(concurrency);
        ep.status.requests_per_second = finite(rps);
        self.touch_endpoint(index, name);
        Ok(Applied::Nothing)
    }

    /// An endpoint as users and the gateway read it: each replica's phase, node and
    /// URL filled in from its job and node.
    pub fn endpoint_view(&self, name: &str) -> Option<Endpoint> {
        let mut e = self.endpoints.get(name)?.clone();
        for r in &mut e.status.replicas {
            let task = self.jobs.get(&r.job).and_then(|j| j.status.tasks.first());
            r.phase = task.map(|t| t.phase);
            r.node = task.and_then(|t| t.node.clone());
            r.url = task.and_then(|t| {
                let node = self.nodes.get(t.node.as_deref()?)?;
                let port = t.port?;
                let host = if node.status.address.contains(':') {
                    format!("[{}]", node.status.address)
                } else {
                    node.status.address.clone()
                };
                Some(format!("http://{host}:{port}"))
            });
            if let Some(p) = task.and_then(|t| t.port) {
                r.port = p;
            }
        }
        Some(e)
    }

    /// Every endpoint as [`State::endpoint_view`] shows it.
    pub fn endpoint_views(&self) -> Vec<Endpoint> {
        self.endpoints
            .keys()
            .filter_map(|n| self.endpoint_view(n))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The endpoint controller (leader only).

/// A draining replica the gateway never reports as idle is stopped after this.
pub const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);
/// How often the endpoint controller runs when nothing wakes it.
const TICK: std::time::Duration = std::time::Duration::from_millis(200);
/// Least time between two `EndpointLoad` writes for one endpoint.
const LOAD_WRITE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// Least time between two replacements of ended replicas of one endpoint.
const REPLACE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use gpuctl_common::autoscaler::{Autoscaler, AutoscalerConfig};
use gpuctl_proto::v1 as pb;
use tokio::time::Instant;

use crate::raft_node::RaftHandle;
use crate::state::{Command, Envelope};

/// What the leader knows about one endpoint's load (soft state: a new leader
/// starts afresh, holding the replicas that exist until a gateway reports).
struct EndpointLoad {
    config: AutoscalerConfig,
    autoscaler: Autoscaler,
    /// The last report of each gateway, by its id.
    gateways: HashMap<String, GatewayReport>,
    /// Sums over the gateways heard from in the last [`GATEWAY_STALE`].
    concurrency: f64,
    rps: f64,
    /// Draining replicas every such gateway last reported idle.
    drained: BTreeSet<String>,
    last_load_write: Option<Instant>,
    written: (f64, f64),
    last_replace: Option<Instant>,
    /// Whether a gateway has reported since this replica began leading. Until
    /// then the autoscaler sees the serving replicas as fully loaded: gateways
    /// find a new leader seconds after it is elected, and their silence is
    /// not idleness.
    heard: bool,
}

/// One gateway's last report for one endpoint.
struct GatewayReport {
    at: Instant,
    concurrency: f64,
    rps: f64,
    drained: BTreeSet<String>,
}

/// A gateway not heard from for this long no longer counts (it stopped, or
/// lost its way to the leader); its in-flight requests are no longer added.
const GATEWAY_STALE: std::time::Duration = std::time::Duration::from_secs(5);

impl EndpointLoad {
    /// Record `gateway`'s report at `now` and work out the sums again.
    fn report(
        &mut self,
        gateway: &str,
        now: Instant,
        concurrency: f64,
        rps: f64,
        drained: &[String],
    ) {
        self.heard = true;
        self.gateways.insert(
            gateway.to_string(),
            GatewayReport {
                at: now,
                concurrency,
                rps,
                drained: drained.iter().cloned().collect(),
            },
        );
        self.gateways
            .retain(|_, g| now.saturating_duration_since(g.at) < GATEWAY_STALE);
        self.concurrency = self.gateways.values().map(|g| g.concurrency).sum();
        self.rps = self.gateways.values().map(|g| g.rps).sum();
        let mut live = self.gateways.values();
        let first = live.next().map(|g| g.drained.clone()).unwrap_or_default();
        self.drained = live.fold(first, |acc, g| {
            acc.intersection(&g.drained).cloned().collect()
        });
    }
}

/// Gateway load reports, on the replica that leads.
pub struct Loads {
    origin: Instant,
    eps: Mutex<HashMap<String, EndpointLoad>>,
    /// Wakes the controller when a report arrives.
    pub wake: tokio::sync::Notify,
}

impl Default for Loads {
    fn default() -> Self {
        Loads {
            origin: Instant::now(),
            eps: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
        }
    }
}

impl Loads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, EndpointLoad>> {
        self.eps.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry<'a>(
        &self,
        map: &'a mut HashMap<String, EndpointLoad>,
        ep: &Endpoint,
        now: Instant,
    ) -> &'a mut EndpointLoad {
        let config = ep.autoscaler_config();
        let stale = map
            .get(&ep.metadata.name)
            .is_some_and(|e| e.config != config);
        if stale {
            map.remove(&ep.metadata.name);
        }
        let e = map
            .entry(ep.metadata.name.clone())
            .or_insert_with(|| EndpointLoad {
                autoscaler: Autoscaler::new(config.clone()),
                config,
                gateways: HashMap::new(),
                concurrency: 0.0,
                rps: 0.0,
                drained: BTreeSet::new(),
                last_load_write: None,
                written: (0.0, 0.0),
                last_replace: None,
                heard: false,
            });
        // A new leader holds what runs until a gateway has reported (and then
        // until the windows have seen real load).
        let current = ep.status.replicas.iter().filter(|r| !r.draining()).count();
        if !e.heard && current > 0 {
            e.autoscaler.record(
                now.duration_since(self.origin),
                current as f64 * e.config.target_concurrency,
            );
        }
        e
    }

    /// Record one report; returns the endpoints that need a replica right now
    /// (a request waits and none serves), with the replicas to ask for.
    pub fn record(&self, st: &State, req: &pb::ReportLoadRequest) -> Vec<(String, u32)> {
        self.record_at(st, req, Instant::now())
    }

    fn record_at(
        &self,
        st: &State,
        req: &pb::ReportLoadRequest,
        now: Instant,
    ) -> Vec<(String, u32)> {
        let mut map = self.lock();
        let mut wake = Vec::new();
        for l in &req.endpoints {
            let Some(ep) = st.endpoints.get(&l.endpoint) else {
                continue;
            };
            let e = self.entry(&mut map, ep, now);
            let (c, rps) = (finite(l.concurrency), finite(l.requests_per_second));
            e.report(&req.gateway, now, c, rps, &l.drained);
            let at = now.duration_since(self.origin);
            e.autoscaler.record(at, e.concurrency);
            if e.rps > 0.0 {
                e.autoscaler.record_requests(at);
            }
            let serving = ep.status.replicas.iter().filter(|r| !r.draining()).count();
            if l.cold_start && serving == 0 {
                wake.push((ep.metadata.name.clone(), ep.status.desired_replicas.max(1)));
            }
        }
        wake
    }

    /// Forget everything (this replica stopped leading).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The commands that bring every endpoint where it should be at `now`.
    pub fn plan(&self, st: &State, now: Instant, now_ms: u64) -> Vec<Command> {
        let mut map = self.lock();
        map.retain(|name, _| st.endpoints.contains_key(name));
        let mut cmds = Vec::new();
        for ep in st.endpoints.values() {
            let name = &ep.metadata.name;
            let e = self.entry(&mut map, ep, now);
            let live: Vec<&ReplicaStatus> = ep
                .status
                .replicas
                .iter()
                .filter(|r| !r.draining())
                .collect();
            let ended = ep.status.replicas.iter().any(|r| {
                st.jobs
                    .get(&r.job)
                    .is_none_or(|j| j.status.phase.is_terminal())
            });
            let d = e
                .autoscaler
                .decide(now.duration_since(self.origin), live.len() as u32);
            if d.desired != ep.status.desired_replicas {
                cmds.push(Command::ScaleEndpoint {
                    name: name.clone(),
                    replicas: d.desired,
                    reason: d.reason.to_string(),
                });
            } else if (ended || live.len() < ep.status.desired_replicas as usize)
                && ep.status.backoff_until_ms.is_none_or(|t| now_ms >= t)
                && e.last_replace
                    .is_none_or(|t| now.duration_since(t) >= REPLACE_EVERY)
            {
                e.last_replace = Some(now);
                cmds.push(Command::ScaleEndpoint {
                    name: name.clone(),
                    replicas: ep.status.desired_replicas,
                    reason: "replacing a replica that ended".into(),
                });
            }
            for r in ep.status.replicas.iter() {
                let Some(since) = r.draining_since_ms else {
                    continue;
                };
                let running = st
                    .jobs
                    .get(&r.job)
                    .and_then(|j| j.status.tasks.first())
                    .is_some_and(|t| t.phase == TaskPhase::Running);
                let expired = now_ms.saturating_sub(since) >= DRAIN_GRACE.as_millis() as u64;
                if e.drained.contains(&r.job) || expired || !running {
                    e.drained.remove(&r.job);
                    cmds.push(Command::ReplicaDrained {
                        endpoint: name.clone(),
                        job: r.job.clone(),
                    });
                }
            }
            let changed = (e.rps - e.written.0).abs() > 0.05 * e.written.0.max(1.0)
                || (e.concurrency - e.written.1).abs() > 0.05 * e.written.1.max(1.0);
            if changed
                && e.last_load_write
                    .is_none_or(|t| now.duration_since(t) >= LOAD_WRITE_EVERY)
            {
                e.last_load_write = Some(now);
                e.written = (e.rps, e.concurrency);
                cmds.push(Command::EndpointLoad {
                    name: name.clone(),
                    concurrency: e.concurrency,
                    requests_per_second: e.rps,
                });
            }
        }
        cmds
    }
}

async fn propose(raft: &RaftHandle, cmd: Command) {
    let name = cmd.name();
    if let Err(e) = raft
        .propose(Envelope::new(gpuctl_common::now_ms(), cmd))
        .await
    {
        tracing::warn!("{name} not applied: {e}");
    }
}

/// Handle a gateway's report on the leader: record it and wake cold endpoints now.
pub async fn report_load(raft: &RaftHandle, loads: &Loads, req: &pb::ReportLoadRequest) {
    let wake = {
        let st = raft.shared.read();
        loads.record(&st, req)
    };
    for (name, replicas) in wake {
        propose(
            raft,
            Command::ScaleEndpoint {
                name,
                replicas,
                reason: gpuctl_common::autoscaler::Reason::ColdStart.to_string(),
            },
        )
        .await;
    }
    loads.wake.notify_one();
}

/// The endpoint controller: runs the autoscaler on the gateways' reports, replaces
/// replicas that ended and stops drained ones. Leader only; idempotent.
pub async fn run(
    raft: RaftHandle,
    loads: std::sync::Arc<Loads>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if raft.shared.status().is_leader() {
            let cmds = {
                let st = raft.shared.read();
                loads.plan(&st, Instant::now(), gpuctl_common::now_ms())
            };
            for c in cmds {
                propose(&raft, c).await;
            }
        } else {
            loads.clear();
        }
        tokio::select! {
            _ = loads.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Binding, NodeRegistration, TaskPlacement, TaskReport};
    use gpuctl_common::api::{Gpu, GpuShare, Manifest};

    fn endpoint(min: u32, max: u32) -> Endpoint {
        let text = format!(
            "apiVersion: gpuctl.io/v1\nkind: Endpoint\nmetadata: {{name: lin}}\nspec:\n  model: {{path: /m/linear.onnx}}\n  resources: {{gpus: 1}}\n  autoscaling: {{minReplicas: {min}, maxReplicas: {max}, targetConcurrency: 1, scaleToZeroAfterSeconds: 5, stableWindowSeconds: 10}}\n"
        );
        match gpuctl_common::api::parse_manifests("ep.yaml", &text)
            .unwrap()
            .remove(0)
        {
            Manifest::Endpoint(e) => e,
            _ => panic!("not an endpoint"),
        }
    }

    struct H {
        s: State,
        index: u64,
        /// Added to the clock (1 s per command).
        skew_ms: u64,
    }

    impl H {
        fn new() -> H {
            let mut h = H {
                s: State::default(),
                index: 0,
                skew_ms: 0,
            };
            h.apply(Command::RegisterNode {
                reg: NodeRegistration {
                    name: "n1".into(),
                    address: "127.0.0.1".into(),
                    agent_endpoint: "http://127.0.0.1:1".into(),
                    inventory: "simulated".into(),
                    cpu_milli: 0,
                    memory_bytes: 0,
                    gpus: (0..4)
                        .map(|i| Gpu {
                            uuid: format!("GPU-{i}"),
                            index: i,
                            model: "A100-80GB".into(),
                            memory_bytes: 80 << 30,
                            nvlink_domain: String::new(),
                            healthy: true,
                        })
                        .collect(),
                    labels: Default::default(),
                },
            })
            .unwrap();
            h
        }
        fn apply(&mut self, cmd: Command) -> Result<Applied, ApplyError> {
            self.index += 1;
            let now = self.now_ms();
            self.s.apply(self.index, &Envelope::new(now, cmd))
        }
        /// The clock of the last command.
        fn now_ms(&self) -> u64 {
            1000 * self.index + self.skew_ms
        }
        /// Report replica `job`'s server as having exited with status 1.
        fn fail(&mut self, job: &str) {
            self.apply(Command::TaskReport {
                report: TaskReport {
                    node: "n1".into(),
                    job: job.into(),
                    index: 0,
                    attempt: 1,
                    phase: TaskPhase::Failed,
                    exit_code: Some(1),
                    message: Some("model file not found".into()),
                    pid: None,
                    port: None,
                    outputs: None,
                },
            })
            .unwrap();
        }
        fn scale(&mut self, n: u32) {
            self.apply(Command::ScaleEndpoint {
                name: "lin".into(),
                replicas: n,
                reason: "test".into(),
            })
            .unwrap();
        }
        fn replicas(&self) -> Vec<ReplicaStatus> {
            self.s.endpoint_view("lin").unwrap().status.replicas
        }
        /// Bind replica `job` to GPU `gpu` and report it running on `port`.
        fn run(&mut self, job: &str, gpu: u32, port: u16) {
            self.apply(Command::Bind {
                bindings: vec![Binding {
                    job: job.into(),
                    attempt: 1,
                    tasks: vec![TaskPlacement {
                        index: 0,
                        node: "n1".into(),
                        gpus: vec![GpuShare {
                            index: gpu,
                            uuid: format!("GPU-{gpu}"),
                            milli: 1000,
                        }],
                    }],
                }],
            })
            .unwrap();
            self.apply(Command::TaskReport {
                report: TaskReport {
                    node: "n1".into(),
                    job: job.into(),
                    index: 0,
                    attempt: 1,
                    phase: TaskPhase::Running,
                    exit_code: None,
                    message: None,
                    pid: Some(7),
                    port: Some(port),
                    outputs: None,
                },
            })
            .unwrap();
        }
    }

    #[test]
    fn replicas_are_jobs_that_drain_before_they_stop() {
        let mut h = H::new();
        h.apply(Command::CreateEndpoint {
            endpoint: Box::new(endpoint(0, 3)),
        })
        .unwrap();
        assert!(h.replicas().is_empty(), "minReplicas 0: nothing runs");
        h.scale(2);
        let r = h.replicas();
        assert_eq!(r.len(), 2);
        let job = &h.s.jobs[&r[0].job];
        assert_eq!(endpoint_of(job), Some("lin"));
        let cmd = &job.spec.tasks[0].command;
        assert_eq!(cmd[0], MODEL_SERVER);
        assert!(cmd.windows(2).any(|w| w == ["--name", "lin"]), "{cmd:?}");
        assert!(
            !cmd.iter().any(|a| a == "--threads"),
            "no CPU asked: all cores"
        );
        let mut ep = endpoint(0, 3);
        ep.spec.resources.cpu = Some(gpuctl_common::api::Cpu(2500));
        let cmd = replica_job(&ep, "x").spec.tasks[0].command.clone();
        assert!(cmd.windows(2).any(|w| w == ["--threads", "3"]), "{cmd:?}");
        assert_eq!(job.spec.tasks[0].resources.gpus, 1.0);

        h.run("lin-replica-0", 0, 20001);
        h.run("lin-replica-1", 1, 20002);
        let r = h.replicas();
        assert_eq!(r[0].url.as_deref(), Some("http://127.0.0.1:20001"));
        assert!(r.iter().all(|r| r.serving()));

        // Scale down: the newest running replica drains; its job keeps running.
        h.scale(1);
        let r = h.replicas();
        assert_eq!(r.len(), 2);
        assert!(r[1].draining() && !r[1].serving());
        assert_eq!(
            h.s.jobs["lin-replica-1"].status.tasks[0].phase,
            TaskPhase::Running
        );
        // Scale up again revives it instead of starting a new job.
        h.scale(2);
        assert!(h.replicas().iter().all(|r| !r.draining()));
        assert!(!h.s.jobs.contains_key("lin-replica-2"));
        h.scale(1);
        // The gateway reports it drained: the job is stopped and forgotten.
        h.apply(Command::ReplicaDrained {
            endpoint: "lin".into(),
            job: "lin-replica-1".into(),
        })
        .unwrap();
        assert_eq!(h.replicas().len(), 1);
        assert!(!h.s.jobs.contains_key("lin-replica-1"));
        assert!(
            !h.s.usage("n1").gpu_milli.contains_key(&1),
            "GPU 1 released"
        );
        // A stale drain report changes nothing.
        assert_eq!(
            h.apply(Command::ReplicaDrained {
                endpoint: "lin".into(),
                job: "lin-replica-1".into(),
            }),
            Ok(Applied::Nothing)
        );
        // Bounds: asking for 10 gives maxReplicas.
        h.scale(10);
        assert_eq!(h.s.endpoints["lin"].status.desired_replicas, 3);
        // Replicas not running yet are removed at once on scale-down.
        h.scale(1);
        assert_eq!(h.replicas().len(), 1);
        assert_eq!(h.replicas()[0].job, "lin-replica-0");
        let dirty = h.s.take_dirty();
        assert!(dirty.contains(&ObjKey::Endpoint("lin".into())));
        // Delete stops everything.
        h.apply(Command::DeleteEndpoint { name: "lin".into() })
            .unwrap();
        assert!(h.s.endpoints.is_empty());
        assert!(h.s.jobs.is_empty());
        assert!(h.s.usage("n1").gpu_milli.is_empty());
        assert_eq!(h.s.object_json(&ObjKey::Endpoint("lin".into())), None);
    }

    #[test]
    fn ended_replicas_are_replaced_and_min_replicas_start_at_once() {
        let mut h = H::new();
        h.apply(Command::CreateEndpoint {
            endpoint: Box::new(endpoint(1, 2)),
        })
        .unwrap();
        assert_eq!(h.replicas().len(), 1);
        let dup = h.apply(Command::CreateEndpoint {
            endpoint: Box::new(endpoint(1, 2)),
        });
        assert!(matches!(dup, Err(ApplyError::AlreadyExists { .. })));
        h.run("lin-replica-0", 0, 20001);
        h.fail("lin-replica-0");
        h.scale(1);
        let r = h.replicas();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].job, "lin-replica-1");
        assert!(!h.s.jobs.contains_key("lin-replica-0"));
        let ev = &h.s.endpoints["lin"].status.events;
        assert!(ev.iter().any(|e| e.reason == "ReplicaEnded"), "{ev:?}");
        // The state survives a restart through its stored objects.
        let eps: Vec<Endpoint> = h.s.endpoints.values().cloned().collect();
        let jobs = h.s.jobs.values().cloned().collect();
        let nodes = h.s.nodes.values().cloned().collect();
        let back = State::from_objects(jobs, nodes).with_endpoints(eps);
        assert_eq!(back.endpoint_view("lin"), h.s.endpoint_view("lin"));
    }

    #[test]
    fn a_crash_loop_backs_off_doubling_and_a_long_run_resets_it() {
        let mut h = H::new();
        h.apply(Command::CreateEndpoint {
            endpoint: Box::new(endpoint(1, 2)),
        })
        .unwrap();
        let loads = Loads::default();
        let t0 = loads.origin;
        let plan_now = |h: &H| {
            let secs = std::time::Duration::from_millis(h.now_ms());
            loads.plan(&h.s, t0 + secs, h.now_ms())
        };
        // The first failure waits 1 s from its end: the next command is 1 s later.
        h.run("lin-replica-0", 0, 20001);
        h.fail("lin-replica-0");
        let ended_at = h.now_ms();
        h.scale(1);
        assert_eq!(h.replicas()[0].job, "lin-replica-1");
        let st = &h.s.endpoints["lin"].status;
        assert_eq!(st.consecutive_failures, 1);
        assert_eq!(st.backoff_until_ms, None, "over at {}", ended_at + 1000);

        // The second in a row waits 2 s: a scale-up 1 s later starts nothing.
        h.run("lin-replica-1", 0, 20002);
        h.fail("lin-replica-1");
        let ended_at = h.now_ms();
        h.scale(1);
        assert!(h.replicas().is_empty(), "{:?}", h.replicas());
        let st = &h.s.endpoints["lin"].status;
        assert_eq!(st.consecutive_failures, 2);
        assert_eq!(st.backoff_until_ms, Some(ended_at + 2000));
        let ev = st.events.last().unwrap();
        assert_eq!(ev.reason, "BackOff");
        assert!(ev.message.contains("2 replicas in a row"), "{}", ev.message);
        // The controller does not ask again before the back-off is over...
        assert!(
            !plan_now(&h)
                .iter()
                .any(|c| matches!(c, Command::ScaleEndpoint { .. })),
            "asked during the back-off"
        );
        // ...and does once it is (the scale below is that command, applied).
        h.skew_ms += 1000;
        let cmds = plan_now(&h);
        assert!(
            cmds.iter()
                .any(|c| matches!(c, Command::ScaleEndpoint { replicas: 1, .. })),
            "{cmds:?}"
        );
        h.scale(1);
        assert_eq!(h.replicas()[0].job, "lin-replica-2");
        assert_eq!(h.s.endpoints["lin"].status.backoff_until_ms, None);

        // A replica that served for a minute before ending starts the count again.
        h.run("lin-replica-2", 0, 20003);
        h.skew_ms += 60_000;
        h.fail("lin-replica-2");
        h.scale(1);
        let st = &h.s.endpoints["lin"].status;
        assert_eq!(st.consecutive_failures, 1);
        assert_eq!(h.replicas()[0].job, "lin-replica-3");

        // The back-off survives a restart: it is part of the stored endpoint.
        h.run("lin-replica-3", 0, 20004);
        h.fail("lin-replica-3");
        h.scale(1);
        assert!(h.replicas().is_empty());
        let eps: Vec<Endpoint> = h.s.endpoints.values().cloned().collect();
        let back = State::default().with_endpoints(eps);
        assert_eq!(
            back.endpoints["lin"].status.backoff_until_ms,
            h.s.endpoints["lin"].status.backoff_until_ms
        );
    }

    #[test]
    fn several_gateways_add_up_and_all_must_call_a_replica_drained() {
        let mut h = H::new();
        h.apply(Command::CreateEndpoint {
            endpoint: Box::new(endpoint(0, 4)),
        })
        .unwrap();
        h.scale(2);
        h.run("lin-replica-0", 0, 20001);
        h.run("lin-replica-1", 1, 20002);
        h.scale(1);
        assert!(h.replicas()[1].draining());
        let loads = Loads::default();
        let t0 = loads.origin;
        let at = |s: u64| t0 + std::time::Duration::from_secs(s);
        let report = |gw: &str, c: f64, drained: &[&str]| pb::ReportLoadRequest {
            gateway: gw.into(),
            endpoints: vec![pb::EndpointLoad {
                endpoint: "lin".into(),
                concurrency: c,
                requests_per_second: c * 10.0,
                cold_start: false,
                drained: drained.iter().map(|d| d.to_string()).collect(),
            }],
        };
        let sums = |loads: &Loads| {
            let map = loads.lock();
            (map["lin"].concurrency, map["lin"].rps)
        };
        let drained_cmd = |cmds: &[Command]| {
            cmds.iter()
                .any(|c| matches!(c, Command::ReplicaDrained { job, .. } if job == "lin-replica-1"))
        };
        loads.record_at(&h.s, &report("a", 3.0, &["lin-replica-1"]), at(1));
        loads.record_at(&h.s, &report("b", 4.0, &[]), at(1));
        assert_eq!(sums(&loads), (7.0, 70.0), "the load of both gateways");
        // Gateway b still routes to (or serves on) the draining replica.
        assert!(!drained_cmd(&loads.plan(&h.s, at(1), 1_000)));
        loads.record_at(&h.s, &report("b", 4.0, &["lin-replica-1"]), at(2));
        assert!(
            drained_cmd(&loads.plan(&h.s, at(2), 2_000)),
            "both call it drained"
        );
        // A gateway silent for longer than GATEWAY_STALE no longer counts.
        loads.record_at(&h.s, &report("a", 1.0, &[]), at(9));
        assert_eq!(sums(&loads), (1.0, 10.0));
        // Reports without an id (older gateways) count as one gateway.
        loads.record_at(&h.s, &report("", 2.0, &[]), at(9));
        assert_eq!(sums(&loads), (3.0, 30.0));
    }

    #[test]
    fn a_new_leader_holds_serving_replicas_until_a_gateway_reports() {
        let mut h = H::new();
        h.apply(Command::CreateEndpoint {
            endpoint: Box::new(endpoint(0, 3)),
        })
        .unwrap();
        h.scale(1);
        h.run("lin-replica-0", 0, 20001);
        // A new leader: its load map is empty, and the gateway, still failing
        // over (a read barrier on a replica that knows no leader takes seconds),
        // reports nothing for longer than the stable window (10 s) and
        // scaleToZeroAfterSeconds (5 s).
        let loads = Loads::default();
        let t0 = loads.origin;
        let at = |s: u64| t0 + std::time::Duration::from_secs(s);
        let scaled = |cmds: &[Command]| {
            cmds.iter().find_map(|c| match c {
                Command::ScaleEndpoint { replicas, .. } => Some(*replicas),
                _ => None,
            })
        };
        for s in [1, 6, 12, 20] {
            let cmds = loads.plan(&h.s, at(s), s * 1000);
            assert_eq!(scaled(&cmds), None, "at {s} s, nothing heard: {cmds:?}");
        }
        // Once the gateway is heard from, its reports decide: busy, it stays...
        let report = |c: f64| pb::ReportLoadRequest {
            gateway: "gw".into(),
            endpoints: vec![pb::EndpointLoad {
                endpoint: "lin".into(),
                concurrency: c,
                requests_per_second: c * 100.0,
                cold_start: false,
                drained: vec![],
            }],
        };
        for s in 21..=40 {
            loads.record_at(&h.s, &report(1.0), at(s));
            let cmds = loads.plan(&h.s, at(s), s * 1000);
            assert_eq!(scaled(&cmds), None, "at {s} s, busy: {cmds:?}");
        }
        // ...and idle for the window and scaleToZeroAfterSeconds, it goes to zero.
        for s in 41..=60 {
            loads.record_at(&h.s, &report(0.0), at(s));
        }
        assert_eq!(scaled(&loads.plan(&h.s, at(60), 60_000)), Some(0));
    }

    #[test]
    fn controller_wakes_cold_endpoints_and_scales_to_zero_when_idle() {
        let mut h = H::new();
        h.apply(Command::CreateEndpoint {
            endpoint: Box::new(endpoint(0, 3)),
        })
        .unwrap();
        let loads = Loads::default();
        let t0 = loads.origin;
        let report = |c: f64, cold: bool| pb::ReportLoadRequest {
            gateway: String::new(),
            endpoints: vec![pb::EndpointLoad {
                endpoint: "lin".into(),
                concurrency: c,
                requests_per_second: 0.0,
                cold_start: cold,
                drained: vec![],
            }],
        };
        // Nothing reported, nothing to do.
        assert!(loads.plan(&h.s, t0, 0).is_empty());
        // A request waits: wake at once with one replica.
        let wake = loads.record(&h.s, &report(1.0, true));
        assert_eq!(wake, vec![("lin".to_string(), 1)]);
        h.scale(1);
        h.run("lin-replica-0", 0, 20001);
        // Idle for longer than scaleToZeroAfterSeconds (5 s) and the window: zero.
        let later = t0 + std::time::Duration::from_secs(30);
        let cmds = loads.plan(&h.s, later, 30_000);
        assert!(
            cmds.iter()
                .any(|c| matches!(c, Command::ScaleEndpoint { replicas: 0, .. })),
            "{cmds:?}"
        );
    }
}
