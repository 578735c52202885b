//! The model server: one ONNX model behind the Open Inference Protocol, with dynamic
//! batching.
//!
//! ```text
//! POST /v2/models/m/infer ─► read body (limit, 413) ─► protocol::decode (4xx) ─► Job
//!      ─► batcher task: Batcher core (group by non-batch dims; size or delay closes)
//!      ─► one model run per batch on the blocking pool (merge rows → tract → split)
//!      ─► each request's rows back through its oneshot ─► protocol::encode
//! ```
//!
//! [`ModelServer::new`] builds the application (live, not ready); [`ModelServer::set_model`]
//! makes it ready; [`serve`] runs it on a listener until a shutdown future resolves.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::batcher::{self, BatchPolicy, Batcher};
use crate::http::{self, BodyError};
use crate::model::OnnxModel;
use crate::protocol::{self, ProtocolError, Tensor};

/// How the server batches and what it accepts.
#[derive(Debug, Clone)]
pub struct ModelServerConfig {
    pub max_batch_size: usize,
    pub max_delay: Duration,
    pub max_body_bytes: usize,
    /// Model runs that may execute at once (each runs on a blocking thread).
    pub instances: usize,
    /// How long a client may take to send a request's head (also the longest a
    /// keep-alive connection may sit idle) before it is closed.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body before 408.
    pub body_read_timeout: Duration,
}

impl Default for ModelServerConfig {
    fn default() -> Self {
        ModelServerConfig {
            max_batch_size: 8,
            max_delay: Duration::from_millis(5),
            max_body_bytes: 16 << 20,
            instances: 1,
            header_read_timeout: http::HEADER_READ_TIMEOUT,
            body_read_timeout: http::BODY_READ_TIMEOUT,
        }
    }
}

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    batch_size: HistogramVec,
    inference_duration: HistogramVec,
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let _ = gpuctl_telemetry::register_build_info(&registry, "model-server");
        let requests = IntCounterVec::new(
            Opts::new(
                "gpuctl_model_server_requests_total",
                "Inference protocol requests answered, by model and HTTP status code.",
            ),
            &["model", "code"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "gpuctl_model_server_request_duration_seconds",
                "Time from request received to response ready.",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")),
            &["model"],
        )
        .expect("valid metric");
        let batch_size = HistogramVec::new(
            HistogramOpts::new(
                "gpuctl_model_server_batch_size",
                "Rows per model run after dynamic batching.",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            &["model"],
        )
        .expect("valid metric");
        let inference_duration = HistogramVec::new(
            HistogramOpts::new(
                "gpuctl_model_server_inference_duration_seconds",
                "Time of one model run (one batch).",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 18).expect("valid buckets")),
            &["model"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(batch_size.clone()),
            Box::new(inference_duration.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            requests,
            request_duration,
            batch_size,
            inference_duration,
        }
    }
}

/// A request waiting for the batcher: its inputs, its row count, where to answer.
struct Job {
    inputs: Vec<Tensor>,
    rows: usize,
    reply: oneshot::Sender<Result<Vec<Tensor>, String>>,
}

struct Loaded {
    model: Arc<OnnxModel>,
    jobs: mpsc::UnboundedSender<Job>,
}

/// The model's metrics with their labels resolved once: a `with_label_values` lookup
/// hashes the labels and takes a lock, on every request otherwise.
struct Handles {
    /// `requests_total{code="200"}`; other codes are looked up when they happen.
    ok: IntCounter,
    request_duration: Histogram,
    batch_size: Histogram,
    inference_duration: Histogram,
}

impl Handles {
    fn new(metrics: &Metrics, model: &str) -> Handles {
        Handles {
            ok: metrics.requests.with_label_values(&[model, "200"]),
            request_duration: metrics.request_duration.with_label_values(&[model]),
            batch_size: metrics.batch_size.with_label_values(&[model]),
            inference_duration: metrics.inference_duration.with_label_values(&[model]),
        }
    }
}

/// The application: routes, the loaded model, metrics.
pub struct ModelServer {
    name: String,
    config: ModelServerConfig,
    loaded: OnceLock<Loaded>,
    metrics: Arc<Metrics>,
    /// The request metrics of `name`.
    handles: Handles,
}

impl ModelServer {
    /// A server for model `name`, live but not ready until [`ModelServer::set_model`].
    pub fn new(name: &str, config: ModelServerConfig) -> Arc<ModelServer> {
        let metrics = Metrics::new();
        Arc::new(ModelServer {
            name: name.to_string(),
            config,
            loaded: OnceLock::new(),
            handles: Handles::new(&metrics, name),
            metrics: Arc::new(metrics),
        })
    }

    /// A ready server for `model` (call from within a tokio runtime).
    pub fn with_model(model: OnnxModel, config: ModelServerConfig) -> Arc<ModelServer> {
        let server = ModelServer::new(&model.spec().name.clone(), config);
        server.set_model(model);
        server
    }

    /// Makes the server ready, starting its batcher task. A second call is ignored.
    pub fn set_model(&self, model: OnnxModel) {
        let model = Arc::new(model);
        let (tx, rx) = mpsc::unbounded_channel();
        let policy = BatchPolicy {
            max_batch_size: if model.batchable() {
                self.config.max_batch_size
            } else {
                1
            },
            max_delay: self.config.max_delay,
        };
        if self
            .loaded
            .set(Loaded {
                model: model.clone(),
                jobs: tx,
            })
            .is_ok()
        {
            let handles = Arc::new(Handles::new(&self.metrics, &model.spec().name));
            tokio::spawn(run_batcher(
                model,
                policy,
                self.config.instances.max(1),
                rx,
                handles,
            ));
        }
    }

    pub fn is_ready(&self) -> bool {
        self.loaded.get().is_some()
    }

    /// The registry behind `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.metrics.registry
    }

    /// Answers one request. Generic over the body so tests can call it without a socket.
    pub async fn handle_request<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path();
        if path == "/metrics" {
            return http::metrics(&self.metrics.registry);
        }
        if path == "/healthz" {
            return http::response(StatusCode::OK, "text/plain", "ok\n");
        }
        let counted = path.starts_with("/v2");
        let start = Instant::now();
        let resp = self.route(req).await;
        if counted {
            if resp.status() == StatusCode::OK {
                self.handles.ok.inc();
            } else {
                self.metrics
                    .requests
                    .with_label_values(&[&self.name, resp.status().as_str()])
                    .inc();
            }
            self.handles
                .request_duration
                .observe(start.elapsed().as_secs_f64());
        }
        resp
    }

    async fn route<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        // The inference path first, without collecting the segments.
        if req.method() == Method::POST {
            if let Some(rest) = req.uri().path().strip_prefix("/v2/models/") {
                let rest = rest.trim_end_matches('/');
                let model = rest.strip_suffix("/infer").and_then(|m| {
                    // Other versions (and odd paths) go the long way below.
                    match m.split_once("/versions/") {
                        Some((m, protocol::MODEL_VERSION)) => Some(m),
                        Some(_) => None,
                        None => Some(m),
                    }
                });
                if model == Some(self.name.as_str()) {
                    return self.infer(req).await;
                }
            }
        }
        let path = req.uri().path().to_string();
        let path = path.as_str();
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        let post = req.method() == Method::POST;
        let wrong_method = |allowed: &str| {
            http::error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{} {path}: only {allowed} is allowed", req.method()),
            )
        };
        match segments.as_slice() {
            ["v2"] if get => http::json_value(
                StatusCode::OK,
                &serde_json::json!({
                    "name": "gpuctl-model-server",
                    "version": env!("CARGO_PKG_VERSION"),
                    "extensions": ["binary_tensor_data"],
                }),
            ),
            ["v2", "health", "live"] if get => {
                http::json_value(StatusCode::OK, &serde_json::json!({"live": true}))
            }
            ["v2", "health", "ready"] if get => {
                let ready = self.is_ready();
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                http::json_value(status, &serde_json::json!({"ready": ready}))
            }
            ["v2", "models", m, rest @ ..] => {
                if *m != self.name {
                    return http::error(
                        StatusCode::NOT_FOUND,
                        &format!("model {m} not found: this server serves {}", self.name),
                    );
                }
                // One version is served: `/versions/1/...` is the same as `/...`.
                let rest = match rest {
                    ["versions", v, tail @ ..] if *v == protocol::MODEL_VERSION => tail,
                    ["versions", v, ..] => {
                        return http::error(
                            StatusCode::NOT_FOUND,
                            &format!(
                                "model {m} has no version {v}: this server serves version {}",
                                protocol::MODEL_VERSION
                            ),
                        )
                    }
                    other => other,
                };
                match rest {
                    [] if get => match self.loaded.get() {
                        Some(l) => http::json(
                            StatusCode::OK,
                            protocol::encode_model_metadata(l.model.spec()),
                        ),
                        None => self.loading(),
                    },
                    ["ready"] if get => {
                        let ready = self.is_ready();
                        http::json_value(
                            if ready {
                                StatusCode::OK
                            } else {
                                StatusCode::SERVICE_UNAVAILABLE
                            },
                            &serde_json::json!({"name": self.name, "ready": ready}),
                        )
                    }
                    ["infer"] if post => self.infer(req).await,
                    [] | ["ready"] => wrong_method("GET"),
                    ["infer"] => wrong_method("POST"),
                    _ => self.not_found(path),
                }
            }
            ["v2"] | ["v2", "health", "live" | "ready"] => wrong_method("GET"),
            _ => self.not_found(path),
        }
    }

    fn not_found(&self, path: &str) -> Response<Full<Bytes>> {
        http::error(
            StatusCode::NOT_FOUND,
            &format!(
                "no route {path}: try /v2/health/ready, /v2/models/{0} or POST /v2/models/{0}/infer",
                self.name
            ),
        )
    }

    fn loading(&self) -> Response<Full<Bytes>> {
        http::error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("model {} is still loading", self.name),
        )
    }

    async fn infer<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let Some(loaded) = self.loaded.get() else {
            return self.loading();
        };
        let limits = (self.config.max_body_bytes, self.config.body_read_timeout);
        let (parts, body) = match http::read_body(req, limits.0, limits.1).await {
            Ok(read) => read,
            Err(BodyError::TooLarge { limit }) => {
                let e = ProtocolError::BodyTooLarge { limit };
                return http::error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string());
            }
            Err(e) => return e.response(),
        };
        let split = match parts.headers.get(protocol::HEADER_LENGTH) {
            None => Ok((&body[..], None)),
            Some(v) => protocol::split_body(&body, &String::from_utf8_lossy(v.as_bytes()))
                .map(|(json, binary)| (json, Some(binary))),
        };
        let decoded = split.and_then(|(json, binary)| {
            protocol::decode_infer_request_parts(json, binary, loaded.model.spec())
        });
        let request = match decoded {
            Ok(r) => r,
            Err(e) => {
                let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
                return http::error(status, &e.to_string());
            }
        };
        let rows = if loaded.model.batchable() {
            request.inputs[0].shape[0]
        } else {
            1
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            inputs: request.inputs,
            rows,
            reply,
        };
        if loaded.jobs.send(job).is_err() {
            return http::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the model server is shutting down",
            );
        }
        let outputs = match answer.await {
            Ok(Ok(outputs)) => outputs,
            Ok(Err(e)) => return http::error(StatusCode::INTERNAL_SERVER_ERROR, &e),
            Err(_) => {
                return http::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the model server is shutting down",
                )
            }
        };
        let outputs: Vec<Tensor> = match &request.outputs {
            None => outputs,
            Some(wanted) => outputs
                .into_iter()
                .filter(|t| wanted.contains(&t.name))
                .collect(),
        };
        if request.binary_outputs.is_empty() {
            return http::json(
                StatusCode::OK,
                protocol::encode_infer_response(&self.name, request.id.as_deref(), &outputs),
            );
        }
        let (body, header) = protocol::encode_infer_response_binary(
            &self.name,
            protocol::MODEL_VERSION,
            request.id.as_deref(),
            &outputs,
            &request.binary_outputs,
        );
        let mut response = http::response(StatusCode::OK, "application/octet-stream", body);
        if let Ok(v) = hyper::header::HeaderValue::from_str(&header.to_string()) {
            response.headers_mut().insert(protocol::HEADER_LENGTH, v);
        }
        response
    }
}

impl http::Handler for ModelServer {
    type Body = Full<Bytes>;

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        self.handle_request(req).await
    }

    fn header_read_timeout(&self) -> Duration {
        self.config.header_read_timeout
    }
}

/// Serves `server` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Arc<ModelServer>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    http::serve(listener, server, shutdown).await
}

/// [`serve`] over TLS (HTTPS) when `tls` is given.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    server: Arc<ModelServer>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    http::serve_with(listener, server, tls, shutdown).await
}

/// The batch key: every input's dimensions after the first. Only requests that agree on
/// all of them can be stacked.
/// Every input's rank and dims after the first, one after the other (`[rank, d1, ..,
/// rank, d1, ..]`): one allocation however many inputs.
type BatchKey = Vec<usize>;

fn batch_key(inputs: &[Tensor]) -> BatchKey {
    let mut key = Vec::with_capacity(inputs.iter().map(|t| t.shape.len()).sum());
    for t in inputs {
        // The rank first, so that [_, 3] + [_, 4] and [_, 3, 4] + [_] differ.
        key.push(t.shape.len());
        key.extend_from_slice(t.shape.get(1..).unwrap_or_default());
    }
    key
}

async fn run_batcher(
    model: Arc<OnnxModel>,
    policy: BatchPolicy,
    instances: usize,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    metrics: Arc<Handles>,
) {
    let mut queue: Batcher<BatchKey, Job> = Batcher::new(policy);
    let runs = Arc::new(Semaphore::new(instances));
    let push = |queue: &mut Batcher<BatchKey, Job>, job: Job| {
        let key = batch_key(&job.inputs);
        queue.push(key, job.rows, job, Instant::now().into_std());
    };
    loop {
        if queue.has_ready(Instant::now().into_std()) {
            // A batch is ready: run it as soon as a model instance is free, and keep
            // queueing meanwhile (a busy model makes the next batch fuller).
            tokio::select! {
                permit = runs.clone().acquire_owned() => {
                    let Ok(permit) = permit else { return };
                    if let Some(batch) = queue.pop_ready(Instant::now().into_std()) {
                        let model = model.clone();
                        let metrics = metrics.clone();
                        tokio::task::spawn_blocking(move || {
                            run_batch(&model, batch.items, &metrics);
                            drop(permit);
                        });
                    }
                }
                job = jobs.recv() => match job {
                    Some(job) => push(&mut queue, job),
                    None => return,
                },
            }
            continue;
        }
        let deadline = queue.next_deadline().map(Instant::from_std);
        tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => push(&mut queue, job),
                None => return,
            },
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {}
        }
    }
}

fn run_batch(model: &OnnxModel, jobs: Vec<Job>, metrics: &Handles) {
    let name = &model.spec().name;
    let rows: Vec<usize> = jobs.iter().map(|j| j.rows).collect();
    let total: usize = rows.iter().sum();
    let (inputs, replies): (Vec<Vec<Tensor>>, Vec<_>) =
        jobs.into_iter().map(|j| (j.inputs, j.reply)).unzip();
    let merged = if inputs.len() == 1 {
        inputs.into_iter().next().unwrap_or_default()
    } else {
        batcher::merge(&inputs)
    };
    metrics.batch_size.observe(total as f64);
    let started = std::time::Instant::now();
    let result = model.run(&merged);
    metrics
        .inference_duration
        .observe(started.elapsed().as_secs_f64());
    let per_request: Result<Vec<Vec<Tensor>>, String> = match result {
        Ok(outputs) if replies.len() == 1 => Ok(vec![outputs]),
        Ok(outputs) => batcher::split(&outputs, &rows).ok_or_else(|| {
            format!("model {name} did not keep the batch dimension: cannot split its outputs")
        }),
        Err(e) => Err(e.to_string()),
    };
    match per_request {
        Ok(outs) => {
            for (reply, out) in replies.into_iter().zip(outs) {
                // The client may have gone away; its answer is simply dropped.
                let _ = reply.send(Ok(out));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
