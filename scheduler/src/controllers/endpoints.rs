//! The endpoint controller (leader only): the gateways' load reports
//! ([`Loads`], soft state a new leader starts afresh) go through each
//! endpoint's autoscaler, and [`Loads::plan`] returns the `ScaleEndpoint`,
//! `ReplicaDrained` and `EndpointLoad` commands that bring every endpoint
//! where it should be. The apply side is `state::endpoints`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use gpuctl_common::api::TaskPhase;
use gpuctl_common::autoscaler::{Autoscaler, AutoscalerConfig};
use gpuctl_common::endpoint::{Endpoint, ReplicaStatus};
use gpuctl_proto::v1 as pb;
use tokio::time::Instant;

use crate::state::endpoints::finite;
use crate::state::{Command, State};

/// A draining replica the gateway never reports as idle is stopped after this.
pub const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);
/// Least time between two `EndpointLoad` writes for one endpoint.
const LOAD_WRITE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// Least time between two replacements of ended replicas of one endpoint.
const REPLACE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// Latency over those gateways, ms: the median weighted by each one's
    /// requests per second, and the largest 99th percentile.
    latency: (f64, f64),
    /// Draining replicas every such gateway last reported idle.
    drained: BTreeSet<String>,
    last_load_write: Option<Instant>,
    /// What the last `EndpointLoad` wrote: concurrency, requests per second,
    /// median and 99th percentile latency.
    written: [f64; 4],
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
    latency: (f64, f64),
    drained: BTreeSet<String>,
    /// Replica jobs it found ready.
    ready: BTreeSet<String>,
}

/// A gateway not heard from for this long no longer counts (it stopped, or
/// lost its way to the leader); its in-flight requests are no longer added.
const GATEWAY_STALE: std::time::Duration = std::time::Duration::from_secs(5);

impl EndpointLoad {
    /// Record `gateway`'s report at `now` and work out the sums again.
    fn report(&mut self, gateway: &str, now: Instant, l: &pb::EndpointLoad) {
        self.heard = true;
        self.gateways.insert(
            gateway.to_string(),
            GatewayReport {
                at: now,
                concurrency: finite(l.concurrency),
                rps: finite(l.requests_per_second),
                latency: (finite(l.latency_p50_ms), finite(l.latency_p99_ms)),
                drained: l.drained.iter().cloned().collect(),
                ready: l.ready.iter().cloned().collect(),
            },
        );
        self.gateways
            .retain(|_, g| now.saturating_duration_since(g.at) < GATEWAY_STALE);
        self.concurrency = self.gateways.values().map(|g| g.concurrency).sum();
        self.rps = self.gateways.values().map(|g| g.rps).sum();
        let p50: f64 = self.gateways.values().map(|g| g.latency.0 * g.rps).sum();
        let p99 = self
            .gateways
            .values()
            .map(|g| g.latency.1)
            .fold(0.0, f64::max);
        self.latency = (if self.rps > 0.0 { p50 / self.rps } else { 0.0 }, p99);
        let mut live = self.gateways.values();
        let first = live.next().map(|g| g.drained.clone()).unwrap_or_default();
        self.drained = live.fold(first, |acc, g| {
            acc.intersection(&g.drained).cloned().collect()
        });
    }

    /// Replica jobs some live gateway found ready.
    fn ready(&self) -> BTreeSet<&str> {
        self.gateways
            .values()
            .flat_map(|g| g.ready.iter().map(String::as_str))
            .collect()
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
                latency: (0.0, 0.0),
                drained: BTreeSet::new(),
                last_load_write: None,
                written: [0.0; 4],
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
            e.report(&req.gateway, now, l);
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
            } else if e
                .last_replace
                .is_none_or(|t| now.duration_since(t) >= REPLACE_EVERY)
            {
                let replace = (ended || ep.short_of_replicas())
                    && ep.status.backoff_until_ms.is_none_or(|t| now_ms >= t);
                // A stalled rollout is marked Failed when the state settles it.
                let reason = if replace {
                    Some("replacing a replica that ended")
                } else if ep.rollout_stalled(now_ms) {
                    Some("rollout progress deadline")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    e.last_replace = Some(now);
                    cmds.push(Command::ScaleEndpoint {
                        name: name.clone(),
                        replicas: ep.status.desired_replicas,
                        reason: reason.into(),
                    });
                }
            }
            // Replicas a gateway found ready: a rollout moves on.
            let ready = e.ready();
            let newly: Vec<String> = ep
                .status
                .replicas
                .iter()
                .filter(|r| !r.ready && ready.contains(r.job.as_str()))
                .map(|r| r.job.clone())
                .collect();
            if !newly.is_empty() {
                cmds.push(Command::ReplicasReady {
                    endpoint: name.clone(),
                    jobs: newly,
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
            let now_load = [e.rps, e.concurrency, e.latency.0, e.latency.1];
            // A change of 5% (10% for latencies, which vary more) is written.
            let changed = now_load
                .iter()
                .zip(e.written)
                .zip([0.05, 0.05, 0.1, 0.1])
                .any(|((now, was), by)| (now - was).abs() > by * was.max(1.0));
            if changed
                && e.last_load_write
                    .is_none_or(|t| now.duration_since(t) >= LOAD_WRITE_EVERY)
            {
                e.last_load_write = Some(now);
                e.written = now_load;
                cmds.push(Command::EndpointLoad {
                    name: name.clone(),
                    concurrency: e.concurrency,
                    requests_per_second: e.rps,
                    latency_p50_ms: e.latency.0,
                    latency_p99_ms: e.latency.1,
                });
            }
        }
        cmds
    }
}

/// The `ScaleEndpoint` commands for the endpoints [`Loads::record`] found
/// cold: a request waits and no replica serves.
pub fn cold_starts(wake: Vec<(String, u32)>) -> Vec<Command> {
    wake.into_iter()
        .map(|(name, replicas)| Command::ScaleEndpoint {
            name,
            replicas,
            reason: gpuctl_common::autoscaler::Reason::ColdStart.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::endpoints::{endpoint_of, replica_job, MODEL_SERVER};
    use crate::state::testutil::register;
    use crate::state::{Applied, ApplyError, Binding, Envelope, ObjKey, TaskPlacement, TaskReport};
    use gpuctl_common::api::GpuShare;

    fn endpoint(min: u32, max: u32) -> Endpoint {
        gpuctl_testkit::endpoint("lin")
            .model("/m/linear.onnx")
            .gpus(1.0)
            .replicas(min, max)
            .target_concurrency(1.0)
            .scale_to_zero_after_seconds(5)
            .stable_window_seconds(10)
            .build()
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
            let n1 = gpuctl_testkit::node("n1")
                .uuid_prefix("GPU")
                .gpus(4, gpuctl_testkit::A100);
            h.apply(register(&n1.build())).unwrap();
            h
        }
        fn apply(&mut self, cmd: Command) -> Result<Applied, ApplyError> {
            self.index += 1;
            let now = self.now_ms();
            let r = self.s.apply(self.index, &Envelope::new(now, cmd));
            self.s.check_index();
            r
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
                    gpu_fault: None,
                    outputs: None,
                    usage: None,
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
                    gpu_fault: None,
                    outputs: None,
                    usage: None,
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
        // A node with TLS (its agent speaks https) gives its replicas
        // certificates: they are reached over https, unless the endpoint's
        // own server speaks plain HTTP (`server.tls: false`).
        for n in h.s.nodes.values_mut() {
            n.status.agent_endpoint = n.status.agent_endpoint.replace("http://", "https://");
        }
        assert_eq!(
            h.replicas()[0].url.as_deref(),
            Some("https://127.0.0.1:20001")
        );
        let model = h.s.endpoints["lin"].spec.clone();
        let mut plain = model.clone();
        assert!(plain.serves_tls());
        plain.model = None;
        plain.server = Some(
            serde_json::from_value(serde_json::json!({"command": ["vllm"], "tls": false})).unwrap(),
        );
        assert!(!plain.serves_tls());
        h.s.endpoints.get_mut("lin").unwrap().spec = plain;
        assert_eq!(
            h.replicas()[0].url.as_deref(),
            Some("http://127.0.0.1:20001")
        );
        h.s.endpoints.get_mut("lin").unwrap().spec = model;
        for n in h.s.nodes.values_mut() {
            n.status.agent_endpoint = n.status.agent_endpoint.replace("https://", "http://");
        }
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
    fn a_rollout_past_its_progress_deadline_is_settled_as_failed() {
        use gpuctl_common::endpoint::RolloutPhase;
        let mut h = H::new();
        h.apply(Command::CreateEndpoint {
            endpoint: Box::new(endpoint(1, 1)),
        })
        .unwrap();
        h.run("lin-replica-0", 0, 20001);
        h.apply(Command::ReplicasReady {
            endpoint: "lin".into(),
            jobs: vec!["lin-replica-0".into()],
        })
        .unwrap();
        let mut next = endpoint(1, 1);
        next.spec.model.as_mut().unwrap().path = "/m/other.onnx".into();
        next.spec.progress_deadline_seconds = Some(20);
        h.apply(Command::UpdateEndpoint {
            endpoint: Box::new(next),
        })
        .unwrap();
        // Revision 2's replica runs and never turns ready.
        h.run("lin-replica-1", 1, 20002);
        let loads = Loads::default();
        let t0 = loads.origin;
        let plan_and_apply = |h: &mut H| {
            let secs = std::time::Duration::from_millis(h.now_ms());
            for c in loads.plan(&h.s, t0 + secs, h.now_ms()) {
                h.apply(c).unwrap();
            }
        };
        let phase = |h: &H| h.s.endpoints["lin"].status.rollout.clone().unwrap().phase;
        plan_and_apply(&mut h);
        assert_eq!(phase(&h), RolloutPhase::Progressing);
        h.skew_ms += 25_000;
        plan_and_apply(&mut h);
        let ep = h.s.endpoint_view("lin").unwrap();
        let r = ep.status.rollout.unwrap();
        assert_eq!(r.phase, RolloutPhase::Failed, "{r:?}");
        assert!(r.message.contains("ProgressDeadlineExceeded"), "{r:?}");
        assert!(
            ep.status
                .replicas
                .iter()
                .any(|r| r.job == "lin-replica-0" && !r.draining()),
            "revision 1 keeps serving"
        );
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
                latency_p50_ms: c,
                latency_p99_ms: c * 10.0,
                ready: vec![],
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
        // Latency: the median weighted by requests, the larger p99.
        let (p50, p99) = loads.lock()["lin"].latency;
        assert!(
            (p50 - (3.0 * 30.0 + 4.0 * 40.0) / 70.0).abs() < 1e-9,
            "{p50}"
        );
        assert_eq!(p99, 40.0);
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
                ..Default::default()
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
                ..Default::default()
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
