//! CronWorkflows: at each scheduled time the leader proposes `CronRun`,
//! which the state machine applies once (it records the time as handled,
//! so a new leader after a failover neither repeats nor skips it) and
//! which runs the workflow or records why not (`state/cron.rs`). Missed
//! times collapse into one, the latest, as in Argo. The workflows each
//! CronWorkflow made beyond its history limits are deleted, oldest first,
//! once finished. A function of (state, now): the clock is a parameter.

use gpuctl_pipelines::WorkflowPhase;

use crate::state::{Command, State};

/// The commands due at `now_ms`: history pruning, then runs, by name;
/// schedules without `timezone` in the scheduler's local zone
/// ([`crate::cron_zone`]).
pub fn due(st: &State, now_ms: u64) -> Vec<Command> {
    due_in(st, now_ms, &crate::cron_zone::local())
}

/// [`due`] with schedules without `timezone` in `local`.
pub fn due_in(st: &State, now_ms: u64, local: &jiff::tz::TimeZone) -> Vec<Command> {
    let now_s = (now_ms / 1000) as i64;
    let mut cmds = Vec::new();
    for (name, c) in &st.cron_workflows {
        let (keep_ok, keep_failed) = c.cron.history_limits();
        let done: Vec<(String, bool)> = st
            .cron_children(name)
            .iter()
            .filter(|w| w.run.phase().is_terminal())
            .map(|w| {
                (
                    w.metadata.name.clone(),
                    w.run.phase() == WorkflowPhase::Succeeded,
                )
            })
            .collect();
        for (ok, keep) in [(true, keep_ok), (false, keep_failed)] {
            let these: Vec<&String> = done
                .iter()
                .filter(|(_, s)| *s == ok)
                .map(|(n, _)| n)
                .collect();
            let extra = these.len().saturating_sub(keep);
            cmds.extend(
                these[..extra]
                    .iter()
                    .map(|n| Command::DeleteWorkflow { name: (*n).clone() }),
            );
        }
        if c.cron.spec.suspend || c.status.stopped {
            continue;
        }
        let Ok(schedule) = c.cron.schedule_in(local) else {
            continue;
        };
        let created_s = c.metadata.creation_timestamp_ms.unwrap_or(now_ms) / 1000;
        let after = c.status.last_scheduled_s.unwrap_or(created_s as i64);
        if let Some(t) = schedule.latest_between(after, now_s) {
            cmds.push(Command::CronRun {
                name: name.clone(),
                scheduled_s: t,
            });
        }
    }
    cmds
}

#[cfg(test)]
#[path = "cron_tests.rs"]
mod tests;
