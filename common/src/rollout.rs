//! Rollouts of an endpoint's revisions, as pure functions of the stored
//! endpoint: which revision a replica runs, how many replicas each revision
//! should have, and which share of requests the newest one gets.
//!
//! ```text
//! apply with a new replica template ─► revision L+1 (latest); stable stays S
//!   no canaryTrafficPercent: L+1 gets the desired replicas; S keeps
//!       desired − (ready replicas of L+1); complete when S has none: stable = L+1
//!   canaryTrafficPercent p: L+1 gets p% of requests and ⌈desired·p%⌉ replicas,
//!       S the rest, until `rollout promote` (then as without a canary)
//!   undo: the chosen revision's template becomes revision L+1 (renumbered,
//!       its replicas kept, as a Deployment's ReplicaSet)
//! ```
//!
//! The state machine (`scheduler/src/state/rollouts.rs`) applies these; the
//! gateway reads [`Endpoint::canary_percent`] to split requests.

use crate::endpoint::{
    Endpoint, EndpointSpec, ReplicaStatus, RolloutPhase, RolloutStatus, ROLLOUT_FAILED_AFTER,
};

/// Replicas of one revision: how many exist (not draining) and how many of
/// those a gateway found ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RevisionCount {
    pub revision: u64,
    pub replicas: u32,
    pub ready: u32,
}

impl Endpoint {
    /// The revision replica `r` runs (one made before revisions were kept
    /// runs the stable one).
    pub fn replica_revision(&self, r: &ReplicaStatus) -> u64 {
        if r.revision == 0 {
            self.status.stable_revision
        } else {
            r.revision
        }
    }

    /// Whether a rollout is under way: the newest revision is not yet the
    /// one every replica runs.
    pub fn rolling_out(&self) -> bool {
        self.status.latest_revision != self.status.stable_revision
    }

    /// The newest revision's share of requests while a canary is under way.
    pub fn canary_percent(&self) -> Option<u32> {
        if !self.rolling_out() {
            return None;
        }
        self.spec.canary_traffic_percent.filter(|p| *p < 100)
    }

    /// The spec revision `rev` runs (the current spec for the latest).
    pub fn revision_spec(&self, rev: u64) -> Option<&EndpointSpec> {
        if rev == self.status.latest_revision {
            return Some(&self.spec);
        }
        self.status
            .revisions
            .iter()
            .find(|r| r.revision == rev)
            .map(|r| &r.spec)
    }

    /// Non-draining replicas per revision, newest revision first.
    pub fn revision_counts(&self) -> Vec<RevisionCount> {
        let mut out: Vec<RevisionCount> = Vec::new();
        for r in self.status.replicas.iter().filter(|r| !r.draining()) {
            let rev = self.replica_revision(r);
            let i = match out.iter().position(|c| c.revision == rev) {
                Some(i) => i,
                None => {
                    out.push(RevisionCount {
                        revision: rev,
                        ..Default::default()
                    });
                    out.len() - 1
                }
            };
            out[i].replicas += 1;
            out[i].ready += u32::from(r.ready);
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.revision));
        out
    }

    /// How many serving replicas each revision should have when the
    /// endpoint wants `want` in all and `ready_latest` replicas of the
    /// latest revision are ready. Revisions not listed should have none.
    pub fn revision_targets(&self, want: u32, ready_latest: u32) -> Vec<(u64, u32)> {
        let (latest, stable) = (self.status.latest_revision, self.status.stable_revision);
        if !self.rolling_out() {
            return vec![(latest, want)];
        }
        if let Some(p) = self.canary_percent() {
            if want == 0 {
                return vec![(latest, 0), (stable, 0)];
            }
            let share = |pct: u32| (u64::from(want) * u64::from(pct)).div_ceil(100) as u32;
            let canary = if p == 0 { 0 } else { share(p).max(1) };
            return vec![(latest, canary), (stable, share(100 - p).max(1))];
        }
        vec![(latest, want), (stable, want.saturating_sub(ready_latest))]
    }

    /// Whether some revision has fewer serving replicas than it should for
    /// the desired count (one ended, or a rollout waits for a replacement).
    pub fn short_of_replicas(&self) -> bool {
        let counts = self.revision_counts();
        let of = |rev: u64| {
            counts
                .iter()
                .find(|c| c.revision == rev)
                .copied()
                .unwrap_or_default()
        };
        let ready_latest = of(self.status.latest_revision).ready;
        self.revision_targets(self.status.desired_replicas, ready_latest)
            .iter()
            .any(|&(rev, n)| of(rev).replicas < n)
    }

    /// Whether the rollout under way has gone past its progress deadline
    /// without being marked Failed yet (the endpoint controller then has
    /// the state settle it).
    pub fn rollout_stalled(&self, now: u64) -> bool {
        let Some(r) = self.status.rollout.as_ref().filter(|_| self.rolling_out()) else {
            return false;
        };
        if r.phase == RolloutPhase::Failed {
            return false;
        }
        let latest = self.status.latest_revision;
        let ready = self
            .revision_counts()
            .iter()
            .find(|c| c.revision == latest)
            .map_or(0, |c| c.ready);
        let target = self
            .revision_targets(self.status.desired_replicas, ready)
            .iter()
            .find(|(rev, _)| *rev == latest)
            .map_or(0, |(_, n)| *n);
        ready < target
            && now.saturating_sub(r.progress_ms.max(r.started_ms))
                >= self.spec.progress_deadline_ms()
    }

    /// The traffic split in words, for `get` and `describe`:
    /// `r3 80% r4 20%`, or `r2 100%`.
    pub fn traffic_summary(&self) -> String {
        let (latest, stable) = (self.status.latest_revision, self.status.stable_revision);
        if latest == 0 {
            return String::new();
        }
        match self.canary_percent() {
            Some(p) => format!("r{stable} {}% r{latest} {p}%", 100 - p),
            None if self.rolling_out() => format!("r{stable}→r{latest} rolling"),
            None => format!("r{latest} 100%"),
        }
    }
}

/// A replica of the latest revision that ended before a gateway found it
/// ready, and why (its job's message).
pub type EndedUnready = String;

impl Endpoint {
    /// Brings `status.rollout` up to date after the replicas changed (`want`
    /// desired in all; `ended` the replicas of the latest revision that ended
    /// before they were ready, this time): counts failures, marks the rollout
    /// failed, canary or complete (then the latest revision is the stable
    /// one). Returns the events to record.
    pub fn settle_rollout(
        &mut self,
        ended: &[EndedUnready],
        want: u32,
        now: u64,
    ) -> Vec<(&'static str, String)> {
        let mut events = Vec::new();
        let (latest, stable) = (self.status.latest_revision, self.status.stable_revision);
        if !self.rolling_out() {
            return events;
        }
        let name = self.metadata.name.clone();
        let canary = self.canary_percent();
        let counts = self.revision_counts();
        let ready_latest = counts
            .iter()
            .find(|c| c.revision == latest)
            .map_or(0, |c| c.ready);
        let new_replicas = counts
            .iter()
            .find(|c| c.revision == latest)
            .map_or(0, |c| c.replicas);
        let old_serving: u32 = counts
            .iter()
            .filter(|c| c.revision != latest)
            .map(|c| c.replicas)
            .sum();
        let latest_target = self
            .revision_targets(want, ready_latest)
            .iter()
            .find(|(rev, _)| *rev == latest)
            .map_or(0, |(_, n)| *n);
        let deadline_ms = self.spec.progress_deadline_ms();
        let r = self.status.rollout.get_or_insert(RolloutStatus {
            from_revision: stable,
            to_revision: latest,
            started_ms: now,
            ..Default::default()
        });
        let progressed = ready_latest > r.ready_seen;
        if progressed {
            r.ready_seen = ready_latest;
            r.progress_ms = now;
        }
        for why in ended {
            r.failures += 1;
            r.last_failure = why.clone();
            r.message = format!("a replica of revision {latest} ended before it was ready: {why}");
            if r.failures >= ROLLOUT_FAILED_AFTER && r.phase != RolloutPhase::Failed {
                r.phase = RolloutPhase::Failed;
                events.push((
                    "RolloutFailed",
                    format!(
                        "revision {latest}: {} replicas in a row ended before they were ready; \
                         revision {stable} keeps serving. Last: {why}",
                        r.failures
                    ),
                ));
            }
        }
        if ready_latest > 0 {
            r.failures = 0;
            if r.phase == RolloutPhase::Failed && (progressed || !r.deadline_exceeded) {
                r.phase = RolloutPhase::Progressing;
                r.deadline_exceeded = false;
            }
        }
        if r.phase == RolloutPhase::Failed {
            return events;
        }
        // A Deployment's progress deadline: no new ready replica of the
        // latest revision for that long, while it has fewer than it should.
        let since = r.progress_ms.max(r.started_ms);
        if ready_latest < latest_target && now.saturating_sub(since) >= deadline_ms {
            r.phase = RolloutPhase::Failed;
            r.deadline_exceeded = true;
            r.message = format!(
                "ProgressDeadlineExceeded: {ready_latest} of {latest_target} replicas of revision \
                 {latest} ready and none more for {}s; revision {stable} keeps serving",
                deadline_ms / 1000
            );
            if !r.last_failure.is_empty() {
                r.message += &format!(" (last replica failure: {})", r.last_failure);
            }
            events.push(("ProgressDeadlineExceeded", r.message.clone()));
            return events;
        }
        if let Some(p) = canary {
            if r.phase != RolloutPhase::Canary {
                events.push((
                    "Canary",
                    format!("revision {latest} gets {p}% of requests, revision {stable} the rest"),
                ));
            }
            r.phase = RolloutPhase::Canary;
            r.message = format!(
                "revision {latest} gets {p}% of requests ({ready_latest}/{new_replicas} replicas ready), \
                 revision {stable} the rest; gpuctl rollout promote endpoint/{name} gives it all"
            );
        } else if (want == 0 || ready_latest >= want) && old_serving == 0 {
            r.phase = RolloutPhase::Complete;
            r.finished_ms = Some(now);
            r.message = format!("revision {latest} serves all requests");
            self.status.stable_revision = latest;
            events.push((
                "RolloutComplete",
                format!("revision {latest} rolled out (from revision {stable})"),
            ));
        } else {
            r.phase = RolloutPhase::Progressing;
            r.message = format!(
                "{ready_latest} of {want} replicas of revision {latest} ready; revision {stable} serves meanwhile"
            );
            if r.failures > 0 {
                r.message += &format!(
                    "; {} replica(s) ended before they were ready, the last: {}",
                    r.failures, r.last_failure
                );
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use crate::endpoint::{Endpoint, ReplicaStatus};

    fn ep(latest: u64, stable: u64, canary: Option<u32>) -> Endpoint {
        let mut e: Endpoint = serde_json::from_str(
            r#"{"apiVersion":"gpuctl.io/v1","kind":"Endpoint","metadata":{"name":"e"},
                "spec":{"model":{"path":"/m.onnx"}}}"#,
        )
        .unwrap();
        e.status.latest_revision = latest;
        e.status.stable_revision = stable;
        e.spec.canary_traffic_percent = canary;
        e
    }

    #[test]
    fn targets_follow_the_rollout() {
        assert_eq!(ep(1, 1, None).revision_targets(3, 0), vec![(1, 3)]);
        // A canary stays put after the rollout: the field only splits a rollout.
        assert_eq!(ep(1, 1, Some(20)).revision_targets(3, 0), vec![(1, 3)]);
        assert_eq!(ep(1, 1, Some(20)).canary_percent(), None);
        // Full rollout: the old revision shrinks as new replicas become ready.
        let e = ep(2, 1, None);
        assert_eq!(e.revision_targets(3, 0), vec![(2, 3), (1, 3)]);
        assert_eq!(e.revision_targets(3, 2), vec![(2, 3), (1, 1)]);
        assert_eq!(e.revision_targets(3, 3), vec![(2, 3), (1, 0)]);
        // Canary: both revisions get at least one replica while any is wanted.
        let c = ep(2, 1, Some(20));
        assert_eq!(c.canary_percent(), Some(20));
        assert_eq!(c.revision_targets(1, 0), vec![(2, 1), (1, 1)]);
        assert_eq!(c.revision_targets(10, 0), vec![(2, 2), (1, 8)]);
        assert_eq!(c.revision_targets(0, 0), vec![(2, 0), (1, 0)]);
        assert_eq!(
            ep(2, 1, Some(0)).revision_targets(4, 0),
            vec![(2, 0), (1, 4)]
        );
        assert_eq!(ep(2, 1, Some(100)).canary_percent(), None);
        assert_eq!(c.traffic_summary(), "r1 80% r2 20%");
    }

    #[test]
    fn counts_are_per_revision_and_old_replicas_run_the_stable_one() {
        let mut e = ep(2, 1, None);
        let r = |rev: u64, ready: bool, draining: bool| ReplicaStatus {
            job: format!("e-replica-{rev}"),
            revision: rev,
            ready,
            draining_since_ms: draining.then_some(1),
            ..Default::default()
        };
        e.status.replicas = vec![r(0, true, false), r(2, true, false), r(2, false, false)];
        e.status.replicas.push(r(1, true, true));
        let c = e.revision_counts();
        assert_eq!((c[0].revision, c[0].replicas, c[0].ready), (2, 2, 1));
        assert_eq!((c[1].revision, c[1].replicas, c[1].ready), (1, 1, 1));
        assert_eq!(c.len(), 2);
    }
}
