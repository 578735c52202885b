//! Job timeouts (leader only): an attempt running longer than its job's
//! `timeoutSeconds` is failed with `FailAttempt` (and retried if the job
//! has retries left).

use gpuctl_common::api::JobPhase;

use crate::state::{Command, State};

/// `FailAttempt` for every running attempt past its job's timeout at `now_ms`.
pub fn expired(st: &State, now_ms: u64) -> Vec<Command> {
    // Running jobs are live: the index's set, not every job held.
    st.live_jobs()
        .filter(|j| j.status.phase == JobPhase::Running)
        .filter_map(|j| {
            let limit = j.spec.timeout_seconds? * 1000;
            let started = j.status.start_time_ms?;
            (now_ms.saturating_sub(started) > limit).then(|| Command::FailAttempt {
                job: j.metadata.name.clone(),
                attempt: j.status.attempt,
                reason: format!("ran longer than timeoutSeconds ({})", limit / 1000),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuctl_common::api::Job;

    fn running(name: &str, timeout_seconds: Option<u64>, started_ms: u64) -> Job {
        let mut j = gpuctl_testkit::job(name)
            .timeout_seconds(timeout_seconds)
            .build();
        j.status.phase = JobPhase::Running;
        j.status.attempt = 2;
        j.status.start_time_ms = Some(started_ms);
        j
    }

    #[test]
    fn only_attempts_past_their_timeout_fail() {
        let jobs = vec![
            running("slow", Some(10), 1_000),
            running("fresh", Some(10), 5_000),
            running("unbounded", None, 0),
        ];
        let mut st = State::from_objects(jobs, vec![]);
        assert!(expired(&st, 11_000).is_empty(), "exactly at the limit");
        let cmds = expired(&st, 11_001);
        assert_eq!(
            cmds,
            vec![Command::FailAttempt {
                job: "slow".into(),
                attempt: 2,
                reason: "ran longer than timeoutSeconds (10)".into(),
            }]
        );
        st.jobs.get_mut("slow").unwrap().status.phase = JobPhase::Succeeded;
        assert_eq!(
            expired(&st, 15_001).len(),
            1,
            "only fresh, now past its limit"
        );
    }
}
