//! `Queue`: a share of the cluster's GPUs that jobs are submitted to.
//!
//! ```yaml
//! apiVersion: gpuctl.io/v1
//! kind: Queue
//! metadata:
//!   name: research
//! spec:
//!   gpuQuota: 16        # GPUs this queue's running jobs may hold (whole or fractional)
//!   weight: 2           # share of idle capacity relative to other queues
//!   borrow: true        # may run beyond its quota on capacity nobody else uses
//!   preemptible: true   # jobs running on borrowed capacity may be stopped for the owner
//! ```
//!
//! A queue is created or replaced with `gpuctl apply`. When `metadata.resourceVersion`
//! is set, the update is a compare-and-set: it is refused with a conflict if the queue
//! changed since that version was read (Kubernetes' optimistic concurrency).
//! The `status` is computed by the server when the queue is read.

use serde::{Deserialize, Serialize};

use crate::api::{validate_name, FieldError, ObjectMeta};

/// Largest accepted weight.
pub const MAX_QUEUE_WEIGHT: u32 = 1000;

/// The queue jobs go to when they name none; it exists without being created
/// and has no quota unless one is applied.
pub const DEFAULT_QUEUE: &str = "default";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Queue {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: QueueSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<QueueStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QueueSpec {
    /// GPUs the queue's jobs may hold at once; absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_quota: Option<f64>,
    /// Relative share of idle capacity (1..=1000).
    #[serde(default = "one")]
    pub weight: u32,
    /// Whether jobs may run beyond the quota on capacity no one else uses.
    #[serde(default)]
    pub borrow: bool,
    /// Whether jobs running on borrowed capacity may be preempted.
    #[serde(default = "yes")]
    pub preemptible: bool,
    /// Teams whose users may submit here; with `users`, both empty: every
    /// user may.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
    /// Users who may submit here besides the `teams`' members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

impl Default for QueueSpec {
    fn default() -> Self {
        QueueSpec {
            gpu_quota: None,
            weight: 1,
            borrow: false,
            preemptible: true,
            teams: Vec::new(),
            users: Vec::new(),
        }
    }
}

/// What the queue's jobs hold and wait for, computed when read.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QueueStatus {
    /// GPUs held by the queue's bound and running tasks.
    pub gpus_in_use: f64,
    pub running_jobs: u32,
    pub pending_jobs: u32,
}

impl Queue {
    /// Whether a user of `team` may submit to this queue: it names the
    /// user or the team, or it names neither teams nor users (open).
    pub fn admits(&self, user: &str, team: &str) -> bool {
        let s = &self.spec;
        (s.teams.is_empty() && s.users.is_empty())
            || s.users.iter().any(|u| u == user)
            || (!team.is_empty() && s.teams.iter().any(|t| t == team))
    }

    /// The quota in thousandths of a GPU (`None`: unlimited).
    pub fn quota_milli(&self) -> Option<u64> {
        self.spec.gpu_quota.map(|g| (g * 1000.0).round() as u64)
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        if self.kind != "Queue" {
            return Err(FieldError::new(
                "kind",
                format!("expected Queue, got {:?}", self.kind),
            ));
        }
        validate_name("metadata.name", &self.metadata.name)?;
        if self.metadata.queue.is_some() {
            return Err(FieldError::new(
                "metadata.queue",
                "a queue does not belong to a queue; remove the field",
            ));
        }
        if let Some(q) = self.spec.gpu_quota {
            if !q.is_finite() || q < 0.0 {
                return Err(FieldError::new(
                    "spec.gpuQuota",
                    format!("{q} is not a GPU count: use a number ≥ 0 such as 8 or 0.5"),
                ));
            }
            if q > 1e6 {
                return Err(FieldError::new(
                    "spec.gpuQuota",
                    format!("{q} GPUs is more than any cluster has; leave it out for no limit"),
                ));
            }
        }
        if self.spec.weight == 0 || self.spec.weight > MAX_QUEUE_WEIGHT {
            return Err(FieldError::new(
                "spec.weight",
                format!(
                    "{} is out of range: use 1 to {MAX_QUEUE_WEIGHT}",
                    self.spec.weight
                ),
            ));
        }
        for (field, names) in [
            ("spec.teams", &self.spec.teams),
            ("spec.users", &self.spec.users),
        ] {
            for (i, n) in names.iter().enumerate() {
                validate_name(&format!("{field}[{i}]"), n)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::api::{parse_manifests, Manifest};

    fn parse(text: &str) -> Result<Manifest, String> {
        parse_manifests("q.yaml", text)
            .map(|mut v| v.remove(0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_queue_parses_with_defaults() {
        let m = parse("apiVersion: gpuctl.io/v1\nkind: Queue\nmetadata: {name: research}\nspec: {gpuQuota: 2.5}\n").unwrap();
        let Manifest::Queue(q) = m else {
            panic!("not a queue: {m:?}")
        };
        assert_eq!(q.quota_milli(), Some(2500));
        assert_eq!(q.spec.weight, 1);
        assert!(!q.spec.borrow);
        assert!(q.spec.preemptible);
        assert!(q.admits("anyone", ""));
    }

    #[test]
    fn a_queue_with_teams_or_users_admits_only_them() {
        let m = parse("apiVersion: gpuctl.io/v1\nkind: Queue\nmetadata: {name: nlp}\nspec: {teams: [nlp], users: [carol]}\n").unwrap();
        let Manifest::Queue(q) = m else {
            panic!("not a queue: {m:?}")
        };
        assert!(q.admits("alice", "nlp"));
        assert!(q.admits("carol", "vision"));
        assert!(!q.admits("bob", "vision"));
        assert!(!q.admits("bob", ""));
        let err = parse("apiVersion: gpuctl.io/v1\nkind: Queue\nmetadata: {name: nlp}\nspec: {teams: [\"Bad Team\"]}\n").unwrap_err();
        assert!(err.contains("spec.teams[0]"), "{err}");
    }

    #[test]
    fn bad_queues_name_the_field() {
        for (text, want) in [
            (
                "spec: {gpuQuota: -1}",
                "q.yaml: spec.gpuQuota: -1 is not a GPU count",
            ),
            (
                "spec: {weight: 0}",
                "q.yaml: spec.weight: 0 is out of range",
            ),
            (
                "spec: {wieght: 2}",
                "q.yaml: spec.wieght: unknown field `wieght`",
            ),
            ("spec: {borrow: maybe}", "q.yaml: spec.borrow: "),
        ] {
            let doc =
                format!("apiVersion: gpuctl.io/v1\nkind: Queue\nmetadata: {{name: q}}\n{text}\n");
            let err = parse(&doc).unwrap_err();
            assert!(err.starts_with(want), "{text}: got {err}");
        }
        let err =
            parse("apiVersion: gpuctl.io/v1\nkind: Queue\nmetadata: {name: Q_1}\n").unwrap_err();
        assert!(err.contains("metadata.name"), "{err}");
    }
}
