//! Rollouts in the state machine: `UpdateEndpoint` (an endpoint applied
//! again), `PromoteEndpoint`, `UndoEndpoint` and `ReplicasReady`. The
//! per-revision replica counts are `Endpoint::revision_targets` and the
//! rollout's progress `Endpoint::settle_rollout` (both in
//! `common/src/rollout.rs`); `reconcile_endpoint` (`endpoints.rs`) applies them.
//!
//! ```text
//! UpdateEndpoint  same replica template ─► spec updated, nothing rolls
//!                 a template kept in the history ─► that revision renumbered
//!                 otherwise ─► revision latest+1
//! PromoteEndpoint ─► canaryTrafficPercent cleared: the canary becomes a full rollout
//! UndoEndpoint    ─► the chosen (or previous) revision's template, renumbered
//! ReplicasReady   ─► replicas marked ready; old ones drain as new ones are
//! ```

use gpuctl_common::api::push_event;
use gpuctl_common::endpoint::{
    Endpoint, EndpointSpec, Revision, RolloutPhase, RolloutStatus, REVISION_HISTORY_LIMIT,
};

use super::command::{Applied, ApplyError};
use super::State;

fn not_found(name: &str) -> ApplyError {
    ApplyError::NotFound {
        kind: "endpoint",
        name: name.to_string(),
    }
}

/// A stored endpoint made before revisions were kept gets revision 1 from
/// its current spec.
fn ensure_history(ep: &mut Endpoint, now: u64) {
    if ep.status.latest_revision == 0 {
        ep.status.latest_revision = 1;
        ep.status.stable_revision = 1;
        for r in &mut ep.status.replicas {
            r.revision = 1;
        }
    }
    if ep.status.revisions.is_empty() {
        ep.status.revisions.push(Revision {
            revision: ep.status.latest_revision,
            spec: ep.spec.clone(),
            created_ms: now,
            cause: "created".into(),
        });
    }
}

/// Makes `spec` the endpoint's newest revision: `reuse` (a kept revision
/// with the same template) is renumbered, its replicas with it, as a
/// Deployment's ReplicaSet is on a rollback.
fn start_revision(ep: &mut Endpoint, spec: EndpointSpec, cause: String, reuse: Option<u64>, now: u64) {
    let next = ep.status.latest_revision + 1;
    let stable = ep.status.stable_revision;
    if let Some(old) = reuse {
        ep.status.revisions.retain(|r| r.revision != old);
        for r in &mut ep.status.replicas {
            if r.revision == old || (r.revision == 0 && stable == old) {
                r.revision = next;
            }
        }
        if stable == old {
            ep.status.stable_revision = next;
        }
    }
    ep.status.revisions.push(Revision {
        revision: next,
        spec: spec.clone(),
        created_ms: now,
        cause: cause.clone(),
    });
    ep.status.latest_revision = next;
    ep.spec = spec;
    let from = ep.status.stable_revision;
    ep.status.rollout = Some(RolloutStatus {
        from_revision: from,
        to_revision: next,
        phase: RolloutPhase::Progressing,
        message: String::new(),
        failures: 0,
        started_ms: now,
        finished_ms: if from == next { Some(now) } else { None },
    });
    if from == next {
        // Rolled back to the revision that serves: nothing to wait for.
        let r = ep.status.rollout.as_mut().expect("just set");
        r.phase = RolloutPhase::Complete;
        r.message = format!("revision {next} serves all requests");
    }
    push_event(
        &mut ep.status.events,
        now,
        "RevisionCreated",
        format!("revision {next}: {cause}"),
    );
    // Keep the last REVISION_HISTORY_LIMIT, and any that replicas still run.
    let in_use: Vec<u64> = ep
        .status
        .replicas
        .iter()
        .map(|r| ep.replica_revision(r))
        .chain([ep.status.stable_revision, next])
        .collect();
    while ep.status.revisions.len() > REVISION_HISTORY_LIMIT {
        let Some(i) = ep
            .status
            .revisions
            .iter()
            .position(|r| !in_use.contains(&r.revision))
        else {
            break;
        };
        ep.status.revisions.remove(i);
    }
}

impl State {
    /// An endpoint applied again: a new revision when what its replicas run
    /// changed; otherwise only the spec (autoscaling, keys, canary share).
    pub(crate) fn update_endpoint(
        &mut self,
        index: u64,
        now: u64,
        ep: &Endpoint,
    ) -> Result<Applied, ApplyError> {
        let name = ep.metadata.name.clone();
        ep.validate()
            .map_err(|e| ApplyError::Invalid(e.to_string()))?;
        let cur = self.endpoints.get_mut(&name).ok_or_else(|| not_found(&name))?;
        ensure_history(cur, now);
        let template = ep.spec.replica_template();
        if template != cur.spec.replica_template() {
            let latest = cur.status.latest_revision;
            let reuse = cur
                .status
                .revisions
                .iter()
                .find(|r| r.revision != latest && r.spec.replica_template() == template)
                .map(|r| r.revision);
            let cause = match reuse {
                Some(n) => format!("applied; the template of revision {n}"),
                None => "applied".to_string(),
            };
            start_revision(cur, ep.spec.clone(), cause, reuse, now);
        } else if cur.spec != ep.spec {
            cur.spec = ep.spec.clone();
            push_event(
                &mut cur.status.events,
                now,
                "Updated",
                "spec updated; replicas unchanged".into(),
            );
        }
        let desired = cur.status.desired_replicas;
        self.reconcile_endpoint(index, now, &name, desired, "applied")?;
        Ok(self.endpoint_applied(&name))
    }

    /// `gpuctl rollout promote`: the new revision gets all requests; the
    /// old one drains as its replicas become ready.
    pub(crate) fn promote_endpoint(
        &mut self,
        index: u64,
        now: u64,
        name: &str,
    ) -> Result<Applied, ApplyError> {
        let cur = self.endpoints.get_mut(name).ok_or_else(|| not_found(name))?;
        if !cur.rolling_out() {
            return Err(ApplyError::FailedPrecondition(format!(
                "endpoint {name:?} has no rollout to promote: revision {} serves all requests",
                cur.status.latest_revision
            )));
        }
        cur.spec.canary_traffic_percent = None;
        if let Some(r) = &mut cur.status.rollout {
            if r.phase == RolloutPhase::Canary {
                r.phase = RolloutPhase::Progressing;
            }
        }
        push_event(
            &mut cur.status.events,
            now,
            "Promoted",
            format!(
                "revision {} promoted: it gets all requests once its replicas are ready",
                cur.status.latest_revision
            ),
        );
        let desired = cur.status.desired_replicas.max(1);
        self.reconcile_endpoint(index, now, name, desired, "promoted")?;
        Ok(self.endpoint_applied(name))
    }

    /// `gpuctl rollout undo [--to-revision N]`: revision N's template (the
    /// previous revision's when 0) becomes the newest revision.
    pub(crate) fn undo_endpoint(
        &mut self,
        index: u64,
        now: u64,
        name: &str,
        to_revision: u64,
    ) -> Result<Applied, ApplyError> {
        let cur = self.endpoints.get_mut(name).ok_or_else(|| not_found(name))?;
        ensure_history(cur, now);
        let latest = cur.status.latest_revision;
        let kept: Vec<u64> = cur.status.revisions.iter().map(|r| r.revision).collect();
        let target = if to_revision == 0 {
            kept.iter().copied().filter(|r| *r < latest).max().ok_or_else(|| {
                ApplyError::FailedPrecondition(format!(
                    "endpoint {name:?} has no previous revision to roll back to (revision {latest} is its first)"
                ))
            })?
        } else if to_revision == latest {
            return Err(ApplyError::FailedPrecondition(format!(
                "endpoint {name:?}: revision {to_revision} is already the current one"
            )));
        } else if kept.contains(&to_revision) {
            to_revision
        } else {
            return Err(ApplyError::Invalid(format!(
                "endpoint {name:?}: --to-revision {to_revision}: no such revision (kept: {})",
                kept.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let old = cur
            .status
            .revisions
            .iter()
            .find(|r| r.revision == target)
            .expect("checked above")
            .spec
            .replica_template();
        let spec = EndpointSpec {
            autoscaling: cur.spec.autoscaling.clone(),
            auth: cur.spec.auth.clone(),
            canary_traffic_percent: None,
            ..old
        };
        start_revision(
            cur,
            spec,
            format!("rolled back to revision {target}"),
            Some(target),
            now,
        );
        let desired = cur.status.desired_replicas;
        self.reconcile_endpoint(index, now, name, desired, "rolled back")?;
        Ok(self.endpoint_applied(name))
    }

    /// The gateways found these replicas ready: a rollout may drain old ones.
    pub(crate) fn replicas_ready(
        &mut self,
        index: u64,
        now: u64,
        name: &str,
        jobs: &[String],
    ) -> Result<Applied, ApplyError> {
        let Some(cur) = self.endpoints.get_mut(name) else {
            return Ok(Applied::Nothing);
        };
        let mut changed = false;
        for r in &mut cur.status.replicas {
            if !r.ready && jobs.contains(&r.job) {
                r.ready = true;
                changed = true;
            }
        }
        if !changed {
            return Ok(Applied::Nothing);
        }
        let desired = cur.status.desired_replicas;
        self.reconcile_endpoint(index, now, name, desired, "replicas ready")?;
        Ok(Applied::Nothing)
    }
}
