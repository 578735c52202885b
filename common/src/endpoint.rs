//! The `Endpoint` object: a model served over HTTP by replica tasks that the endpoint
//! controller scales between `minReplicas` (possibly 0) and `maxReplicas`.
//!
//! ```text
//! Endpoint (spec: model or server.command, resources, autoscaling, batching)
//!    │ ScaleEndpoint { replicas }           (the endpoint controller, on the leader)
//!    ▼
//! replica jobs  <endpoint>-replica-<n>   one task each, label gpuctl.io/endpoint,
//!    │                                   $PORT fixed at creation, scheduled like any job
//!    ▼
//! status.replicas [{job, port, draining}] + the job's node ─► URL the gateway routes to
//! ```
//!
//! Parsing is as strict as for jobs: unknown fields are errors naming the field path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::{validate_name, Event, FieldError, ObjectMeta, Resources, TaskPhase};
use crate::secret_ref::{EnvFromSource, SecretFilesSource, SecretRef};

/// Label on every replica job: the endpoint that owns it.
pub const ENDPOINT_LABEL: &str = "gpuctl.io/endpoint";
/// Longest endpoint name: leaves room for the `-replica-N` suffix of its jobs.
pub const MAX_ENDPOINT_NAME: usize = 45;
/// Most replicas one endpoint may ask for.
pub const MAX_ENDPOINT_REPLICAS: u32 = 1000;

/// A model behind an HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Endpoint {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: EndpointSpec,
    /// Read-only; ignored when applied.
    #[serde(default)]
    pub status: EndpointStatus,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointSpec {
    /// A model file served by the built-in `gpu-model-server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// Or a server of the user's own that listens on `$PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSpec>,
    /// What each replica needs (one task per replica).
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub autoscaling: Autoscaling,
    #[serde(default)]
    pub batching: Batching,
    /// Callers must present one of the keys in a Secret (`Authorization:
    /// Bearer KEY` or `x-api-key: KEY`); absent: the endpoint is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<EndpointAuth>,
    /// What the replicas' server speaks: `v2` (the Open Inference Protocol, the
    /// default) or `openai` (an OpenAI-compatible server such as vLLM, llama.cpp's
    /// server or SGLang: the gateway routes `/v1/...` to it by the body's `model`).
    #[serde(default, skip_serializing_if = "EndpointProtocol::is_v2")]
    pub protocol: EndpointProtocol,
    /// KServe's field: while a new revision rolls out, the share of requests
    /// (0-100) it gets; the previous revision keeps the rest until
    /// `gpuctl rollout promote`. Absent: the new revision takes all traffic
    /// as its replicas become ready, and the old ones drain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_traffic_percent: Option<u32>,
    /// As a Deployment's field: a rollout whose new revision gains no ready
    /// replica for this long (while it has fewer than it should) is marked
    /// Failed (`ProgressDeadlineExceeded`); the previous revision keeps
    /// serving and the new one keeps being tried. Absent: 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<u64>,
}

/// A rollout's progress deadline when the endpoint names none (as a
/// Deployment's `progressDeadlineSeconds` and Knative's `progressDeadline`).
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: u64 = 600;

/// The API an endpoint's replicas serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum EndpointProtocol {
    /// KServe's V2 / Open Inference Protocol at `/v2/models/NAME/...`; replicas
    /// are ready when `GET /v2/health/ready` answers 200.
    #[default]
    #[serde(rename = "v2")]
    V2,
    /// OpenAI's API at `/v1/...` (chat/completions, completions, embeddings);
    /// replicas are ready when `GET /health` answers 200 (vLLM, llama.cpp, SGLang).
    #[serde(rename = "openai")]
    OpenAi,
}

impl EndpointProtocol {
    pub fn is_v2(&self) -> bool {
        *self == EndpointProtocol::V2
    }

    /// The path a replica answers 200 on once it can serve.
    pub fn ready_path(&self) -> &'static str {
        match self {
            EndpointProtocol::V2 => "/v2/health/ready",
            EndpointProtocol::OpenAi => "/health",
        }
    }
}

impl EndpointSpec {
    /// The part of the spec that decides what a replica runs (model, server,
    /// resources, batching, protocol): a change to it makes a new revision.
    /// Autoscaling bounds, API keys, the canary share and the progress
    /// deadline are left out.
    pub fn replica_template(&self) -> EndpointSpec {
        EndpointSpec {
            autoscaling: Autoscaling::default(),
            auth: None,
            canary_traffic_percent: None,
            progress_deadline_seconds: None,
            ..self.clone()
        }
    }

    /// How long a rollout may go without progress, in ms.
    pub fn progress_deadline_ms(&self) -> u64 {
        self.progress_deadline_seconds
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS)
            .saturating_mul(1000)
    }

    /// Whether replicas serve HTTPS (the built-in model server always does;
    /// a server of the user's own unless `server.tls: false`).
    pub fn serves_tls(&self) -> bool {
        self.model.is_some() || self.server.as_ref().is_none_or(|s| s.tls != Some(false))
    }
}

/// Who may call an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointAuth {
    /// Every value of this Secret is an accepted API key.
    pub api_key_secret: SecretRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelSpec {
    /// The model's name as the user knows it (requests use the endpoint's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The model file as the node sees it (`gpuctl apply` makes a relative path
    /// absolute against the manifest's folder).
    pub path: String,
    /// Only `onnx` today.
    #[serde(default = "default_format")]
    pub format: String,
}

fn default_format() -> String {
    "onnx".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerSpec {
    /// Program and arguments, run directly; it must serve the Open Inference Protocol
    /// on `$PORT` with the endpoint's name as the model name.
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secrets whose keys become environment variables of every replica.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    /// Secrets whose keys become files under `$GPUCTL_SECRETS_DIR`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_files: Vec<SecretFilesSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Whether the server serves HTTPS with the certificate its node gives it
    /// (`$GPUCTL_TLS_CERT`, `$GPUCTL_TLS_KEY`); absent: true. `false`: plain
    /// HTTP, for a server that cannot (the node runs it only when its
    /// address is a loopback address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Autoscaling {
    /// May be 0: the endpoint scales to zero when idle.
    #[serde(default)]
    pub min_replicas: u32,
    #[serde(default = "default_max_replicas")]
    pub max_replicas: u32,
    /// Concurrent requests one replica should handle.
    #[serde(default = "default_target")]
    pub target_concurrency: f64,
    /// Idle time before the last replica goes (with `minReplicas: 0`).
    #[serde(default = "default_scale_to_zero")]
    pub scale_to_zero_after_seconds: u64,
    /// The autoscaler's stable window (the panic window is a tenth of it).
    #[serde(default = "default_window")]
    pub stable_window_seconds: u64,
}

fn default_max_replicas() -> u32 {
    4
}
fn default_target() -> f64 {
    4.0
}
fn default_scale_to_zero() -> u64 {
    60
}
fn default_window() -> u64 {
    60
}

impl Default for Autoscaling {
    fn default() -> Self {
        Autoscaling {
            min_replicas: 0,
            max_replicas: default_max_replicas(),
            target_concurrency: default_target(),
            scale_to_zero_after_seconds: default_scale_to_zero(),
            stable_window_seconds: default_window(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Batching {
    /// Most rows in one model run.
    #[serde(default = "default_batch")]
    pub max_batch_size: u32,
    /// Longest a request waits for others to batch with.
    #[serde(default = "default_delay")]
    pub max_delay_millis: u64,
}

fn default_batch() -> u32 {
    8
}
fn default_delay() -> u64 {
    5
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            max_batch_size: default_batch(),
            max_delay_millis: default_delay(),
        }
    }
}

/// Set by the server.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// Replicas the endpoint controller asked for.
    #[serde(default)]
    pub desired_replicas: u32,
    /// Replica jobs that exist, draining ones included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaStatus>,
    /// Serial number of the next replica job.
    #[serde(default)]
    pub next_replica: u64,
    /// Why the replica count last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Load the gateway last reported (refreshed every few seconds while it changes).
    #[serde(default)]
    pub concurrency: f64,
    #[serde(default)]
    pub requests_per_second: f64,
    /// Request latency the gateways last reported (median and 99th
    /// percentile, milliseconds; 0 while nothing is served).
    #[serde(default)]
    pub latency_p50_ms: f64,
    #[serde(default)]
    pub latency_p99_ms: f64,
    /// Replicas that ended on their own in a row, each soon after it started
    /// (a crash loop: a bad model file, a server that exits). One that ran for
    /// [`CRASH_LOOP_RESET_MS`] or longer starts the count again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_failures: u32,
    /// No new replica starts before this time (ms since the epoch), while the
    /// endpoint backs off from a crash loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_until_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    /// SHA-256 (hex) of each accepted API key, for the gateway; filled in
    /// by the server from `spec.auth`'s Secret when the endpoint is read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_key_hashes: Vec<String>,
    /// The newest revision (what the spec asks replicas to run); revisions
    /// count from 1, and each change of [`EndpointSpec::replica_template`]
    /// makes the next.
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub latest_revision: u64,
    /// The revision last rolled out in full; differs from `latest_revision`
    /// while a rollout (or a canary) is under way.
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub stable_revision: u64,
    /// Past and present revisions, oldest first (the last
    /// [`REVISION_HISTORY_LIMIT`], and any that still has replicas).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<Revision>,
    /// The latest rollout: where it is, and why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

fn is_zero64(n: &u64) -> bool {
    *n == 0
}

/// Revisions kept for `gpuctl rollout history` and `undo` (as a Deployment's
/// `revisionHistoryLimit`).
pub const REVISION_HISTORY_LIMIT: usize = 10;
/// A rollout is reported failed once this many replicas of the new revision
/// in a row ended before they became ready.
pub const ROLLOUT_FAILED_AFTER: u32 = 3;

/// One revision of an endpoint: what its replicas run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    pub revision: u64,
    /// The spec as applied when the revision was made (its
    /// [`EndpointSpec::replica_template`] is what replicas run).
    pub spec: EndpointSpec,
    pub created_ms: u64,
    /// Why it was made: "applied", "rolled back to revision 2", ...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cause: String,
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RolloutPhase {
    /// New replicas are starting; the old revision serves until they are ready.
    #[default]
    Progressing,
    /// The new revision takes `canaryTrafficPercent` of requests until promoted.
    Canary,
    /// Every serving replica runs the latest revision.
    Complete,
    /// Replicas of the new revision keep ending before they are ready, or
    /// none became ready within the progress deadline; the old revision
    /// keeps serving (new replicas are still tried, backing off).
    Failed,
}

impl std::fmt::Display for RolloutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RolloutPhase::Progressing => "Progressing",
            RolloutPhase::Canary => "Canary",
            RolloutPhase::Complete => "Complete",
            RolloutPhase::Failed => "Failed",
        })
    }
}

/// The latest rollout of an endpoint.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The revision rolled out from (the stable one when it started).
    pub from_revision: u64,
    pub to_revision: u64,
    pub phase: RolloutPhase,
    /// In words: progress, or why it failed (the replica's last message).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Replicas of `to_revision` that ended in a row before becoming ready.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// Why the last replica of `to_revision` that ended before it was ready ended.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_failure: String,
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// The last time `to_revision` gained a ready replica (0: none since
    /// `started_ms`), and how many it had then.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub progress_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ready_seen: u32,
    /// Failed because it made no progress within the deadline (not because
    /// replicas crashed): only new progress clears it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deadline_exceeded: bool,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A replica that served at least this long before it ended does not count
/// towards a crash loop.
pub const CRASH_LOOP_RESET_MS: u64 = 30_000;
/// Wait before the replacement of the first replica of a crash loop; doubled
/// for each further one, up to [`CRASH_LOOP_MAX_BACKOFF_MS`].
pub const CRASH_LOOP_BASE_BACKOFF_MS: u64 = 1_000;
pub const CRASH_LOOP_MAX_BACKOFF_MS: u64 = 60_000;

/// How long to wait before replacing a replica after `failures` in a row.
pub fn crash_loop_backoff_ms(failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(16);
    (CRASH_LOOP_BASE_BACKOFF_MS << doublings).min(CRASH_LOOP_MAX_BACKOFF_MS)
}

/// One replica job of an endpoint.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    pub job: String,
    /// `$PORT` of the replica's server.
    pub port: u16,
    /// Chosen for removal: gets no new requests; stopped once its requests are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_since_ms: Option<u64>,
    /// Filled in when read (from the replica's job and node), not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TaskPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `https://node-address:port` once the replica is bound (`http://` for a
    /// plaintext replica or a node started with `--insecure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The endpoint revision whose spec the replica runs (0: made before
    /// revisions were kept, taken as the stable one).
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub revision: u64,
    /// A gateway found it ready (it answered its readiness path); a
    /// rollout drains old replicas only as new ones become ready.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ready: bool,
}

impl ReplicaStatus {
    pub fn draining(&self) -> bool {
        self.draining_since_ms.is_some()
    }
    /// Running and not draining: what the gateway may route to once it answers.
    pub fn serving(&self) -> bool {
        !self.draining() && self.phase == Some(TaskPhase::Running) && self.url.is_some()
    }
}

impl Endpoint {
    /// Static checks that need no cluster state.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.kind != "Endpoint" {
            return Err(FieldError::new(
                "kind",
                format!("expected Endpoint, got {:?}", self.kind),
            ));
        }
        validate_name("metadata.name", &self.metadata.name)?;
        if self.metadata.name.len() > MAX_ENDPOINT_NAME {
            return Err(FieldError::new(
                "metadata.name",
                format!(
                    "{:?} is longer than {MAX_ENDPOINT_NAME} characters (an endpoint's replica jobs add a suffix)",
                    self.metadata.name
                ),
            ));
        }
        if self.metadata.queue.is_some() {
            return Err(FieldError::new(
                "metadata.queue",
                "endpoints have no queue: their replicas run in the default queue",
            ));
        }
        let s = &self.spec;
        match (&s.model, &s.server) {
            (None, None) => {
                return Err(FieldError::new(
                    "spec",
                    "give either spec.model (served by gpu-model-server) or spec.server.command",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "spec.server",
                    "give spec.model or spec.server, not both",
                ))
            }
            (Some(_), None) if s.protocol == EndpointProtocol::OpenAi => {
                return Err(FieldError::new(
                    "spec.protocol",
                    "openai needs spec.server.command (an OpenAI-compatible server such as vLLM); spec.model is served by gpu-model-server, which speaks v2",
                ))
            }
            (Some(m), None) => {
                if m.path.trim().is_empty() {
                    return Err(FieldError::new(
                        "spec.model.path",
                        "missing model file path",
                    ));
                }
                if m.format != "onnx" {
                    return Err(FieldError::new(
                        "spec.model.format",
                        format!("unsupported format {:?} (supported: onnx)", m.format),
                    ));
                }
                if let Some(n) = &m.name {
                    if n.is_empty() || n.contains('/') {
                        return Err(FieldError::new(
                            "spec.model.name",
                            format!("{n:?} is not a valid model name"),
                        ));
                    }
                }
            }
            (None, Some(srv)) => {
                if srv.command.is_empty() || srv.command[0].trim().is_empty() {
                    return Err(FieldError::new(
                        "spec.server.command",
                        "missing command: give the program and its arguments; it must listen on $PORT",
                    ));
                }
                for k in srv.env.keys() {
                    if k.is_empty() || k.contains('=') || k.contains('\0') {
                        return Err(FieldError::new(
                            "spec.server.env",
                            format!("invalid variable name {k:?}"),
                        ));
                    }
                }
                crate::secret_ref::validate_refs("spec.server", &srv.env_from, &srv.secret_files)?;
            }
        }
        if let Some(a) = &s.auth {
            validate_name("spec.auth.apiKeySecret.name", &a.api_key_secret.name)?;
        }
        // The replica's task is checked like any job's (gpus, gpuModel, ...).
        let probe = crate::api::Job::new(
            &self.metadata.name,
            crate::api::JobSpec {
                tasks: vec![crate::api::TaskSpec {
                    name: "server".into(),
                    replicas: 1,
                    command: vec!["server".into()],
                    env: BTreeMap::new(),
                    env_from: Vec::new(),
                    secret_files: Vec::new(),
                    working_dir: None,
                    resources: s.resources.clone(),
                    image: None,
                }],
                min_available: None,
                priority: 0,
                topology: Default::default(),
                max_retries: 0,
                timeout_seconds: None,
                ttl_seconds_after_finished: None,
            },
        );
        probe.validate().map_err(|e| FieldError {
            path: e.path.replace("spec.tasks[0].resources", "spec.resources"),
            reason: e.reason,
        })?;
        let a = &s.autoscaling;
        if a.max_replicas == 0 || a.max_replicas > MAX_ENDPOINT_REPLICAS {
            return Err(FieldError::new(
                "spec.autoscaling.maxReplicas",
                format!(
                    "must be between 1 and {MAX_ENDPOINT_REPLICAS}, got {}",
                    a.max_replicas
                ),
            ));
        }
        if a.min_replicas > a.max_replicas {
            return Err(FieldError::new(
                "spec.autoscaling.minReplicas",
                format!(
                    "{} is more than maxReplicas ({})",
                    a.min_replicas, a.max_replicas
                ),
            ));
        }
        if !a.target_concurrency.is_finite() || a.target_concurrency <= 0.0 {
            return Err(FieldError::new(
                "spec.autoscaling.targetConcurrency",
                format!("must be more than 0, got {}", a.target_concurrency),
            ));
        }
        if a.stable_window_seconds == 0 || a.stable_window_seconds > 3600 {
            return Err(FieldError::new(
                "spec.autoscaling.stableWindowSeconds",
                format!(
                    "must be between 1 and 3600, got {}",
                    a.stable_window_seconds
                ),
            ));
        }
        if a.scale_to_zero_after_seconds > 7 * 24 * 3600 {
            return Err(FieldError::new(
                "spec.autoscaling.scaleToZeroAfterSeconds",
                "more than a week is absurd",
            ));
        }
        if let Some(p) = s.canary_traffic_percent {
            if p > 100 {
                return Err(FieldError::new(
                    "spec.canaryTrafficPercent",
                    format!("must be between 0 and 100, got {p}"),
                ));
            }
        }
        let b = &s.batching;
        if b.max_batch_size == 0 || b.max_batch_size > 4096 {
            return Err(FieldError::new(
                "spec.batching.maxBatchSize",
                format!("must be between 1 and 4096, got {}", b.max_batch_size),
            ));
        }
        if b.max_delay_millis > 10_000 {
            return Err(FieldError::new(
                "spec.batching.maxDelayMillis",
                format!("must be at most 10000, got {}", b.max_delay_millis),
            ));
        }
        Ok(())
    }

    /// The autoscaler settings for this endpoint.
    pub fn autoscaler_config(&self) -> crate::autoscaler::AutoscalerConfig {
        let a = &self.spec.autoscaling;
        let window = std::time::Duration::from_secs(a.stable_window_seconds);
        crate::autoscaler::AutoscalerConfig {
            target_concurrency: a.target_concurrency,
            min_replicas: a.min_replicas,
            max_replicas: a.max_replicas,
            stable_window: window,
            panic_window: (window / 10).max(std::time::Duration::from_secs(1)),
            scale_to_zero_after: std::time::Duration::from_secs(a.scale_to_zero_after_seconds),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::api::{parse_manifests, Manifest};

    fn parse(text: &str) -> Result<Manifest, String> {
        parse_manifests("ep.yaml", text)
            .map(|mut v| v.remove(0))
            .map_err(|e| e.to_string())
    }

    const OK: &str = "apiVersion: gpuctl.io/v1\nkind: Endpoint\nmetadata: {name: lin}\nspec:\n  model: {path: /m/linear.onnx}\n  resources: {gpus: 1}\n  autoscaling: {minReplicas: 0, maxReplicas: 3, targetConcurrency: 2}\n  batching: {maxBatchSize: 16, maxDelayMillis: 2}\n";

    #[test]
    fn a_good_endpoint_parses_with_defaults() {
        let Manifest::Endpoint(e) = parse(OK).unwrap() else {
            panic!("not an endpoint")
        };
        assert_eq!(e.spec.autoscaling.max_replicas, 3);
        assert_eq!(e.spec.autoscaling.scale_to_zero_after_seconds, 60);
        assert_eq!(e.spec.model.as_ref().unwrap().format, "onnx");
        assert_eq!(e.spec.batching.max_batch_size, 16);
        let c = e.autoscaler_config();
        assert_eq!(c.panic_window, std::time::Duration::from_secs(6));
    }

    #[test]
    fn the_protocol_defaults_to_v2_and_openai_needs_a_server_command() {
        let Manifest::Endpoint(e) = parse(OK).unwrap() else {
            panic!("not an endpoint")
        };
        assert_eq!(e.spec.protocol, super::EndpointProtocol::V2);
        let openai = "apiVersion: gpuctl.io/v1\nkind: Endpoint\nmetadata: {name: llm}\nspec:\n  protocol: openai\n  server: {command: [vllm, serve, m]}\n";
        let Manifest::Endpoint(e) = parse(openai).unwrap() else {
            panic!("not an endpoint")
        };
        assert_eq!(e.spec.protocol.ready_path(), "/health");
        let err = parse(&OK.replace("spec:\n", "spec:\n  protocol: openai\n")).unwrap_err();
        assert!(
            err.contains("spec.protocol") && err.contains("needs spec.server.command"),
            "{err}"
        );
        let err = parse(&OK.replace("spec:\n", "spec:\n  protocol: grpc\n")).unwrap_err();
        assert!(err.contains("protocol") && err.contains("grpc"), "{err}");
    }

    #[test]
    fn bad_endpoints_name_the_field() {
        let cases = [
            (
                OK.replace("maxDelayMillis: 2", "maxDelay: 2"),
                "spec.batching",
            ),
            (
                OK.replace("maxReplicas: 3", "maxReplicas: 0"),
                "spec.autoscaling.maxReplicas",
            ),
            (
                OK.replace("minReplicas: 0", "minReplicas: 5"),
                "spec.autoscaling.minReplicas",
            ),
            (
                OK.replace("targetConcurrency: 2", "targetConcurrency: -1"),
                "spec.autoscaling.targetConcurrency",
            ),
            (
                OK.replace("{path: /m/linear.onnx}", "{path: /m/x.pt, format: torch}"),
                "spec.model.format",
            ),
            (
                OK.replace("  model: {path: /m/linear.onnx}\n", ""),
                "spec: give either",
            ),
            (OK.replace("gpus: 1", "gpus: 1.5"), "spec.resources.gpus"),
            (
                OK.replace(
                    "  model: {path: /m/linear.onnx}\n",
                    "  server: {command: []}\n",
                ),
                "spec.server.command",
            ),
            (
                OK.replace("metadata: {name: lin}", "metadata: {name: Lin}"),
                "metadata.name",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.starts_with("ep.yaml: "), "{err}");
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }
}
