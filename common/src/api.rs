//! The object model users write and read: Kubernetes-style documents with
//! `apiVersion`, `kind`, `metadata`, `spec` and a read-only `status`.
//!
//! Parsing is strict (unknown fields are errors) and every error names the
//! source file, the document, the field path and the reason, so that
//! `gpuctl apply -f job.yaml` can tell the user exactly what to fix.

use std::collections::BTreeMap;
use std::fmt;

pub use crate::field::{validate_name, FieldError, ManifestError};
use crate::secret_ref::{EnvFromSource, SecretFilesSource};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::manifest::{parse_manifest_json, parse_manifests, Manifest};
pub use crate::node::{Gpu, Node, NodePhase, NodeSpec, NodeStatus};

/// The `apiVersion` of every gpuctl object.
pub const API_VERSION: &str = "gpuctl.io/v1";

/// Largest whole-GPU request of one task; more is surely a typo.
pub const MAX_GPUS_PER_TASK: f64 = 64.0;
/// Largest number of tasks in one job.
pub const MAX_TASKS_PER_JOB: u32 = 10_000;
/// Largest CPU request of one task, in millicores (4096 cores).
pub const MAX_CPU_MILLI: u64 = 4096 * 1000;
/// Largest memory request of one task (64 TiB).
pub const MAX_MEMORY_BYTES: u64 = 64 << 40;
/// Longest kept event list of a job; older events are dropped.
pub const MAX_EVENTS: usize = 50;

/// `metadata` of every object.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Queue a job is submitted to (`default` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Set by the server: the Raft index that created the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u64>,
    /// Set by the server: the Raft index of the last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<u64>,
    /// Set by the server: creation time, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp_ms: Option<u64>,
    /// Set by the server: the user who created the object (jobs, workflows,
    /// endpoints; the jobs a workflow or endpoint creates inherit it).
    /// Only an admin may name another owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A batch job: one or more task groups, run as an all-or-nothing gang.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Job {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: JobSpec,
    /// Read-only; ignored when applied.
    #[serde(default)]
    pub status: JobStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobSpec {
    /// Task groups; tasks are numbered across groups in order (the global
    /// index is the `RANK` of a gang).
    pub tasks: Vec<TaskSpec>,
    /// Fewest tasks that may run; default: all of them (a gang).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<u32>,
    /// Higher runs first within a queue.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub priority: i32,
    /// Where a gang's tasks should land.
    #[serde(default, skip_serializing_if = "Topology::is_default")]
    pub topology: Topology,
    /// How many times the whole job is retried after a failed attempt.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub max_retries: u32,
    /// An attempt running longer than this fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Delete the job this long after it finished (succeeded, failed or
    /// cancelled), as Kubernetes' Job field of the same name; kept until
    /// deleted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<u64>,
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// Placement preference for a gang.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// As few nodes and NVLink domains as possible.
    #[default]
    Pack,
    /// No preference.
    Any,
}

impl Topology {
    fn is_default(&self) -> bool {
        *self == Topology::Pack
    }
}

/// One task group: `replicas` identical tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskSpec {
    #[serde(default = "default_group_name")]
    pub name: String,
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Program and arguments, run directly (no shell): `[sh, -c, "..."]` for one.
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secrets whose keys become environment variables (`env` wins on a clash).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    /// Secrets whose keys become files under `$GPUCTL_SECRETS_DIR`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_files: Vec<SecretFilesSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub resources: Resources,
    /// The container image the command runs in (`pytorch/pytorch:2.4.0`),
    /// as a Kubernetes container's `image`. Honoured on nodes that run a
    /// container runtime (`gpu-node --runtime podman`); elsewhere the
    /// command runs in the node's own environment, and the task's events
    /// say so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// Whether `image` can be an image reference (`[registry/]name[:tag][@digest]`):
/// not empty, no spaces or control characters, only the characters image
/// references use, and not starting with `-` (it would read as an option of
/// the container runtime's command line). Why not, otherwise.
pub fn check_image(image: &str) -> Result<(), String> {
    if image.is_empty() {
        return Err("empty: give an image such as pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime, or leave it out".into());
    }
    if image.len() > 512 {
        return Err(format!(
            "{} characters is longer than an image reference may be (512)",
            image.len()
        ));
    }
    if let Some(c) = image
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | ':' | '_' | '-' | '@')))
    {
        return Err(format!("{image:?} is not an image reference: {c:?} is not allowed (expected e.g. registry.example.com/team/train:1.2)"));
    }
    if !image.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "{image:?} is not an image reference: it must start with a letter or digit"
        ));
    }
    Ok(())
}

fn default_group_name() -> String {
    "main".to_string()
}
fn default_replicas() -> u32 {
    1
}

/// What one task of a group needs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// Whole GPUs (1, 2, 8) or a share of one GPU (0.25).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub gpus: f64,
    /// Acceptable GPU models separated by `|`, e.g. `A100|H100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<String>,
    /// Least memory each bound GPU must have, e.g. `40Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<Bytes>,
    /// CPU cores, e.g. `4` or `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Host memory, e.g. `16Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

impl Resources {
    /// GPU request in thousandths of a GPU (`gpu_milli` in the openb traces).
    pub fn gpu_milli(&self) -> u64 {
        (self.gpus * 1000.0).round() as u64
    }

    /// Whether a GPU of `model` with `memory_bytes` satisfies the model and
    /// memory constraints.
    pub fn accepts_gpu(&self, model: &str, memory_bytes: u64) -> bool {
        if let Some(min) = &self.gpu_memory {
            if memory_bytes < min.0 {
                return false;
            }
        }
        match &self.gpu_model {
            None => true,
            Some(alts) => alts
                .split('|')
                .map(str::trim)
                .any(|alt| model_matches(alt, model)),
        }
    }
}

/// `alt` names `model` when equal (ignoring case), or when `model` is `alt`
/// followed by a `-` qualifier (`A100` matches `A100-80GB`), or when NVML's
/// `NVIDIA ` prefix is all that differs.
pub fn model_matches(alt: &str, model: &str) -> bool {
    let norm = |s: &str| {
        let s = s.trim().to_ascii_uppercase();
        s.strip_prefix("NVIDIA ").map(str::to_string).unwrap_or(s)
    };
    let (alt, model) = (norm(alt), norm(model));
    if alt.is_empty() {
        return false;
    }
    model == alt
        || model
            .strip_prefix(&alt)
            .is_some_and(|rest| rest.starts_with('-'))
}

/// A CPU quantity in millicores; written as `4`, `0.5` or `500m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cpu(pub u64);

/// A byte quantity; written as `16Gi`, `512Mi`, `1G` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrString {
    Num(f64),
    Str(String),
}

impl<'de> Deserialize<'de> for Cpu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = NumOrString::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected CPU cores such as 4, 0.5 or \"500m\"")
        })?;
        parse_cpu(&v).map(Cpu).map_err(serde::de::Error::custom)
    }
}

fn parse_cpu(v: &NumOrString) -> Result<u64, String> {
    let cores = match v {
        NumOrString::Num(n) => *n,
        NumOrString::Str(s) => {
            let s = s.trim();
            if let Some(m) = s.strip_suffix('m') {
                let milli: f64 = m.parse().map_err(|_| {
                    format!("invalid CPU quantity {s:?} (expected 4, 0.5 or \"500m\")")
                })?;
                milli / 1000.0
            } else {
                s.parse().map_err(|_| {
                    format!("invalid CPU quantity {s:?} (expected 4, 0.5 or \"500m\")")
                })?
            }
        }
    };
    if !cores.is_finite() || cores < 0.0 {
        return Err(format!("CPU must be zero or more cores, got {cores}"));
    }
    let milli = (cores * 1000.0).round();
    if milli > MAX_CPU_MILLI as f64 {
        return Err(format!(
            "{cores} CPU cores is more than any node has (limit {})",
            MAX_CPU_MILLI / 1000
        ));
    }
    Ok(milli as u64)
}

impl Serialize for Cpu {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(1000) {
            s.serialize_u64(self.0 / 1000)
        } else {
            s.serialize_str(&format!("{}m", self.0))
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = NumOrString::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a size such as \"16Gi\", \"512Mi\" or a number of bytes",
            )
        })?;
        let s = match v {
            NumOrString::Num(n) => format!("{n}"),
            NumOrString::Str(s) => s,
        };
        parse_bytes(&s).map(Bytes).map_err(serde::de::Error::custom)
    }
}

/// Parse `16Gi`, `512Mi`, `80GB`, `1G`, `1024`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (expected e.g. \"16Gi\", \"512Mi\" or bytes)"))?;
    let mult: f64 = match unit.trim() {
        "" => 1.0,
        "k" | "K" | "KB" | "kB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "T" | "TB" => 1e12,
        "Ki" | "KiB" => 1024.0,
        "Mi" | "MiB" => 1024.0 * 1024.0,
        "Gi" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "Ti" | "TiB" => 1024.0f64.powi(4),
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use Ki, Mi, Gi, Ti, K, M, G, T)"
            ))
        }
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes < 0.0 {
        return Err(format!("size must be zero or more, got {s:?}"));
    }
    if bytes > MAX_MEMORY_BYTES as f64 {
        return Err(format!("{s} is more than any node has (limit 64Ti)"));
    }
    Ok(bytes.round() as u64)
}

/// Render bytes the way users write them (`80Gi`, `512Mi`).
pub fn format_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (u, m) in UNITS {
        if b >= m && b.is_multiple_of(m) {
            return format!("{}{u}", b / m);
        }
    }
    for (u, m) in UNITS {
        if b >= m {
            return format!("{:.1}{u}", b as f64 / m as f64);
        }
    }
    format!("{b}")
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_bytes(self.0))
    }
}

impl Job {
    /// A job with defaults, as `gpuctl submit` builds it.
    pub fn new(name: &str, spec: JobSpec) -> Job {
        Job {
            api_version: API_VERSION.to_string(),
            kind: "Job".to_string(),
            metadata: ObjectMeta {
                name: name.to_string(),
                ..Default::default()
            },
            spec,
            status: JobStatus::default(),
        }
    }

    /// Total number of tasks across groups.
    pub fn task_count(&self) -> u32 {
        self.spec.tasks.iter().map(|t| t.replicas).sum()
    }

    /// GPU thousandths every task asks for, together.
    pub fn gpu_milli_requested(&self) -> u64 {
        self.spec
            .tasks
            .iter()
            .map(|t| u64::from(t.replicas) * t.resources.gpu_milli())
            .sum()
    }

    /// GPU thousandths the current attempt's bound and running tasks hold.
    pub fn gpu_milli_held(&self) -> u64 {
        self.status
            .tasks
            .iter()
            .filter(|t| t.phase.holds_resources())
            .flat_map(|t| &t.gpus)
            .map(|g| u64::from(g.milli))
            .sum()
    }

    /// The group spec of global task index `i`.
    pub fn task_spec(&self, index: u32) -> Option<&TaskSpec> {
        let mut base = 0;
        for t in &self.spec.tasks {
            if index < base + t.replicas {
                return Some(t);
            }
            base += t.replicas;
        }
        None
    }

    /// Static checks that need no cluster state.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.kind != "Job" {
            return Err(FieldError::new(
                "kind",
                format!("expected Job, got {:?}", self.kind),
            ));
        }
        validate_name("metadata.name", &self.metadata.name)?;
        if let Some(q) = &self.metadata.queue {
            validate_name("metadata.queue", q)?;
        }
        if self.spec.tasks.is_empty() {
            return Err(FieldError::new(
                "spec.tasks",
                "a job needs at least one task group",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut total: u64 = 0;
        for (i, t) in self.spec.tasks.iter().enumerate() {
            let p = format!("spec.tasks[{i}]");
            validate_name(&format!("{p}.name"), &t.name)?;
            crate::secret_ref::validate_refs(&p, &t.env_from, &t.secret_files)?;
            if !names.insert(t.name.as_str()) {
                return Err(FieldError::new(
                    format!("{p}.name"),
                    format!("duplicate task group name {:?}", t.name),
                ));
            }
            if t.replicas == 0 {
                return Err(FieldError::new(
                    format!("{p}.replicas"),
                    "must be at least 1",
                ));
            }
            total += u64::from(t.replicas);
            if t.command.is_empty() || t.command[0].trim().is_empty() {
                return Err(FieldError::new(
                    format!("{p}.command"),
                    "missing command: give the program and its arguments, e.g. [python, train.py]",
                ));
            }
            if let Some(image) = &t.image {
                check_image(image).map_err(|why| FieldError::new(format!("{p}.image"), why))?;
            }
            for k in t.env.keys() {
                if k.is_empty() || k.contains('=') || k.contains('\0') {
                    return Err(FieldError::new(
                        format!("{p}.env"),
                        format!("invalid variable name {k:?}"),
                    ));
                }
            }
            let r = &t.resources;
            let rp = format!("{p}.resources");
            if !r.gpus.is_finite() || r.gpus < 0.0 {
                return Err(FieldError::new(
                    format!("{rp}.gpus"),
                    format!("must be zero or more, got {}", r.gpus),
                ));
            }
            if r.gpus > MAX_GPUS_PER_TASK {
                return Err(FieldError::new(
                    format!("{rp}.gpus"),
                    format!("{} GPUs for one task is more than any node has (limit {MAX_GPUS_PER_TASK}); use more replicas", r.gpus),
                ));
            }
            if r.gpus > 1.0 && r.gpus.fract() != 0.0 {
                return Err(FieldError::new(
                    format!("{rp}.gpus"),
                    format!(
                        "{} is neither whole GPUs nor a share of one GPU (use e.g. 2 or 0.5)",
                        r.gpus
                    ),
                ));
            }
            if r.gpus > 0.0 && r.gpu_milli() == 0 {
                return Err(FieldError::new(
                    format!("{rp}.gpus"),
                    "a GPU share must be at least 0.001",
                ));
            }
            if let Some(m) = &r.gpu_model {
                if m.split('|').any(|a| a.trim().is_empty()) {
                    return Err(FieldError::new(
                        format!("{rp}.gpuModel"),
                        format!("{m:?} has an empty alternative"),
                    ));
                }
            }
        }
        if total > u64::from(MAX_TASKS_PER_JOB) {
            return Err(FieldError::new(
                "spec.tasks",
                format!("{total} tasks is more than the limit of {MAX_TASKS_PER_JOB}"),
            ));
        }
        if let Some(m) = self.spec.min_available {
            if m == 0 || u64::from(m) > total {
                return Err(FieldError::new(
                    "spec.minAvailable",
                    format!("must be between 1 and the number of tasks ({total}), got {m}"),
                ));
            }
        }
        if self.spec.max_retries > 100 {
            return Err(FieldError::new(
                "spec.maxRetries",
                format!("{} retries is absurd (limit 100)", self.spec.max_retries),
            ));
        }
        if self.spec.timeout_seconds == Some(0) {
            return Err(FieldError::new(
                "spec.timeoutSeconds",
                "must be at least 1 (leave it out for no timeout)",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum JobPhase {
    /// Waiting for capacity (or to be retried).
    #[default]
    Pending,
    /// Placed; some tasks are starting or running.
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobPhase {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobPhase::Succeeded | JobPhase::Failed | JobPhase::Cancelled
        )
    }
}

impl fmt::Display for JobPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub phase: JobPhase,
    /// Current attempt, from 1; 0 before the job was stored.
    #[serde(default)]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the current attempt's tasks were all bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time_ms: Option<u64>,
    /// `MASTER_PORT` of the gang's rank 0.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub master_port: u32,
    /// Attempts that ended because the job was preempted (they do not count
    /// against `maxRetries`).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub preemptions: u32,
    /// Attempts that ended through no fault of the job's (a GPU reported a
    /// fatal XID, its node was drained): requeued without using a retry.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub requeues: u32,
    /// Where earlier attempts ran and how they ended (the most recent
    /// [`MAX_PAST_ATTEMPTS`]), so their logs stay reachable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub past_attempts: Vec<PastAttempt>,
    /// Why a pending job is not running yet, computed by the scheduler when
    /// the job is read (not stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TaskPhase {
    #[default]
    Pending,
    /// Placed on a node; the node has not reported it started.
    Bound,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskPhase {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskPhase::Succeeded | TaskPhase::Failed | TaskPhase::Cancelled
        )
    }
    /// Whether the task holds resources on its node.
    pub fn holds_resources(self) -> bool {
        matches!(self, TaskPhase::Bound | TaskPhase::Running)
    }
}

impl fmt::Display for TaskPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A share of one GPU bound to a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuShare {
    pub index: u32,
    pub uuid: String,
    /// Thousandths of the GPU (1000: the whole GPU).
    pub milli: u32,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// Global index (RANK).
    pub index: u32,
    pub group: String,
    pub phase: TaskPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuShare>,
    /// Rank among this job's tasks on the same node.
    #[serde(default)]
    pub local_rank: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `$PORT` the node daemon chose for a task that serves (an endpoint replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time_ms: Option<u64>,
    /// What the task used, as its node's cgroup counted it (a task that
    /// ended on a node with cgroups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TaskUsage>,
}

/// CPU time and memory one task used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskUsage {
    /// CPU time of all its processes, in milliseconds.
    pub cpu_ms: u64,
    /// The most memory it held at once (0: the node's kernel keeps no peak).
    pub memory_peak_bytes: u64,
}

/// An attempt that ended and was followed by another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PastAttempt {
    pub attempt: u32,
    /// Node of each task, by task index (empty: the task was not placed).
    pub nodes: Vec<String>,
    pub reason: String,
    pub ended_ms: u64,
}

/// Most earlier attempts remembered per job.
pub const MAX_PAST_ATTEMPTS: usize = 10;

/// Append an event to an object's list, keeping the last [`MAX_EVENTS`].
pub fn push_event(events: &mut Vec<Event>, time_ms: u64, reason: &str, message: String) {
    events.push(Event {
        time_ms,
        reason: reason.to_string(),
        message,
    });
    let n = events.len();
    if n > MAX_EVENTS {
        events.drain(..n - MAX_EVENTS);
    }
}

/// Something that happened to an object, shown by `gpuctl describe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub time_ms: u64,
    pub reason: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> ManifestError {
        parse_manifests("job.yaml", text).expect_err("should be rejected")
    }

    const GOOD: &str = r#"
apiVersion: gpuctl.io/v1
kind: Job
metadata:
  name: train
spec:
  tasks:
    - name: worker
      replicas: 2
      command: [python, train.py]
      env: {EPOCHS: "3"}
      resources: {gpus: 2, cpu: "500m", memory: 16Gi, gpuModel: "A100|H100"}
"#;

    #[test]
    fn a_task_may_name_its_image() {
        let with = GOOD.replace(
            "      command: [python, train.py]\n",
            "      image: registry.example.com/team/train:1.2\n      command: [python, train.py]\n",
        );
        let docs = parse_manifests("job.yaml", &with).expect("valid");
        let crate::manifest::Manifest::Job(job) = &docs[0] else {
            panic!("a Job")
        };
        assert_eq!(
            job.spec.tasks[0].image.as_deref(),
            Some("registry.example.com/team/train:1.2")
        );
        for bad in ["\"--privileged\"", "\"a b\"", "\"\""] {
            let e = parse_err(&GOOD.replace(
                "      command: [python, train.py]\n",
                &format!("      image: {bad}\n      command: [python, train.py]\n"),
            ));
            assert!(
                e.reason.contains("spec.tasks[0].image")
                    || e.to_string().contains("spec.tasks[0].image"),
                "{e}"
            );
        }
        assert!(check_image("busybox@sha256:0123abc").is_ok());
    }

    #[test]
    fn deep_nesting_is_refused_at_once_naming_where() {
        // Far deeper than the parser's limit: refused by a linear scan, not
        // after the parser's quadratic walk.
        for deep in ["[".repeat(200_000), "{a: ".repeat(50_000)] {
            let e = parse_err(&deep);
            assert_eq!(e.source_name, "job.yaml");
            assert!(
                e.reason
                    .starts_with("nested more than 128 levels deep at line 1 column"),
                "{e}"
            );
        }
        let e = parse_err(&format!("a:\n  b: {}", "[".repeat(129)));
        assert_eq!(
            e.reason,
            "nested more than 128 levels deep at line 2 column 134"
        );
        // Brackets in quoted strings, comments and plain scalars do not count.
        let deep_text = "[".repeat(300);
        let ok = GOOD.replace(
            "EPOCHS: \"3\"",
            &format!("EPOCHS: \"3\", A: \"{deep_text}\", B: '{deep_text}'"),
        );
        let ok = format!("# {deep_text}\n{ok}");
        let ok = ok.replace("name: worker", &format!("name: worker # {deep_text}"));
        assert!(crate::manifest::check_nesting("job.yaml", &ok).is_ok());
        assert!(crate::manifest::check_nesting("x", &format!("a: b{deep_text}")).is_ok());
        assert!(parse_manifests("job.yaml", &ok).is_ok());
    }

    #[test]
    fn parses_a_good_job() {
        let m = parse_manifests("job.yaml", GOOD).unwrap();
        let Manifest::Job(j) = &m[0] else {
            panic!("not a job")
        };
        assert_eq!(j.metadata.name, "train");
        assert_eq!(j.task_count(), 2);
        let r = &j.spec.tasks[0].resources;
        assert_eq!(r.gpu_milli(), 2000);
        assert_eq!(r.cpu, Some(Cpu(500)));
        assert_eq!(r.memory, Some(Bytes(16 << 30)));
        assert!(r.accepts_gpu("A100-80GB", 80 << 30));
        assert!(r.accepts_gpu("NVIDIA H100", 80 << 30));
        assert!(!r.accepts_gpu("V100M16", 16 << 30));
        // Round trip through JSON, as over the API.
        let json = serde_json::to_string(&m[0]).unwrap();
        let back = parse_manifest_json("<api>", &json).unwrap();
        assert_eq!(back, m[0]);
    }

    #[test]
    fn unknown_field_names_the_path() {
        let e = parse_err(&GOOD.replace("replicas: 2", "replicas: 2\n      replica: 3"));
        assert_eq!(e.source_name, "job.yaml");
        assert_eq!(e.path, "spec.tasks[0].replica");
        assert!(e.reason.contains("unknown field `replica`"), "{e}");
    }

    #[test]
    fn malformed_yaml_is_reported() {
        let e = parse_err("apiVersion: gpuctl.io/v1\nkind: Job\nmetadata: {name: x\n");
        assert!(e.reason.starts_with("malformed YAML"), "{e}");
        assert!(e.to_string().starts_with("job.yaml"), "{e}");
    }

    #[test]
    fn missing_command_is_rejected() {
        let e = parse_err(&GOOD.replace("command: [python, train.py]", "command: []"));
        assert_eq!(e.path, "spec.tasks[0].command");
        let e = parse_err(&GOOD.replace("      command: [python, train.py]\n", ""));
        assert!(e.reason.contains("missing field `command`"), "{e}");
    }

    #[test]
    fn bad_resources_are_rejected() {
        for (gpus, why) in [
            ("-1", "zero or more"),
            ("1000", "more than any node"),
            ("1.5", "neither whole"),
        ] {
            let e = parse_err(&GOOD.replace("gpus: 2,", &format!("gpus: {gpus},")));
            assert_eq!(e.path, "spec.tasks[0].resources.gpus", "{gpus}");
            assert!(e.reason.contains(why), "{gpus}: {e}");
        }
        let e = parse_err(&GOOD.replace("memory: 16Gi", "memory: 16Qi"));
        assert_eq!(e.path, "spec.tasks[0].resources.memory");
        let e = parse_err(&GOOD.replace("cpu: \"500m\"", "cpu: -2"));
        assert_eq!(e.path, "spec.tasks[0].resources.cpu");
        let e = parse_err(&GOOD.replace("replicas: 2", "replicas: 0"));
        assert_eq!(e.path, "spec.tasks[0].replicas");
    }

    #[test]
    fn bad_names_and_kinds() {
        let e = parse_err(&GOOD.replace("name: train", "name: Train_1"));
        assert_eq!(e.path, "metadata.name");
        let e = parse_err(&GOOD.replace("kind: Job", "kind: Jobb"));
        assert_eq!(e.path, "kind");
        let e = parse_err(&GOOD.replace("gpuctl.io/v1", "v2"));
        assert_eq!(e.path, "apiVersion");
        let e = parse_err("");
        assert!(e.reason.contains("empty"));
    }

    #[test]
    fn multi_document_errors_name_the_document() {
        let text = format!("{GOOD}---\n{}", GOOD.replace("gpus: 2,", "gpus: -3,"));
        let e = parse_err(&text);
        assert_eq!(e.document, 2);
        assert!(e.to_string().contains("(document 2)"), "{e}");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_bytes("80GB").unwrap(), 80_000_000_000);
        assert_eq!(parse_bytes("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert!(parse_bytes("lots").is_err());
        assert_eq!(format_bytes(80 << 30), "80Gi");
        assert!(model_matches("a100", "A100-80GB"));
        assert!(!model_matches("A10", "A100-80GB"));
        assert!(model_matches("A10", "A10"));
    }
}
