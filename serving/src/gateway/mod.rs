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
use hyper::{Request, Response, StatusCode, Uri};
use prometheus::{Histogram, IntCounter, IntGauge, Registry};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::http::{self, strip_hop_by_hop};

mod auth;
mod metrics;
use crate::p2c::{self, Rng, SplitMix64};
use crate::upstream::{self, ResponseBody, SendError, StreamedBody};
use metrics::Metrics;

/// Asked to bring an endpoint up from zero replicas ([`crate::cluster`] forwards it
/// to the scheduler's endpoint controller); it must not block.
pub trait ScaleUp: Send + Sync + 'static {
    fn scale_up(&self, endpoint: &str);
}

/// For a gateway with static routes: there is no one to ask.
pub struct NoScaleUp;

impl ScaleUp for NoScaleUp {
    fn scale_up(&self, endpoint: &str) {
        tracing::warn!(
            endpoint,
            "endpoint has no replicas and no scheduler to ask for one"
        );
    }
}

impl ScaleUp for tokio::sync::mpsc::UnboundedSender<String> {
    fn scale_up(&self, endpoint: &str) {
        let _ = self.send(endpoint.to_string());
    }
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body forwarded (413 above it).
    pub max_body_bytes: usize,
    /// Requests one endpoint may hold while it has no replica (503 beyond).
    pub queue_capacity: usize,
    /// How long a held request waits for a replica before 503.
    pub cold_start_timeout: Duration,
    /// How long a connection attempt to a replica may take before it counts as failed.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection to a replica is kept.
    pub pool_idle_timeout: Duration,
    /// How long a replica may take to answer a forwarded request (its response head,
    /// and its body when read whole) before 504.
    pub response_timeout: Duration,
    /// How long a client may take to send a request's head (also the longest a
    /// keep-alive connection may sit idle) before it is closed.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body before 408.
    pub body_read_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_body_bytes: 16 << 20,
            queue_capacity: 100,
            cold_start_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(2),
            pool_idle_timeout: Duration::from_secs(90),
            response_timeout: Duration::from_secs(300),
            header_read_timeout: http::HEADER_READ_TIMEOUT,
            body_read_timeout: http::BODY_READ_TIMEOUT,
        }
    }
}

/// One replica: where it is and how busy the gateway keeps it.
#[derive(Debug)]
pub struct Replica {
    /// `http://host:port`, no trailing slash.
    base: String,
    /// `host:port` of `base`, parsed once, or why it has none.
    authority: Result<String, String>,
    /// Names its idle connections in the per-thread pools; never reused.
    id: u64,
    outstanding: AtomicUsize,
}

/// The `host:port` of a replica's base URL, or why it has none.
fn parse_base(base: &str) -> Result<String, String> {
    let uri: Uri = base
        .parse()
        .map_err(|e| format!("replica URL {base:?} is not a valid URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "replica URL {base:?} must start with http:// (replicas speak plain HTTP/1.1)"
        ));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!(
            "replica URL {base:?} needs a host (http://host:port)"
        ));
    };
    let port = authority.port_u16().unwrap_or(80);
    Ok(format!("{}:{port}", authority.host()))
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

/// Counts a request in `gpuctl_gateway_in_flight_requests` while it lives.
struct InFlight(IntGauge);

impl InFlight {
    fn enter(gauge: &IntGauge) -> InFlight {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The body of a gateway response: made whole, or a replica's response streamed
/// through. A streamed body keeps its request outstanding on the replica (so a
/// draining replica is not stopped under it) and in flight until it ends or the
/// client goes away.
pub enum GatewayBody {
    Whole(Full<Bytes>),
    Streamed(Streamed),
}

pub struct Streamed {
    body: StreamedBody,
    /// Released when the body is dropped.
    _held: (Outstanding, InFlight),
    /// For the log line when the replica breaks off.
    endpoint: String,
    replica: String,
}

impl From<Full<Bytes>> for GatewayBody {
    fn from(b: Full<Bytes>) -> GatewayBody {
        GatewayBody::Whole(b)
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            GatewayBody::Whole(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(|e| match e {}))),
            GatewayBody::Streamed(s) => {
                let frame = std::pin::Pin::new(&mut s.body).poll_frame(cx);
                if let std::task::Poll::Ready(Some(Err(e))) = &frame {
                    tracing::warn!(endpoint = %s.endpoint, replica = %s.replica,
                        "replica broke off a streamed response: {e}");
                }
                frame
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Whole(b) => b.is_end_stream(),
            GatewayBody::Streamed(s) => s.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            GatewayBody::Whole(b) => b.size_hint(),
            GatewayBody::Streamed(s) => s.body.size_hint(),
        }
    }
}

/// A gateway response made whole (errors, health, metrics).
fn whole(resp: Response<Full<Bytes>>) -> Response<GatewayBody> {
    resp.map(GatewayBody::Whole)
}

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
                        authority: parse_base(&base),
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
    }

    /// Called by whoever keeps the routes from a scheduler: from now on a
    /// request for an unknown endpoint asks for a fresh look before 404.
    pub fn follow_scheduler(&self) {
        self.lookup.following.store(true, Ordering::Relaxed);
    }

    /// Resolves when a request wants the routes looked up again now.
    pub async fn lookup_wanted(&self) {
        self.lookup.wanted.notified().await
    }

    /// The lookups asked for so far; pass it to [`Gateway::looked_up`] once a
    /// look that starts now has updated the routes.
    pub fn lookups_asked(&self) -> u64 {
        self.lookup.asked.load(Ordering::SeqCst)
    }

    /// The routes now reflect a look that started after lookup `asked`.
    pub fn looked_up(&self, asked: u64) {
        self.lookup.answered.send_if_modified(|a| {
            let newer = asked > *a;
            if newer {
                *a = asked;
            }
            newer
        });
    }

    /// Whether `endpoint` is routed, after a fresh look when it is not and a
    /// scheduler is followed (bounded by [`LOOKUP_TIMEOUT`]).
    async fn known_after_lookup(&self, endpoint: &str) -> bool {
        if !self.lookup.following.load(Ordering::Relaxed) {
            return false;
        }
        let mut answered = self.lookup.answered.subscribe();
        let n = self.lookup.asked.fetch_add(1, Ordering::SeqCst) + 1;
        self.lookup.wanted.notify_one();
        let look = answered.wait_for(|a| *a >= n || self.lock().contains_key(endpoint));
        let _ = tokio::time::timeout(LOOKUP_TIMEOUT, look).await;
        self.lock().contains_key(endpoint)
    }

    /// Forgets `endpoint`: new requests get 404; held requests time out with 503.
    pub fn remove_endpoint(&self, endpoint: &str) {
        self.lock().remove(endpoint);
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
        let all = &eps.get(endpoint)?.replicas;
        let replica = if tried.is_empty() {
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
            let candidates: Vec<&Arc<Replica>> = all
                .iter()
                .filter(|r| !tried.iter().any(|t| Arc::ptr_eq(t, r)))
                .collect();
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
        let (mut ready, ask) = {
            let mut eps = self.lock();
            let Some(ep) = eps.get_mut(endpoint) else {
                return Err(no_endpoint(endpoint));
            };
            if !ep.replicas.is_empty() {
                return Ok(());
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
            let ask = !ep.scale_up_requested;
            ep.scale_up_requested = true;
            (ep.ready.subscribe(), ask)
        };
        // Leaves the queue however this future ends (answered, timed out, cancelled).
        struct Queued<'a>(&'a Gateway, &'a str);
        impl Drop for Queued<'_> {
            fn drop(&mut self) {
                if let Some(ep) = self.0.lock().get_mut(self.1) {
                    ep.queued -= 1;
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
        let appeared = matches!(
            tokio::time::timeout_at(deadline, async { ready.wait_for(|n| *n > 0).await.is_ok() })
                .await,
            Ok(true)
        );
        match appeared {
            true => Ok(()),
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
                        "extensions": [],
                    }),
                ))
            }
            "/v2/health/live" | "/v2/health/ready" => {
                return whole(http::json_value(
                    StatusCode::OK,
                    &serde_json::json!({"live": true, "ready": true}),
                ))
            }
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
        let endpoint = endpoint.to_string();
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
            let authority = match &replica.authority {
                Ok(a) => a,
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
                authority,
                headers: &headers,
                body: &body,
            };
            let send = self.client.send((self.id, replica.id), &request);
            // Giving up drops the connection with the request: it is not reused.
            let Ok(sent) = tokio::time::timeout(self.config.response_timeout, send).await else {
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
                            _held: (slot, in_flight),
                            endpoint: endpoint.to_string(),
                            replica: replica.base.clone(),
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
                    tracing::warn!(endpoint, replica = %replica.base, "connect failed: {e}");
                    last_error = format!("{}: {e}", replica.base);
                    tried.push(replica);
                }
                Err(SendError::Failed(e)) => {
                    return whole(http::error(
                        StatusCode::BAD_GATEWAY,
                        &format!("endpoint {endpoint}: replica {} {e}", replica.base),
                    ))
                }
            }
        }
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
