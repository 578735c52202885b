//! The gateway: routes `/v2/models/{endpoint}/...` to that endpoint's ready replicas.
//!
//! ```text
//! request ─► /v2/models/{e}/… ─► read body (limit, 413)
//!         ─► endpoint has replicas? ── no ─► activator queue (bounded; full → 503)
//!         │                                  scale-up hook, once per cold start
//!         │                                  wait for set_replicas (timeout → 503)
//!         ▼ yes
//!         p2c over outstanding requests ─► forward ([`crate::upstream`]: per-thread
//!                                              pools of keep-alive connections)
//!         connect failed (request not sent) ─► retry on a replica not yet tried
//!         no answer within the response timeout ─► 504
//!         response: length known and ≤ 1 MiB ─► read whole (broken off → 502)
//!                   otherwise (chunked, SSE, large) ─► streamed to the client as it comes
//! ```
//!
//! Replicas come from [`Gateway::set_replicas`]: static flags, or [`crate::cluster`]
//! following the scheduler.
//! A replica removed there gets no new requests; requests already sent to it finish,
//! because each holds its own handle on the replica.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::header::{EXPECT, HOST};
use hyper::{Request, Response, StatusCode};
use prometheus::{Histogram, IntCounter, IntGauge, Registry};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::http::{self, strip_hop_by_hop};

mod auth;
mod body;
mod canary;
mod config;
mod lookup;
mod metrics;
mod openai;
mod probe;
mod split;
mod target;
use crate::p2c::{self, Rng, SplitMix64};
use crate::upstream::{self, ResponseBody, SendError};
pub use auth::API_KEY_HEADER;
use body::{whole, InFlight};
pub use body::{GatewayBody, Streamed};
pub use config::{GatewayConfig, NoScaleUp, ScaleUp};
pub use metrics::quantile_ms;
use metrics::Metrics;
use target::{parse_base, Target};

/// How a request for an endpoint the gateway does not know gets a fresh answer
/// before 404, when the gateway follows a scheduler ([`crate::cluster`]): an
/// endpoint just applied is routed at once, not at the next poll.
#[derive(Default)]
struct Lookup {
    /// Set while a scheduler is followed.
    following: std::sync::atomic::AtomicBool,
    /// Numbered requests for a fresh look, and the wakeup of the loop that looks.
    asked: AtomicU64,
    wanted: tokio::sync::Notify,
    /// The highest request number that a finished look started after.
    answered: watch::Sender<u64>,
}

/// How long a request for an unknown endpoint waits for a fresh look before 404.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// One replica: where it is and how busy the gateway keeps it.
#[derive(Debug)]
pub struct Replica {
    /// `http://host:port` or `https://host:port`, no trailing slash.
    base: String,
    /// `base`, parsed once, or why it cannot be reached.
    target: Result<Target, String>,
    /// Names its idle connections in the per-thread pools; never reused.
    id: u64,
    outstanding: AtomicUsize,
}

impl Replica {
    pub fn url(&self) -> &str {
        &self.base
    }
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }
}

/// Holds one outstanding request on a replica; dropping it releases the slot.
struct Outstanding(Arc<Replica>);

/// Responses whose length is known and at most this are read whole before they are
/// answered, so that one the replica breaks off becomes a clear 502; longer ones, and
/// those of unknown length (chunked: token streams, server-sent events), are streamed.
pub const BUFFER_RESPONSES_UP_TO: u64 = 1 << 20;

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Endpoint {
    /// Its name and metric handles, shared with the requests under way.
    route: Arc<Route>,
    replicas: Vec<Arc<Replica>>,
    /// The replica count, for requests waiting in the activator queue.
    ready: watch::Sender<usize>,
    /// Requests held waiting for a replica.
    queued: usize,
    /// Whether this cold start has already asked for a scale-up.
    scale_up_requested: bool,
    /// Why the endpoint has no replica, when known (quoted in 503 answers).
    note: Option<String>,
    /// Samples of the concurrency since the last report: their sum and count.
    sampled: (f64, u32),
    /// The SHA-256 of each accepted API key, when the endpoint requires one.
    api_keys: Option<Arc<[String]>>,
    /// Until when its replicas are in crash-loop back-off (no new one starts
    /// before): a request that finds no replica fails at once, saying why.
    /// Held requests watch it too: a back-off learned while they wait ends
    /// their wait at once.
    backoff_until: watch::Sender<Option<Instant>>,
    /// Its replicas speak OpenAI's API (`protocol: openai`): `/v1/...` routes here.
    openai: bool,
    /// A canary's share of requests while one rolls out ([`Gateway::set_split`]).
    split: Option<split::Split>,
}

impl Endpoint {
    /// Requests held or in flight on its routed replicas.
    fn concurrency(&self) -> usize {
        self.queued + self.replicas.iter().map(|r| r.outstanding()).sum::<usize>()
    }
}

/// What a request needs of its endpoint without the endpoints lock: the name, and the
/// endpoint's metrics with their labels resolved once (a `with_label_values` lookup
/// hashes the labels and takes a lock; three per request cost more than the routing).
struct Route {
    name: String,
    in_flight: IntGauge,
    duration: Histogram,
    /// `requests_total{code="200"}`; other codes are looked up when they happen.
    ok: IntCounter,
    /// Requests answered, for the requests-per-second the gateway reports.
    served: AtomicU64,
}

impl Route {
    fn new(name: &str, metrics: &Metrics) -> Route {
        Route {
            name: name.to_string(),
            in_flight: metrics.in_flight.with_label_values(&[name]),
            duration: metrics.duration.with_label_values(&[name]),
            ok: metrics.requests.with_label_values(&[name, "200"]),
            served: AtomicU64::new(0),
        }
    }
}

/// The gateway: endpoints, their replicas, the client pool, metrics.
pub struct Gateway {
    config: GatewayConfig,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    /// Tells this gateway's per-thread connection pools from another's.
    id: usize,
    client: upstream::Client,
    rng: Mutex<Box<dyn Rng>>,
    scale_up: Arc<dyn ScaleUp>,
    metrics: Metrics,
    /// Asking the scheduler again about an endpoint the gateway does not know.
    lookup: Lookup,
}

impl Gateway {
    /// A gateway with a seeded default RNG. Call within a tokio runtime.
    pub fn new(config: GatewayConfig, scale_up: Arc<dyn ScaleUp>) -> Arc<Gateway> {
        Gateway::with_rng(
            config,
            scale_up,
            Box::new(SplitMix64::new(0x6770_7563_746c)),
        )
    }

    /// A gateway whose replica choices come from `rng`.
    pub fn with_rng(
        config: GatewayConfig,
        scale_up: Arc<dyn ScaleUp>,
        rng: Box<dyn Rng>,
    ) -> Arc<Gateway> {
        static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        Arc::new(Gateway {
            client: upstream::Client {
                connect_timeout: config.connect_timeout,
                idle_timeout: config.pool_idle_timeout,
                whole_up_to: BUFFER_RESPONSES_UP_TO,
                tls: config.replica_tls.clone(),
            },
            config,
            endpoints: Mutex::new(HashMap::new()),
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            rng: Mutex::new(rng),
            scale_up,
            metrics: Metrics::new(),
            lookup: Lookup::default(),
        })
    }

    /// The registry behind `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.metrics.registry
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Endpoint>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the ready replicas of `endpoint` (creating it), as base URLs such as
    /// `http://10.0.0.5:8000`. Replicas that stay keep their load counts; removed ones get
    /// no new requests while their in-flight requests finish. Held requests are released
    /// as soon as a replica appears.
    pub fn set_replicas(&self, endpoint: &str, urls: Vec<String>) {
        let mut eps = self.lock();
        let ep = eps.entry(endpoint.to_string()).or_insert_with(|| Endpoint {
            route: Arc::new(Route::new(endpoint, &self.metrics)),
            replicas: Vec::new(),
            ready: watch::Sender::new(0),
            queued: 0,
            scale_up_requested: false,
            note: None,
            sampled: (0.0, 0),
            api_keys: None,
            backoff_until: watch::Sender::new(None),
            openai: false,
            split: None,
        });
        let old = std::mem::take(&mut ep.replicas);
        for url in urls {
            let base = url.trim_end_matches('/').to_string();
            if ep.replicas.iter().any(|r| r.base == base) {
                continue;
            }
            let replica = old
                .iter()
                .find(|r| r.base == base)
                .cloned()
                .unwrap_or_else(|| {
                    static NEXT_REPLICA: AtomicU64 = AtomicU64::new(0);
                    Arc::new(Replica {
                        target: parse_base(&base),
                        id: NEXT_REPLICA.fetch_add(1, Ordering::Relaxed),
                        base,
                        outstanding: AtomicUsize::new(0),
                    })
                });
            ep.replicas.push(replica);
        }
        if !ep.replicas.is_empty() {
            ep.scale_up_requested = false;
        }
        ep.ready.send_replace(ep.replicas.len());
        self.metrics
            .ready_replicas
            .with_label_values(&[endpoint])
            .set(ep.replicas.len() as i64);
    }

    /// Forgets `endpoint`: new requests get 404; held requests time out with 503.
    pub fn remove_endpoint(&self, endpoint: &str) {
        self.lock().remove(endpoint);
        let m = &self.metrics;
        for g in [&m.ready_replicas, &m.desired_replicas, &m.queued] {
            let _ = g.remove_label_values(&[endpoint]);
        }
    }

    /// The replicas the autoscaler wants for `endpoint` (for the metrics).
    pub fn set_desired(&self, endpoint: &str, desired: u32) {
        self.metrics
            .desired_replicas
            .with_label_values(&[endpoint])
            .set(i64::from(desired));
    }

    /// The endpoints the gateway routes.
    pub fn endpoint_names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Requests answered for `endpoint` so far.
    pub fn served(&self, endpoint: &str) -> u64 {
        self.lock()
            .get(endpoint)
            .map_or(0, |e| e.route.served.load(Ordering::Relaxed))
    }

    /// `endpoint`'s request-duration buckets so far (bound in s, cumulative count).
    pub fn latency_buckets(&self, endpoint: &str) -> Vec<(f64, u64)> {
        let eps = self.lock();
        eps.get(endpoint)
            .map_or_else(Vec::new, |e| metrics::buckets(&e.route.duration))
    }

    /// Whether requests are held for `endpoint` because it has no replica.
    pub fn waiting(&self, endpoint: &str) -> bool {
        self.lock()
            .get(endpoint)
            .is_some_and(|e| e.queued > 0 && e.replicas.is_empty())
    }

    /// Sets why `endpoint` has no ready replica (e.g. "replica pending: no node
    /// has a free GPU"); a held request that times out quotes it.
    pub fn set_note(&self, endpoint: &str, note: Option<String>) {
        if let Some(e) = self.lock().get_mut(endpoint) {
            e.note = note;
        }
    }

    /// Says that `endpoint`'s replicas keep failing and none starts again for
    /// `remaining` (`None`: not backing off). Meanwhile a request that finds no
    /// replica gets 503 at once with the reason and `Retry-After`, instead of
    /// waiting out the cold-start timeout.
    pub fn set_backoff(&self, endpoint: &str, remaining: Option<Duration>) {
        if let Some(e) = self.lock().get_mut(endpoint) {
            e.backoff_until
                .send_replace(remaining.map(|d| Instant::now() + d));
        }
    }

    /// Requires one of these API keys (their SHA-256 hashes) for requests to
    /// `endpoint`; `None`: the endpoint is open.
    pub fn set_api_keys(&self, endpoint: &str, hashes: Option<Vec<String>>) {
        if let Some(e) = self.lock().get_mut(endpoint) {
            e.api_keys = hashes.map(Arc::from);
        }
    }

    /// The replicas of `endpoint` (None if there is no such endpoint).
    pub fn replicas(&self, endpoint: &str) -> Option<Vec<Arc<Replica>>> {
        self.lock().get(endpoint).map(|e| e.replicas.clone())
    }

    /// Observed concurrency of `endpoint`: requests outstanding on its replicas plus
    /// requests held waiting for one. [`Gateway::sample_concurrency`] samples it for
    /// the load reports the autoscaler reads.
    pub fn concurrency(&self, endpoint: &str) -> usize {
        self.lock().get(endpoint).map_or(0, Endpoint::concurrency)
    }

    /// Adds a sample of every endpoint's concurrency to its mean for the next report.
    /// Taken many times a second, the mean is the time-weighted concurrency over the
    /// report period (as Knative's queue-proxy reports it), where one reading at
    /// report time would mostly miss short requests.
    pub fn sample_concurrency(&self) {
        for e in self.lock().values_mut() {
            let c = e.concurrency() as f64;
            e.sampled.0 += c;
            e.sampled.1 += 1;
        }
    }

    /// The mean of `endpoint`'s samples since the last call, and starts afresh; the
    /// concurrency now when there was no sample.
    pub fn mean_concurrency(&self, endpoint: &str) -> f64 {
        self.lock().get_mut(endpoint).map_or(0.0, |e| {
            let (sum, n) = std::mem::take(&mut e.sampled);
            if n == 0 {
                e.concurrency() as f64
            } else {
                sum / f64::from(n)
            }
        })
    }

    /// Picks a replica not in `tried` by p2c and counts a request on it.
    fn pick(&self, endpoint: &str, tried: &[Arc<Replica>]) -> Option<Outstanding> {
        let eps = self.lock();
        let ep = eps.get(endpoint)?;
        let all = &ep.replicas;
        let replica = if tried.is_empty() && ep.split.is_none() {
            // The usual case: no allocation, and no draw for a single replica.
            let i = match all.len() {
                0 => return None,
                1 => 0,
                n => {
                    let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                    p2c::pick_by(n, |i| all[i].outstanding(), rng.as_mut())?
                }
            };
            all[i].clone()
        } else {
            let mut candidates: Vec<&Arc<Replica>> = all
                .iter()
                .filter(|r| !tried.iter().any(|t| Arc::ptr_eq(t, r)))
                .collect();
            if let Some(s) = &ep.split {
                s.keep_group(&mut candidates, |r| &r.base);
            }
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            let i = p2c::pick_by(
                candidates.len(),
                |i| candidates[i].outstanding(),
                rng.as_mut(),
            )?;
            candidates[i].clone()
        };
        // Counted under the endpoints lock, so concurrent picks see it.
        replica.outstanding.fetch_add(1, Ordering::Relaxed);
        Some(Outstanding(replica))
    }

    /// Waits (in the activator queue) until `endpoint` has a replica or `deadline` passes.
    async fn wait_for_replica(
        &self,
        endpoint: &str,
        deadline: Instant,
    ) -> Result<(), Response<Full<Bytes>>> {
        let (mut ready, mut backoff, ask) = {
            let mut eps = self.lock();
            let Some(ep) = eps.get_mut(endpoint) else {
                return Err(no_endpoint(endpoint));
            };
            if !ep.replicas.is_empty() {
                return Ok(());
            }
            if let Some(resp) = backing_off(endpoint, ep) {
                return Err(resp);
            }
            if ep.queued >= self.config.queue_capacity {
                return Err(http::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "endpoint {endpoint} has no ready replica and its queue is full ({} requests waiting)",
                        ep.queued
                    ),
                ));
            }
            ep.queued += 1;
            self.metrics
                .queued
                .with_label_values(&[endpoint])
                .set(ep.queued as i64);
            let ask = !ep.scale_up_requested;
            ep.scale_up_requested = true;
            (ep.ready.subscribe(), ep.backoff_until.subscribe(), ask)
        };
        // Leaves the queue however this future ends (answered, timed out, cancelled).
        struct Queued<'a>(&'a Gateway, &'a str);
        impl Drop for Queued<'_> {
            fn drop(&mut self) {
                if let Some(ep) = self.0.lock().get_mut(self.1) {
                    ep.queued -= 1;
                    self.0
                        .metrics
                        .queued
                        .with_label_values(&[self.1])
                        .set(ep.queued as i64);
                }
            }
        }
        let _queued = Queued(self, endpoint);
        if ask {
            self.metrics
                .cold_starts
                .with_label_values(&[endpoint])
                .inc();
            self.scale_up.scale_up(endpoint);
        }
        let held = Instant::now();
        let wait = async {
            tokio::select! {
                r = ready.wait_for(|n| *n > 0) => r.is_ok(),
                // Its replicas turn out to be failing: say so now.
                _ = backoff.wait_for(|b| b.is_some_and(|u| u > Instant::now())) => false,
            }
        };
        let appeared = matches!(tokio::time::timeout_at(deadline, wait).await, Ok(true));
        if !appeared {
            let eps = self.lock();
            if let Some(resp) = eps.get(endpoint).and_then(|ep| backing_off(endpoint, ep)) {
                return Err(resp);
            }
        }
        match appeared {
            true => {
                self.metrics
                    .cold_start_duration
                    .with_label_values(&[endpoint])
                    .observe(held.elapsed().as_secs_f64());
                Ok(())
            }
            false => {
                let note = self
                    .lock()
                    .get(endpoint)
                    .and_then(|e| e.note.clone())
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                Err(http::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "endpoint {endpoint} has no ready replica after {}s{note}",
                        self.config.cold_start_timeout.as_secs_f64()
                    ),
                ))
            }
        }
    }

    /// Answers one request. Generic over the body so tests can call it without a socket.
    pub async fn handle_request<B>(&self, req: Request<B>) -> Response<GatewayBody>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path();
        match path {
            "/metrics" => return whole(http::metrics(&self.metrics.registry)),
            "/healthz" => return whole(http::response(StatusCode::OK, "text/plain", "ok\n")),
            // Server metadata (V2 protocol), as `tritonclient`'s
            // `get_server_metadata` asks for it.
            "/v2" | "/v2/" => {
                return whole(http::json_value(
                    StatusCode::OK,
                    &serde_json::json!({
                        "name": "gpuctl-gateway",
                        "version": env!("CARGO_PKG_VERSION"),
                        "extensions": ["binary_tensor_data"],
                    }),
                ))
            }
            "/v2/health/live" | "/v2/health/ready" => {
                return whole(http::json_value(
                    StatusCode::OK,
                    &serde_json::json!({"live": true, "ready": true}),
                ))
            }
            _ if path.starts_with("/v1/") => return self.openai(req).await,
            _ => {}
        }
        let Some(endpoint) = path
            .strip_prefix("/v2/models/")
            .and_then(|rest| rest.split('/').next())
            .filter(|e| !e.is_empty())
        else {
            return whole(http::error(
                StatusCode::NOT_FOUND,
                &format!("no route {path}: the gateway serves /v2/models/{{endpoint}}/..."),
            ));
        };
        self.serve_endpoint(endpoint.to_string(), req).await
    }

    /// Routes a request to `endpoint`'s replicas: the endpoint looked up (asking the
    /// scheduler when unknown), its API key checked, the request forwarded and counted.
    async fn serve_endpoint<B>(&self, endpoint: String, req: Request<B>) -> Response<GatewayBody>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let route_of = |gw: &Gateway| {
            gw.lock()
                .get(&endpoint)
                .map(|e| (e.route.clone(), e.api_keys.clone()))
        };
        let mut found = route_of(self);
        if found.is_none() && self.known_after_lookup(&endpoint).await {
            found = route_of(self);
        }
        let Some((route, api_keys)) = found else {
            return whole(no_endpoint(&endpoint));
        };
        let mut req = req;
        if let Some(keys) = api_keys {
            if let Err(why) = auth::check(&endpoint, &keys, req.headers()) {
                self.metrics
                    .requests
                    .with_label_values(&[&route.name, "401"])
                    .inc();
                return whole(auth::unauthorized(&why));
            }
            auth::strip(req.headers_mut());
        }
        let start = Instant::now();
        let in_flight = InFlight::enter(&route.in_flight);
        let resp = self.forward(&route.name, req, start, in_flight).await;
        route.served.fetch_add(1, Ordering::Relaxed);
        if resp.status() == StatusCode::OK {
            route.ok.inc();
        } else {
            self.metrics
                .requests
                .with_label_values(&[&route.name, resp.status().as_str()])
                .inc();
        }
        route.duration.observe(start.elapsed().as_secs_f64());
        resp
    }

    /// Sends the request to a replica and answers with its response. `in_flight`
    /// lasts as long as the response: until its body is streamed, if it is.
    async fn forward<B>(
        &self,
        endpoint: &str,
        req: Request<B>,
        start: Instant,
        in_flight: InFlight,
    ) -> Response<GatewayBody>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let limits = (self.config.max_body_bytes, self.config.body_read_timeout);
        let (parts, body) = match http::read_body(req, limits.0, limits.1).await {
            Ok(x) => x,
            Err(e) => return whole(e.response()),
        };
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let method = parts.method;
        // The request's own headers, less those of its connection (and Expect: the
        // body is already here); the client sets Host from the replica's address.
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(HOST);
        headers.remove(EXPECT);
        let deadline = start + self.config.cold_start_timeout;
        let mut tried: Vec<Arc<Replica>> = Vec::new();
        let mut last_error = String::new();
        loop {
            let Some(slot) = self.pick(endpoint, &tried) else {
                if !tried.is_empty() {
                    return whole(http::error(
                        StatusCode::BAD_GATEWAY,
                        &format!(
                            "endpoint {endpoint}: no replica accepted a connection ({last_error})"
                        ),
                    ));
                }
                if let Err(resp) = self.wait_for_replica(endpoint, deadline).await {
                    return whole(resp);
                }
                continue;
            };
            let replica = slot.0.clone();
            let target = match &replica.target {
                Ok(t) => t,
                Err(e) => {
                    return whole(http::error(
                        StatusCode::BAD_GATEWAY,
                        &format!("endpoint {endpoint}: {e}"),
                    ))
                }
            };
            let request = upstream::Request {
                method: &method,
                path_and_query,
                authority: &target.authority,
                tls: target.tls.as_ref(),
                headers: &headers,
                body: &body,
            };
            let send = self.client.send((self.id, replica.id), &request);
            // Giving up drops the connection with the request: it is not reused.
            let Ok(sent) = tokio::time::timeout(self.config.response_timeout, send).await else {
                self.upstream_error(endpoint, &replica, "timeout");
                return whole(http::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(
                        "endpoint {endpoint}: replica {} did not answer within {}s",
                        replica.base,
                        self.config.response_timeout.as_secs_f64()
                    ),
                ));
            };
            match sent {
                Ok(resp) => {
                    let body = match resp.body {
                        ResponseBody::Whole(bytes) => GatewayBody::Whole(Full::new(bytes)),
                        ResponseBody::Streamed(body) => GatewayBody::Streamed(Streamed {
                            body,
                            _held: Box::new((slot, in_flight)),
                            endpoint: endpoint.to_string(),
                            replica: replica.base.clone(),
                            on_frame: None,
                        }),
                    };
                    let mut out = Response::new(body);
                    *out.status_mut() = resp.status;
                    *out.headers_mut() = resp.headers;
                    return out;
                }
                // The connection never opened, so the request was not sent: safe to retry
                // on another replica whatever the method.
                Err(SendError::Connect(e)) => {
                    self.upstream_error(endpoint, &replica, "connect");
                    tracing::warn!(endpoint, replica = %replica.base, "connect failed: {e}");
                    last_error = format!("{}: {e}", replica.base);
                    tried.push(replica);
                }
                Err(SendError::Failed(e)) => {
                    self.upstream_error(endpoint, &replica, "failed");
                    return whole(http::error(
                        StatusCode::BAD_GATEWAY,
                        &format!("endpoint {endpoint}: replica {} {e}", replica.base),
                    ));
                }
            }
        }
    }
}

/// The 503 for an endpoint with no replica while its replicas are in crash-loop
/// back-off: the reason and `Retry-After`; `None` when it is not backing off.
fn backing_off(endpoint: &str, ep: &Endpoint) -> Option<Response<Full<Bytes>>> {
    if !ep.replicas.is_empty() {
        return None;
    }
    let now = Instant::now();
    let until = (*ep.backoff_until.borrow()).filter(|&u| u > now)?;
    let note = ep.note.as_deref().unwrap_or("its replicas keep failing");
    let mut resp = http::error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("endpoint {endpoint} has no ready replica ({note})"),
    );
    let secs = (until - now).as_secs_f64().ceil().max(1.0) as u64;
    resp.headers_mut()
        .insert(hyper::header::RETRY_AFTER, secs.into());
    Some(resp)
}

impl Gateway {
    fn upstream_error(&self, endpoint: &str, replica: &Replica, kind: &str) {
        self.metrics
            .upstream_errors
            .with_label_values(&[endpoint, &replica.base, kind])
            .inc();
    }
}

fn no_endpoint(endpoint: &str) -> Response<Full<Bytes>> {
    http::error(
        StatusCode::NOT_FOUND,
        &format!("no endpoint named {endpoint}"),
    )
}

impl http::Handler for Gateway {
    type Body = GatewayBody;

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<GatewayBody> {
        self.handle_request(req).await
    }

    fn header_read_timeout(&self) -> Duration {
        self.config.header_read_timeout
    }
}

/// Serves `gateway` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    http::serve(listener, gateway, shutdown).await
}

/// [`serve`] over TLS (HTTPS) when `tls` is given.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    http::serve_with(listener, gateway, tls, shutdown).await
}
