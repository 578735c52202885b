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
//! endpoint's status, time from the envelope. What a replica job is
//! ([`replica_job`]) and whose replica a job is ([`endpoint_of`]) live here
//! too, for the API's feasibility check and the node assignments.

use std::collections::BTreeMap;

use gpuctl_common::api::{push_event, Job, JobSpec, TaskPhase, TaskSpec, Topology, API_VERSION};
use gpuctl_common::endpoint::{
    crash_loop_backoff_ms, Endpoint, EndpointStatus, ReplicaStatus, Revision, CRASH_LOOP_RESET_MS,
    ENDPOINT_LABEL,
};

use super::command::{Applied, ApplyError};
use super::objects::ObjKey;
use super::State;

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
                // HTTPS with the certificate the node gives the replica
                // ($GPUCTL_TLS_CERT, $GPUCTL_TLS_KEY); plain HTTP only on a
                // node started with --insecure ($GPUCTL_INSECURE).
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
                env_from: spec
                    .server
                    .as_ref()
                    .map(|s| s.env_from.clone())
                    .unwrap_or_default(),
                secret_files: spec
                    .server
                    .as_ref()
                    .map(|s| s.secret_files.clone())
                    .unwrap_or_default(),
                working_dir,
                resources: spec.resources.clone(),
                image: None,
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
    job.metadata.owner = ep.metadata.owner.clone();
    job
}

/// Whether `job` is a replica of some endpoint, and of which.
pub fn endpoint_of(job: &Job) -> Option<&str> {
    job.metadata.labels.get(ENDPOINT_LABEL).map(String::as_str)
}

/// A reported load figure, or 0 when it is negative, NaN or infinite.
pub fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v.max(0.0)
    } else {
        0.0
    }
}

impl State {
    pub(super) fn touch_endpoint(&mut self, index: u64, name: &str) {
        if let Some(e) = self.endpoints.get_mut(name) {
            e.metadata.resource_version = Some(index);
        }
        self.mark_dirty(ObjKey::Endpoint(name.to_string()));
    }

    pub(super) fn endpoint_applied(&self, name: &str) -> Applied {
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
        e.status.latest_revision = 1;
        e.status.stable_revision = 1;
        e.status.revisions = vec![Revision {
            revision: 1,
            spec: e.spec.clone(),
            created_ms: now,
            cause: "created".into(),
        }];
        push_event(
            &mut e.status.events,
            now,
            "Created",
            "endpoint created".into(),
        );
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
    pub(super) fn reconcile_endpoint(
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
        let latest = ep.status.latest_revision;
        let mut plan = ReplicaPlan::new(&ep.status);
        let backing_off = plan.drop_ended(&self.jobs, now);
        let ready_latest = plan
            .replicas
            .iter()
            .filter(|r| !r.draining() && r.ready && plan.revision_of(r) == latest)
            .count() as u32;
        let mut targets = ep.revision_targets(want, ready_latest);
        for r in &plan.replicas {
            let rev = plan.revision_of(r);
            if !targets.iter().any(|(t, _)| *t == rev) {
                targets.push((rev, 0));
            }
        }
        for &(rev, n) in &targets {
            // A revision dropped from the history has no spec: it only shrinks.
            if let Some(spec) = ep.revision_spec(rev) {
                let mut of_rev = ep.clone();
                of_rev.spec = spec.clone();
                plan.add_replicas(&self.jobs, name, &of_rev, rev, n, backing_off, now);
            }
        }
        // Revived replicas may be ready: the old revision's share follows.
        let ready_now = plan
            .replicas
            .iter()
            .filter(|r| !r.draining() && r.ready && plan.revision_of(r) == latest)
            .count() as u32;
        if ready_now != ready_latest {
            for (rev, n) in ep.revision_targets(want, ready_now) {
                if let Some(t) = targets.iter_mut().find(|(r, _)| *r == rev) {
                    t.1 = n;
                }
            }
        }
        for &(rev, n) in &targets {
            plan.remove_extra(&self.jobs, rev, n, now);
        }
        let ReplicaPlan {
            replicas,
            serial,
            failures,
            backoff_until,
            mut events,
            remove_jobs,
            new_jobs,
            ended_unready,
            ..
        } = plan;

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
        let ended: Vec<String> = ended_unready
            .into_iter()
            .filter(|(rev, _)| *rev == latest)
            .map(|(_, why)| why)
            .collect();
        events.extend(ep.settle_rollout(&ended, want, now));
        if want != old_desired {
            ep.status.reason = Some(reason.to_string());
            push_event(
                &mut ep.status.events,
                now,
                "Scaled",
                format!("{old_desired} → {want} replicas: {reason}"),
            );
        }
        for (r, m) in events {
            push_event(&mut ep.status.events, now, r, m);
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
        push_event(
            &mut ep.status.events,
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
        (p50, p99): (f64, f64),
    ) -> Result<Applied, ApplyError> {
        let Some(ep) = self.endpoints.get_mut(name) else {
            return Ok(Applied::Nothing);
        };
        ep.status.concurrency = finite(concurrency);
        ep.status.requests_per_second = finite(rps);
        ep.status.latency_p50_ms = finite(p50);
        ep.status.latency_p99_ms = finite(p99);
        self.touch_endpoint(index, name);
        Ok(Applied::Nothing)
    }
}

/// The replica set [`State::reconcile_endpoint`] works on before writing it
/// back: a copy of the endpoint's replica status, and the jobs to create and
/// stop and the events to record on the way.
struct ReplicaPlan {
    replicas: Vec<ReplicaStatus>,
    /// The serial of the next replica job's name.
    serial: u64,
    failures: u32,
    backoff_until: Option<u64>,
    events: Vec<(&'static str, String)>,
    remove_jobs: Vec<String>,
    new_jobs: Vec<Job>,
    /// A replica ended in this apply (the back-off event is recorded once).
    newly_failed: bool,
    /// The revision of replicas made before revisions were kept.
    stable: u64,
    /// Replicas not draining that ended before a gateway found them ready:
    /// their revision, and why they ended.
    ended_unready: Vec<(u64, String)>,
}

impl ReplicaPlan {
    fn new(status: &EndpointStatus) -> ReplicaPlan {
        ReplicaPlan {
            replicas: status.replicas.clone(),
            serial: status.next_replica,
            failures: status.consecutive_failures,
            backoff_until: status.backoff_until_ms,
            events: Vec::new(),
            remove_jobs: Vec::new(),
            new_jobs: Vec::new(),
            newly_failed: false,
            stable: status.stable_revision,
            ended_unready: Vec::new(),
        }
    }

    /// The revision `r` runs.
    fn revision_of(&self, r: &ReplicaStatus) -> u64 {
        if r.revision == 0 {
            self.stable
        } else {
            r.revision
        }
    }

    /// Replicas of revision `rev` not draining.
    fn serving(&self, rev: u64) -> u32 {
        self.replicas
            .iter()
            .filter(|r| !r.draining() && self.revision_of(r) == rev)
            .count() as u32
    }

    /// 1. Replicas whose job ended are gone. One that ended on its own soon
    ///    after it started is a step of a crash loop: its replacement waits.
    ///    Returns whether replacements wait (backing off) at `now`.
    fn drop_ended(&mut self, jobs: &BTreeMap<String, Job>, now: u64) -> bool {
        let stable = self.stable;
        self.replicas.retain(|r| match jobs.get(&r.job) {
            Some(j) if !j.status.phase.is_terminal() => true,
            Some(j) => {
                let why = j.status.message.clone().unwrap_or_default();
                if !r.draining() && !r.ready {
                    let rev = if r.revision == 0 { stable } else { r.revision };
                    self.ended_unready.push((rev, why.clone()));
                }
                if !r.draining() {
                    self.events.push((
                        "ReplicaEnded",
                        format!("replica {} ended ({}): {why}", r.job, j.status.phase),
                    ));
                    let task = j.status.tasks.first();
                    let finished = task.and_then(|t| t.finish_time_ms).unwrap_or(now);
                    let started = task.and_then(|t| t.start_time_ms);
                    let served_long =
                        started.is_some_and(|s| finished.saturating_sub(s) >= CRASH_LOOP_RESET_MS);
                    self.failures = if served_long { 1 } else { self.failures + 1 };
                    let until = finished + crash_loop_backoff_ms(self.failures);
                    self.backoff_until = Some(self.backoff_until.map_or(until, |b| b.max(until)));
                    self.newly_failed = true;
                }
                self.remove_jobs.push(r.job.clone());
                false
            }
            None => false,
        });
        let backing_off = self.backoff_until.is_some_and(|t| now < t);
        if !backing_off {
            self.backoff_until = None;
        }
        backing_off
    }

    /// 2. Too few replicas of revision `rev` (whose spec `ep` holds): revive
    ///    its draining replicas, newest first, then add new ones (unless
    ///    backing off), named `<name>-replica-<serial>`.
    #[allow(clippy::too_many_arguments)]
    fn add_replicas(
        &mut self,
        jobs: &BTreeMap<String, Job>,
        name: &str,
        ep: &Endpoint,
        rev: u64,
        want: u32,
        backing_off: bool,
        now: u64,
    ) {
        let stable = self.stable;
        let of_rev =
            move |r: &ReplicaStatus| (if r.revision == 0 { stable } else { r.revision }) == rev;
        while self.serving(rev) < want {
            if let Some(r) = self
                .replicas
                .iter_mut()
                .rev()
                .find(|r| r.draining() && of_rev(r))
            {
                r.draining_since_ms = None;
                self.events
                    .push(("ReplicaRevived", format!("replica {} serves again", r.job)));
                continue;
            }
            if backing_off {
                if self.newly_failed {
                    let wait = self.backoff_until.unwrap_or(now).saturating_sub(now);
                    self.events.push((
                        "BackOff",
                        format!(
                            "{} replicas in a row ended within {} s of starting; \
                             the next starts in {:.1} s",
                            self.failures,
                            CRASH_LOOP_RESET_MS / 1000,
                            wait as f64 / 1000.0
                        ),
                    ));
                }
                break;
            }
            let mut job_name = format!("{name}-replica-{}", self.serial);
            self.serial += 1;
            while jobs.contains_key(&job_name)
                || self.new_jobs.iter().any(|j| j.metadata.name == job_name)
            {
                job_name = format!("{name}-replica-{}", self.serial);
                self.serial += 1;
            }
            self.new_jobs.push(replica_job(ep, &job_name));
            self.replicas.push(ReplicaStatus {
                job: job_name,
                revision: rev,
                ..Default::default()
            });
        }
    }

    /// 3. Too many of revision `rev`: drop replicas not yet running, then
    ///    drain the newest running.
    fn remove_extra(&mut self, jobs: &BTreeMap<String, Job>, rev: u64, want: u32, now: u64) {
        let stable = self.stable;
        let of_rev =
            move |r: &ReplicaStatus| (if r.revision == 0 { stable } else { r.revision }) == rev;
        while self.serving(rev) > want {
            let not_running = self.replicas.iter().rposition(|r| {
                !r.draining()
                    && of_rev(r)
                    && jobs
                        .get(&r.job)
                        .and_then(|j| j.status.tasks.first())
                        .is_none_or(|t| t.phase != TaskPhase::Running)
            });
            if let Some(i) = not_running {
                let r = self.replicas.remove(i);
                self.remove_jobs.push(r.job);
                continue;
            }
            if let Some(r) = self
                .replicas
                .iter_mut()
                .rev()
                .find(|r| !r.draining() && of_rev(r))
            {
                r.draining_since_ms = Some(now);
                self.events
                    .push(("ReplicaDraining", format!("replica {} is draining", r.job)));
            }
        }
    }
}
