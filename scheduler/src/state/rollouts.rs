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
fn start_revision(
    ep: &mut Endpoint,
    spec: EndpointSpec,
    cause: String,
    reuse: Option<u64>,
    now: u64,
) {
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
        last_failure: String::new(),
        started_ms: now,
        finished_ms: if from == next { Some(now) } else { None },
        ..Default::default()
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
        let cur = self
            .endpoints
            .get_mut(&name)
            .ok_or_else(|| not_found(&name))?;
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
        let cur = self
            .endpoints
            .get_mut(name)
            .ok_or_else(|| not_found(name))?;
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
        let cur = self
            .endpoints
            .get_mut(name)
            .ok_or_else(|| not_found(name))?;
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

#[cfg(test)]
mod tests {
    use crate::state::testutil::register;
    use crate::state::{Binding, Command, Envelope, State, TaskPlacement, TaskReport};
    use gpuctl_common::api::{GpuShare, TaskPhase};
    use gpuctl_common::endpoint::{Endpoint, RolloutPhase};

    struct H {
        s: State,
        index: u64,
    }

    fn endpoint(path: &str, canary: Option<u32>) -> Endpoint {
        let mut e = gpuctl_testkit::endpoint("lin")
            .model(path)
            .gpus(1.0)
            .replicas(1, 4)
            .build();
        e.spec.canary_traffic_percent = canary;
        e
    }

    impl H {
        fn new() -> H {
            let mut h = H {
                s: State::default(),
                index: 0,
            };
            let n1 = gpuctl_testkit::node("n1")
                .uuid_prefix("GPU")
                .gpus(8, gpuctl_testkit::A100);
            h.apply(register(&n1.build()));
            h
        }
        fn apply(&mut self, cmd: Command) {
            self.try_apply(cmd).unwrap();
        }
        fn try_apply(&mut self, cmd: Command) -> Result<(), String> {
            self.index += 1;
            let r = self
                .s
                .apply(self.index, &Envelope::new(1000 * self.index, cmd));
            self.s.check_index();
            r.map(|_| ()).map_err(|e| e.to_string())
        }
        fn ep(&self) -> Endpoint {
            self.s.endpoint_view("lin").unwrap()
        }
        /// (job, revision, draining) of each replica.
        fn replicas(&self) -> Vec<(String, u64, bool)> {
            self.ep()
                .status
                .replicas
                .iter()
                .map(|r| (r.job.clone(), r.revision, r.draining()))
                .collect()
        }
        fn report(&mut self, job: &str, phase: TaskPhase) {
            self.apply(Command::TaskReport {
                report: TaskReport {
                    node: "n1".into(),
                    job: job.into(),
                    index: 0,
                    attempt: 1,
                    phase,
                    exit_code: (phase == TaskPhase::Failed).then_some(1),
                    message: (phase == TaskPhase::Failed).then(|| "no such model file".into()),
                    pid: Some(7),
                    port: Some(20000 + self.index as u16),
                    gpu_fault: None,
                    outputs: None,
                    usage: None,
                },
            });
        }
        /// Bind, run and report `job` ready.
        fn ready(&mut self, job: &str, gpu: u32) {
            self.bind(job, gpu);
            self.report(job, TaskPhase::Running);
            self.apply(Command::ReplicasReady {
                endpoint: "lin".into(),
                jobs: vec![job.into()],
            });
        }
        fn bind(&mut self, job: &str, gpu: u32) {
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
            });
        }
        fn phase(&self) -> Option<RolloutPhase> {
            self.ep().status.rollout.map(|r| r.phase)
        }
    }

    #[test]
    fn a_changed_template_rolls_out_and_old_replicas_drain_only_once_new_ones_are_ready() {
        let mut h = H::new();
        h.apply(Command::CreateEndpoint {
            endpoint: Box::new(endpoint("/m/a.onnx", None)),
        });
        h.ready("lin-replica-0", 0);
        assert_eq!(h.ep().status.latest_revision, 1);
        // The same spec again, or only new autoscaling bounds: nothing rolls.
        h.apply(Command::UpdateEndpoint {
            endpoint: Box::new(endpoint("/m/a.onnx", None)),
        });
        let mut wider = endpoint("/m/a.onnx", None);
        wider.spec.autoscaling.max_replicas = 6;
        h.apply(Command::UpdateEndpoint {
            endpoint: Box::new(wider),
        });
        assert_eq!(h.ep().status.latest_revision, 1);
        assert_eq!(h.replicas(), vec![("lin-replica-0".into(), 1, false)]);
        // A new model: revision 2 starts beside revision 1, which keeps serving.
        h.apply(Command::UpdateEndpoint {
            endpoint: Box::new(endpoint("/m/b.onnx", None)),
        });
        let ep = h.ep();
        assert_eq!(
            (ep.status.latest_revision, ep.status.stable_revision),
            (2, 1)
        );
        assert_eq!(
            h.replicas(),
            vec![
                ("lin-replica-0".into(), 1, false),
                ("lin-replica-1".into(), 2, false)
            ]
        );
        let cmd = &h.s.jobs["lin-replica-1"].spec.tasks[0].command;
        assert!(cmd.iter().any(|a| a == "/m/b.onnx"), "{cmd:?}");
        assert_eq!(h.phase(), Some(RolloutPhase::Progressing));
        // Running is not ready: the old one still serves.
        h.report("lin-replica-1", TaskPhase::Pending);
        assert!(!h.replicas()[0].2);
        h.ready("lin-replica-1", 1);
        assert_eq!(
            h.replicas(),
            vec![
                ("lin-replica-0".into(), 1, true),
                ("lin-replica-1".into(), 2, false)
            ]
        );
        assert_eq!(h.phase(), Some(RolloutPhase::Complete));
        assert_eq!(h.ep().status.stable_revision, 2);
        // Undo: revision 1's template comes back as revision 3; the draining
        // replica of revision 1 is renumbered and revived, not restarted.
        h.apply(Command::UndoEndpoint {
            name: "lin".into(),
            to_revision: 0,
        });
        let ep = h.ep();
        assert_eq!(ep.status.latest_revision, 3);
        assert_eq!(ep.spec.model.as_ref().unwrap().path, "/m/a.onnx");
        let revs: Vec<u64> = ep.status.revisions.iter().map(|r| r.revision).collect();
        assert_eq!(revs, vec![2, 3], "revision 1 became 3");
        assert_eq!(h.replicas()[0], ("lin-replica-0".into(), 3, false));
        assert_eq!(h.phase(), Some(RolloutPhase::Complete));
        assert!(h.replicas()[1].2, "revision 2's replica drains");
        let err = h
            .try_apply(Command::UndoEndpoint {
                name: "lin".into(),
                to_revision: 7,
            })
            .unwrap_err();
        assert!(err.contains("no such revision (kept: 2, 3)"), "{err}");
    }

    #[test]
    fn a_canary_splits_until_promoted_and_a_crash_loop_fails_the_rollout() {
        let mut h = H::new();
        h.apply(Command::CreateEndpoint {
            endpoint: Box::new(endpoint("/m/a.onnx", None)),
        });
        h.ready("lin-replica-0", 0);
        h.apply(Command::UpdateEndpoint {
            endpoint: Box::new(endpoint("/m/b.onnx", Some(20))),
        });
        h.ready("lin-replica-1", 1);
        assert_eq!(h.phase(), Some(RolloutPhase::Canary));
        let ep = h.ep();
        assert_eq!(ep.canary_percent(), Some(20));
        assert!(h.replicas().iter().all(|r| !r.2), "both serve");
        assert!(h
            .try_apply(Command::PromoteEndpoint {
                name: "nope".into()
            })
            .is_err());
        h.apply(Command::PromoteEndpoint { name: "lin".into() });
        assert_eq!(h.phase(), Some(RolloutPhase::Complete));
        assert!(h.replicas()[0].2, "revision 1 drains");
        assert_eq!(h.ep().canary_percent(), None);
        let err = h
            .try_apply(Command::PromoteEndpoint { name: "lin".into() })
            .unwrap_err();
        assert!(err.contains("no rollout to promote"), "{err}");

        // Revision 3 crash-loops: it never takes traffic and, after three in
        // a row, the rollout is Failed with the replica's reason.
        h.apply(Command::UpdateEndpoint {
            endpoint: Box::new(endpoint("/m/missing.onnx", None)),
        });
        for _ in 0..8 {
            if h.phase() == Some(RolloutPhase::Failed) {
                break;
            }
            let job = h
                .replicas()
                .into_iter()
                .find(|r| r.1 == 3 && !r.2)
                .map(|r| r.0);
            let Some(job) = job else {
                // Backing off: the next starts later.
                h.index += 70;
                h.apply(Command::ScaleEndpoint {
                    name: "lin".into(),
                    replicas: 1,
                    reason: "test".into(),
                });
                continue;
            };
            h.bind(&job, 5);
            h.report(&job, TaskPhase::Failed);
            h.apply(Command::ScaleEndpoint {
                name: "lin".into(),
                replicas: 1,
                reason: "test".into(),
            });
        }
        let ep = h.ep();
        let r = ep.status.rollout.clone().unwrap();
        assert_eq!((r.phase, r.failures), (RolloutPhase::Failed, 3), "{r:?}");
        assert!(r.message.contains("no such model file"), "{r:?}");
        assert_eq!(ep.status.stable_revision, 2);
        assert!(
            ep.status
                .replicas
                .iter()
                .any(|r| r.revision == 2 && !r.draining()),
            "revision 2 keeps serving: {:?}",
            ep.status.replicas
        );
    }

    #[test]
    fn a_rollout_without_progress_fails_at_its_deadline_and_goes_on_once_a_replica_is_ready() {
        let mut h = H::new();
        h.apply(Command::CreateEndpoint {
            endpoint: Box::new(endpoint("/m/a.onnx", None)),
        });
        h.ready("lin-replica-0", 0);
        // Revision 2's replica runs but never answers its readiness probe.
        let mut slow = endpoint("/m/b.onnx", None);
        slow.spec.progress_deadline_seconds = Some(60);
        h.apply(Command::UpdateEndpoint {
            endpoint: Box::new(slow.clone()),
        });
        h.bind("lin-replica-1", 1);
        h.report("lin-replica-1", TaskPhase::Running);
        let settle = |h: &mut H| {
            h.apply(Command::ScaleEndpoint {
                name: "lin".into(),
                replicas: 1,
                reason: "test".into(),
            })
        };
        settle(&mut h);
        assert_eq!(h.phase(), Some(RolloutPhase::Progressing));
        // A change of the deadline alone makes no revision.
        slow.spec.progress_deadline_seconds = Some(30);
        h.apply(Command::UpdateEndpoint {
            endpoint: Box::new(slow),
        });
        assert_eq!(h.ep().status.latest_revision, 2);
        assert!(!h.ep().rollout_stalled(1000 * h.index));
        h.index += 30;
        assert!(h.ep().rollout_stalled(1000 * (h.index + 1)));
        settle(&mut h);
        let ep = h.ep();
        let r = ep.status.rollout.clone().unwrap();
        assert_eq!(r.phase, RolloutPhase::Failed, "{r:?}");
        assert!(
            r.message.starts_with(
                "ProgressDeadlineExceeded: 0 of 1 replicas of revision 2 ready and none more for 30s"
            ),
            "{r:?}"
        );
        assert!(ep
            .status
            .events
            .iter()
            .any(|e| e.reason == "ProgressDeadlineExceeded"));
        assert!(!ep.rollout_stalled(1000 * (h.index + 100)), "marked once");
        assert!(
            h.replicas().iter().any(|r| r.1 == 1 && !r.2),
            "revision 1 keeps serving: {:?}",
            h.replicas()
        );
        // Settling again changes nothing; a ready replica moves it on.
        settle(&mut h);
        assert_eq!(h.phase(), Some(RolloutPhase::Failed));
        h.apply(Command::ReplicasReady {
            endpoint: "lin".into(),
            jobs: vec!["lin-replica-1".into()],
        });
        assert_eq!(h.phase(), Some(RolloutPhase::Complete));
        assert_eq!(h.ep().status.stable_revision, 2);
    }
}
