//! The gateway's link to the scheduler: learns each endpoint's ready replicas, asks
//! for a replica when a request finds none, reports load, and confirms drains.
//!
//! ```text
//! scheduler Get(endpoints) ─every 500 ms (20 ms while a cold start is pending)─►
//!   replicas Running, not draining, with a URL ─► probe GET /v2/health/ready (or /health for protocol: openai)
//!       (every 10 ms) ─ready─► Gateway::set_replicas (at once, not at the next poll)
//!   replicas draining ─► removed from routing; once no request is in flight on them
//!       they are listed as drained in the next report
//! request for an endpoint not routed ─► Get(endpoints) at once; the request waits
//!   (≤ 1 s) for that answer before 404, so an endpoint just applied is found
//! Gateway ScaleUp hook ─► ReportLoad { cold_start } at once
//! every second ─► ReportLoad { concurrency, requests/s, drained }
//! ```
//!
//! Several schedulers may be given: a call that fails moves on to the next one.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gpuctl_common::endpoint::{Endpoint, EndpointProtocol};
use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::control_client::ControlClient;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;

use crate::gateway::{Gateway, Replica};

/// How the gateway follows the scheduler.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Scheduler gRPC URLs (`http://host:port`), tried in turn.
    pub servers: Vec<String>,
    /// Poll period when nothing is pending.
    pub poll_idle: Duration,
    /// Poll period while a request waits for a replica or a replica is starting.
    pub poll_busy: Duration,
    /// How often load is reported.
    pub report_every: Duration,
    /// Probe period of a starting replica's `/v2/health/ready`.
    pub probe_every: Duration,
    /// A replica not ready after this long is probed no more (until it restarts).
    pub probe_timeout: Duration,
    /// Bearer token sent on every call (a user with role gateway).
    pub token: Option<String>,
    /// TLS to the scheduler (presenting the gateway's certificate); None: plaintext.
    pub tls: Option<gpuctl_security::tls::Tls>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            servers: Vec::new(),
            poll_idle: Duration::from_millis(500),
            poll_busy: Duration::from_millis(20),
            report_every: Duration::from_secs(1),
            probe_every: Duration::from_millis(10),
            probe_timeout: Duration::from_secs(300),
            token: None,
            tls: None,
        }
    }
}

/// Puts `authorization: Bearer <token>` on every call to the scheduler.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Scheduler clients with failover.
struct Schedulers {
    clients: Vec<ControlClient<InterceptedService<Channel, Bearer>>>,
    /// Each client's URL (with the scheme it speaks), for messages.
    urls: Vec<String>,
    /// The CA trusted, for messages.
    ca: Option<std::path::PathBuf>,
    current: usize,
}

impl Schedulers {
    fn new(
        urls: &[String],
        token: Option<&str>,
        tls: Option<&gpuctl_security::tls::Tls>,
    ) -> anyhow::Result<Schedulers> {
        let bearer = match token.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => {
                let mut v: MetadataValue<Ascii> = format!("Bearer {t}").parse().map_err(|_| {
                    anyhow::anyhow!("the token has characters a header cannot carry")
                })?;
                v.set_sensitive(true);
                Bearer(Some(v))
            }
            None => Bearer(None),
        };
        let mut clients = Vec::new();
        let mut with_scheme = Vec::new();
        for u in urls {
            with_scheme.push(gpuctl_security::tls::url(u, tls.is_some()));
            let ch = gpuctl_security::tls::endpoint(u, tls)
                .map_err(|e| anyhow::anyhow!("scheduler address {u:?}: {e}"))?
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(10))
                .tcp_nodelay(true)
                .connect_lazy();
            clients.push(ControlClient::with_interceptor(ch, bearer.clone()));
        }
        if clients.is_empty() {
            anyhow::bail!("no scheduler address given");
        }
        Ok(Schedulers {
            clients,
            urls: with_scheme,
            ca: tls.and_then(|t| t.ca_path().map(std::path::Path::to_path_buf)),
            current: 0,
        })
    }

    fn failed(&mut self, what: &str, e: &tonic::Status) {
        let url = &self.urls[self.current];
        // A TLS mismatch, said as such; otherwise the status's message.
        let why = std::error::Error::source(e)
            .and_then(|s| gpuctl_security::tls::explain(s, url, self.ca.as_deref()))
            .unwrap_or_else(|| e.message().to_string());
        tracing::warn!("scheduler {url}: {what}: {why}; trying the next one");
        self.current = (self.current + 1) % self.clients.len();
    }

    async fn endpoints(&mut self) -> Option<Vec<Endpoint>> {
        let mut c = self.clients[self.current].clone();
        match c
            .get(pb::GetRequest {
                kind: "endpoints".into(),
                name: String::new(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => Some(
                r.into_inner()
                    .objects_json
                    .iter()
                    .filter_map(|j| serde_json::from_str(j).ok())
                    .collect(),
            ),
            Err(e) => {
                self.failed("listing endpoints", &e);
                None
            }
        }
    }

    async fn report(&mut self, req: pb::ReportLoadRequest) -> bool {
        let mut c = self.clients[self.current].clone();
        match c.report_load(req).await {
            Ok(_) => true,
            Err(e) => {
                self.failed("reporting load", &e);
                false
            }
        }
    }
}

/// This gateway process's id in load reports: its pid and start time, so that
/// gateways on other machines (or a restarted one) are told apart.
fn gateway_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("gw-{}-{nanos:x}", std::process::id())
}

/// Why an endpoint has no ready replica, for 503 answers.
fn note(ep: &Endpoint) -> Option<String> {
    if ep.status.replicas.is_empty() {
        let ended = ep
            .status
            .events
            .iter()
            .rev()
            .find(|e| e.reason == "ReplicaEnded")
            .map(|e| format!("last replica ended: {}", e.message));
        let now = gpuctl_common::now_ms();
        return match ep.status.backoff_until_ms.filter(|&t| t > now) {
            Some(until) => Some(format!(
                "{}{}{} replicas in a row failed soon after starting; the next starts in {:.1} s",
                ended.as_deref().unwrap_or(""),
                if ended.is_some() { "; " } else { "" },
                ep.status.consecutive_failures,
                (until - now) as f64 / 1000.0
            )),
            None => ended,
        };
    }
    let states: Vec<String> = ep
        .status
        .replicas
        .iter()
        .filter(|r| !r.draining())
        .map(|r| match r.phase {
            Some(gpuctl_common::api::TaskPhase::Pending) | None => {
                format!("{} is pending: no node has room for it yet", r.job)
            }
            Some(gpuctl_common::api::TaskPhase::Running) => {
                format!("{} is running but not ready", r.job)
            }
            Some(p) => format!("{} is {p}", r.job),
        })
        .collect();
    (!states.is_empty()).then(|| states.join("; "))
}

/// Follows the scheduler until `shutdown` resolves. `wake` carries the endpoints the
/// gateway's scale-up hook asked for.
pub async fn run(
    gateway: Arc<Gateway>,
    config: ClusterConfig,
    mut wake: mpsc::UnboundedReceiver<String>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut schedulers = Schedulers::new(
        &config.servers,
        config.token.as_deref(),
        config.tls.as_ref(),
    )?;
    let id = gateway_id();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<(String, String)>();
    // url → probe in progress (false) or ready (true), per endpoint.
    let mut probes: HashMap<String, HashMap<String, bool>> = HashMap::new();
    // url → flag that stops its probe once the replica is gone.
    let mut probe_stop: HashMap<String, Arc<AtomicBool>> = HashMap::new();
    // Draining replicas still routed to when first seen draining: (endpoint, job) → handle.
    let mut draining: HashMap<(String, String), Option<Arc<Replica>>> = HashMap::new();
    let mut known: Vec<Endpoint> = Vec::new();
    let mut last_served: HashMap<String, u64> = HashMap::new();
    // Each endpoint's latency histogram at the last report.
    let mut last_latency: HashMap<String, Vec<(f64, u64)>> = HashMap::new();
    let mut last_report = Instant::now();
    let mut next_poll = Instant::now();
    gateway.follow_scheduler();
    tokio::pin!(shutdown);
    // Concurrency is sampled 20 times per report period, apart from this loop (which
    // can wait seconds on a scheduler without a leader).
    let _sampler = AbortOnDrop(tokio::spawn({
        let gateway = gateway.clone();
        let every = (config.report_every / 20).max(Duration::from_millis(10));
        async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                gateway.sample_concurrency();
            }
        }
    }));

    loop {
        let busy = gateway.endpoint_names().iter().any(|e| gateway.waiting(e))
            || probes.values().any(|m| m.values().any(|r| !r));
        let poll_every = if busy {
            config.poll_busy
        } else {
            config.poll_idle
        };
        next_poll = next_poll.min(Instant::now() + poll_every);
        let report_at = last_report + config.report_every;
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            Some(ep) = wake.recv() => {
                let req = pb::ReportLoadRequest {
                    gateway: id.clone(),
                    endpoints: vec![pb::EndpointLoad {
                        endpoint: ep.clone(),
                        concurrency: gateway.concurrency(&ep) as f64,
                        requests_per_second: 0.0,
                        cold_start: true,
                        drained: Vec::new(),
                        latency_p50_ms: 0.0,
                        latency_p99_ms: 0.0,
                        ready: Vec::new(),
                    }],
                };
                schedulers.report(req).await;
                next_poll = Instant::now();
                continue;
            }
            Some((ep, url)) = ready_rx.recv() => {
                if let Some(m) = probes.get_mut(&ep) {
                    if let Some(r) = m.get_mut(&url) {
                        *r = true;
                    }
                }
                apply_routes(&gateway, &known, &probes, &mut draining);
                continue;
            }
            _ = tokio::time::sleep_until(next_poll) => {}
            // A request for an endpoint not routed yet (applied a moment ago?).
            _ = gateway.lookup_wanted() => {}
            _ = tokio::time::sleep_until(report_at) => {
                last_report = Instant::now();
                let drained = drained_now(&gateway, &known, &draining);
                let ready = ready_jobs(&known, &probes);
                let mut loads = Vec::new();
                for name in gateway.endpoint_names() {
                    let served = gateway.served(&name);
                    let before = last_served.insert(name.clone(), served).unwrap_or(served);
                    let buckets = gateway.latency_buckets(&name);
                    let earlier = last_latency.insert(name.clone(), buckets.clone()).unwrap_or_default();
                    let latency = |q| crate::gateway::quantile_ms(&earlier, &buckets, q).unwrap_or(0.0);
                    loads.push(pb::EndpointLoad {
                        endpoint: name.clone(),
                        concurrency: gateway.mean_concurrency(&name),
                        requests_per_second: served.saturating_sub(before) as f64
                            / config.report_every.as_secs_f64(),
                        cold_start: gateway.waiting(&name),
                        drained: drained.get(&name).cloned().unwrap_or_default(),
                        latency_p50_ms: latency(0.5),
                        latency_p99_ms: latency(0.99),
                        ready: ready.get(&name).cloned().unwrap_or_default(),
                    });
                }
                if !loads.is_empty() {
                    let req = pb::ReportLoadRequest {
                        gateway: id.clone(),
                        endpoints: loads,
                    };
                    schedulers.report(req).await;
                }
                continue;
            }
        }
        next_poll = Instant::now() + poll_every;
        let asked = gateway.lookups_asked();
        let Some(eps) = schedulers.endpoints().await else {
            continue;
        };
        known = eps;
        // Endpoints that went away.
        let names: HashSet<&str> = known.iter().map(|e| e.metadata.name.as_str()).collect();
        for old in gateway.endpoint_names() {
            if !names.contains(old.as_str()) {
                gateway.remove_endpoint(&old);
                probes.remove(&old);
                last_served.remove(&old);
            }
        }
        // Forget drains that are over (the replica is gone or serves again).
        let still_draining: HashSet<(&str, &str)> = known
            .iter()
            .flat_map(|e| {
                e.status
                    .replicas
                    .iter()
                    .filter(|r| r.draining())
                    .map(move |r| (e.metadata.name.as_str(), r.job.as_str()))
            })
            .collect();
        draining.retain(|(ep, job), _| still_draining.contains(&(ep.as_str(), job.as_str())));
        // Start probing replicas that serve and are not known ready.
        for ep in &known {
            let name = &ep.metadata.name;
            let m = probes.entry(name.clone()).or_default();
            let urls: HashSet<&str> = ep
                .status
                .replicas
                .iter()
                .filter(|r| r.serving())
                .filter_map(|r| r.url.as_deref())
                .collect();
            m.retain(|u, _| {
                let keep = urls.contains(u.as_str());
                if !keep {
                    if let Some(stop) = probe_stop.remove(u) {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                keep
            });
            for url in urls {
                if m.contains_key(url) {
                    continue;
                }
                m.insert(url.to_string(), false);
                let stop = Arc::new(AtomicBool::new(false));
                if let Some(old) = probe_stop.insert(url.to_string(), stop.clone()) {
                    old.store(true, Ordering::Relaxed);
                }
                tokio::spawn(probe(
                    gateway.clone(),
                    name.clone(),
                    (url.to_string(), ep.spec.protocol.ready_path()),
                    stop,
                    config.probe_every,
                    config.probe_timeout,
                    ready_tx.clone(),
                ));
            }
        }
        apply_routes(&gateway, &known, &probes, &mut draining);
        gateway.looked_up(asked);
    }
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Routes each endpoint to its ready replicas; draining ones leave the routes, and
/// the handle on each is kept so its in-flight requests can be counted.
fn apply_routes(
    gateway: &Gateway,
    known: &[Endpoint],
    probes: &HashMap<String, HashMap<String, bool>>,
    draining: &mut HashMap<(String, String), Option<Arc<Replica>>>,
) {
    for ep in known {
        let name = &ep.metadata.name;
        let before = gateway.replicas(name).unwrap_or_default();
        for r in ep.status.replicas.iter().filter(|r| r.draining()) {
            draining
                .entry((name.clone(), r.job.clone()))
                .or_insert_with(|| {
                    let url = r.url.as_deref()?;
                    before.iter().find(|x| x.url() == url).cloned()
                });
        }
        let ready = probes.get(name);
        let urls: Vec<String> = ep
            .status
            .replicas
            .iter()
            .filter(|r| r.serving())
            .filter_map(|r| r.url.clone())
            .filter(|u| ready.and_then(|m| m.get(u)).copied().unwrap_or(false))
            .collect();
        gateway.set_replicas(name, urls.clone());
        // A canary: its share of requests to the latest revision's replicas.
        let latest = ep.status.latest_revision;
        let split = ep.canary_percent().map(|p| {
            let canary = ep
                .status
                .replicas
                .iter()
                .filter(|r| ep.replica_revision(r) == latest);
            (
                p,
                canary
                    .filter_map(|r| r.url.clone())
                    .filter(|u| urls.contains(u))
                    .collect(),
            )
        });
        gateway.set_split(name, split);
        gateway.set_openai(name, ep.spec.protocol == EndpointProtocol::OpenAi);
        gateway.set_desired(name, ep.status.desired_replicas);
        gateway.set_api_keys(
            name,
            ep.spec
                .auth
                .as_ref()
                .map(|_| ep.status.api_key_hashes.clone()),
        );
        gateway.set_note(name, if urls.is_empty() { note(ep) } else { None });
        let now = gpuctl_common::now_ms();
        let backoff = ep
            .status
            .backoff_until_ms
            .filter(|&t| t > now && ep.status.consecutive_failures > 0)
            .map(|t| Duration::from_millis(t - now));
        gateway.set_backoff(name, backoff);
    }
}

/// Replica jobs this gateway found ready and has not seen draining, by
/// endpoint: the leader marks them ready, and a rollout moves on.
fn ready_jobs(
    known: &[Endpoint],
    probes: &HashMap<String, HashMap<String, bool>>,
) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for ep in known {
        let Some(m) = probes.get(&ep.metadata.name) else {
            continue;
        };
        for r in ep
            .status
            .replicas
            .iter()
            .filter(|r| !r.ready && r.serving())
        {
            if r.url.as_deref().is_some_and(|u| m.get(u) == Some(&true)) {
                out.entry(ep.metadata.name.clone())
                    .or_default()
                    .push(r.job.clone());
            }
        }
    }
    out
}

/// Draining replicas with no request in flight here, by endpoint.
fn drained_now(
    gateway: &Gateway,
    known: &[Endpoint],
    draining: &HashMap<(String, String), Option<Arc<Replica>>>,
) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for ep in known {
        let name = &ep.metadata.name;
        // Requests wait here for a replica: a draining one is what the cold-start
        // wake should revive, so it is not offered up to be stopped.
        if gateway.waiting(name) {
            continue;
        }
        let routed = gateway.replicas(name).unwrap_or_default();
        for r in ep.status.replicas.iter().filter(|r| r.draining()) {
            // Still routed (this gateway has not applied the drain yet): not drained.
            if r.url
                .as_deref()
                .is_some_and(|u| routed.iter().any(|x| x.url() == u))
            {
                continue;
            }
            let idle = match draining.get(&(name.clone(), r.job.clone())) {
                Some(Some(h)) => h.outstanding() == 0,
                Some(None) => true,
                None => false, // not seen draining yet
            };
            if idle {
                out.entry(name.clone()).or_default().push(r.job.clone());
            }
        }
    }
    out
}

/// Probes `url` until it answers ready, then reports it on `ready`. Why it
/// cannot be asked (a certificate the gateway does not trust) is logged
/// when it changes.
async fn probe(
    gateway: Arc<Gateway>,
    endpoint: String,
    (url, ready_path): (String, &'static str),
    stop: Arc<AtomicBool>,
    every: Duration,
    limit: Duration,
    ready: mpsc::UnboundedSender<(String, String)>,
) {
    let deadline = Instant::now() + limit;
    let mut last_error = String::new();
    while Instant::now() < deadline {
        if ready.is_closed() || stop.load(Ordering::Relaxed) {
            return;
        }
        let attempt = tokio::time::timeout(
            Duration::from_secs(1),
            gateway.probe_ready(&url, ready_path),
        )
        .await;
        match attempt {
            Ok(Ok(true)) => {
                tracing::info!(endpoint, url, "replica ready");
                let _ = ready.send((endpoint, url));
                return;
            }
            // Refused connections are a server still starting: not worth a line.
            Ok(Err(e)) if e != last_error && !e.contains("refused") => {
                tracing::warn!(endpoint, url, "replica not reachable: {e}");
                last_error = e;
            }
            _ => {}
        }
        tokio::time::sleep(every).await;
    }
    tracing::warn!(
        endpoint,
        url,
        "replica not ready after {limit:?}; giving up on it"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuctl_common::api::Event;

    fn endpoint() -> Endpoint {
        gpuctl_testkit::endpoint("lin")
            .model("/m/linear.onnx")
            .gpus(1.0)
            .build()
    }

    #[test]
    fn the_503_note_says_why_no_replica_serves() {
        let mut ep = endpoint();
        assert_eq!(note(&ep), None, "nothing known yet");
        ep.status.events.push(Event {
            time_ms: 1,
            reason: "ReplicaEnded".into(),
            message: "replica lin-replica-0 ended (Failed): exit status 1".into(),
        });
        assert_eq!(
            note(&ep).as_deref(),
            Some("last replica ended: replica lin-replica-0 ended (Failed): exit status 1")
        );
        // A crash loop: the note says so and when the next replica starts.
        ep.status.consecutive_failures = 3;
        ep.status.backoff_until_ms = Some(gpuctl_common::now_ms() + 60_000);
        let n = note(&ep).unwrap();
        assert!(n.starts_with("last replica ended: "), "{n}");
        assert!(
            n.contains("3 replicas in a row failed soon after starting; the next starts in"),
            "{n}"
        );
        // A back-off in the past is over and not mentioned.
        ep.status.backoff_until_ms = Some(1);
        assert!(!note(&ep).unwrap().contains("in a row"));
        // With replicas, each says where it is.
        ep.status
            .replicas
            .push(gpuctl_common::endpoint::ReplicaStatus {
                job: "lin-replica-1".into(),
                ..Default::default()
            });
        assert_eq!(
            note(&ep).as_deref(),
            Some("lin-replica-1 is pending: no node has room for it yet")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_draining_replica_is_not_reported_drained_while_requests_wait_for_one() {
        use crate::gateway::{GatewayConfig, NoScaleUp};
        let gateway = Gateway::new(GatewayConfig::default(), Arc::new(NoScaleUp));
        let mut ep = endpoint();
        ep.status
            .replicas
            .push(gpuctl_common::endpoint::ReplicaStatus {
                job: "lin-replica-0".into(),
                url: Some("http://127.0.0.1:9".into()),
                draining_since_ms: Some(1),
                ..Default::default()
            });
        let known = vec![ep];
        let mut draining = HashMap::new();
        apply_routes(&gateway, &known, &HashMap::new(), &mut draining);
        let idle = HashMap::from([("lin".to_string(), vec!["lin-replica-0".to_string()])]);
        assert_eq!(drained_now(&gateway, &known, &draining), idle);
        // A request arrives and waits in the queue: the replica is no longer offered.
        let held = tokio::spawn({
            let gateway = gateway.clone();
            async move {
                let req = hyper::Request::post("/v2/models/lin/infer")
                    .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
                    .unwrap();
                gateway.handle_request(req).await.status()
            }
        });
        for _ in 0..100 {
            if gateway.waiting("lin") {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(gateway.waiting("lin"), "the request should be queued");
        assert!(drained_now(&gateway, &known, &draining).is_empty());
        // It times out (503); the queue is empty and the drain can finish.
        assert_eq!(held.await.unwrap(), hyper::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(drained_now(&gateway, &known, &draining), idle);
    }
}
