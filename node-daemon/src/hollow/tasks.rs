//! The hollow runtime: each task "runs" as a timer. `GPUCTL_SIM_DURATION`
//! in the task's env (`2s`, `500ms`, `1m`; else the fleet's default) is how
//! long, `GPUCTL_SIM_EXIT_CODE` (default 0) how it ends. Running and the
//! exit go out through the same outbox as a real daemon's reports.
//!
//! Level-triggered like the real reconciler: every desired set is compared
//! with the timers running here ([`plan`]); a task that left the set
//! (cancelled, preempted) has its timer dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use gpuctl_common::api::TaskPhase;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::agent::Event;
use crate::assignment::{Assignment, TaskReport};
use crate::runtime::TaskKey;

/// The env variable that sets how long a hollow task runs.
pub const DURATION_VAR: &str = "GPUCTL_SIM_DURATION";
/// The env variable that sets a hollow task's exit code.
pub const EXIT_CODE_VAR: &str = "GPUCTL_SIM_EXIT_CODE";

/// How a hollow task ends: after how long, with which exit code; or at
/// once, failed, with why (a bad variable, a missing secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exit { after: Duration, code: i32 },
    Refused(String),
}

/// The outcome the assignment asks for (`default`: the duration when its
/// env names none).
pub fn outcome(a: &Assignment, default: Duration) -> Outcome {
    if !a.secret_error.is_empty() {
        return Outcome::Refused(a.secret_error.clone());
    }
    let after = match a.env.get(DURATION_VAR) {
        None => default,
        Some(v) => match parse_duration(v) {
            Ok(d) => d,
            Err(why) => return Outcome::Refused(format!("{DURATION_VAR}={v:?}: {why}")),
        },
    };
    let code = match a.env.get(EXIT_CODE_VAR) {
        None => 0,
        Some(v) => match v.trim().parse::<i32>() {
            Ok(c) => c,
            Err(_) => {
                return Outcome::Refused(format!(
                    "{EXIT_CODE_VAR}={v:?}: expected a whole number (0 for success)"
                ))
            }
        },
    };
    Outcome::Exit { after, code }
}

/// `0`, `250ms`, `2s`, `1.5m`, `2h`: at most a day.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| "expected a duration such as 500ms, 2s, 1m or 1h".to_string())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "" if n == 0.0 => 0.0,
        _ => return Err("use ms, s, m or h (e.g. 500ms, 2s, 1m, 1h)".into()),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err("must be from 0 to 24h".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What to do about one desired set: start these, drop the timers of those.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub start: Vec<Assignment>,
    pub drop: Vec<TaskKey>,
}

/// Compare a desired set with the timers running here and the tasks that
/// ended here but still show as bound or running (their report is on its
/// way: they are not started again).
pub fn plan(
    desired: Vec<Assignment>,
    running: &HashSet<TaskKey>,
    ended: &HashSet<TaskKey>,
) -> Plan {
    let wanted: BTreeMap<TaskKey, Assignment> = desired
        .into_iter()
        .filter(|a| matches!(a.phase, TaskPhase::Bound | TaskPhase::Running))
        .map(|a| (a.key(), a))
        .collect();
    let mut drop: Vec<TaskKey> = running
        .iter()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .collect();
    drop.sort();
    let start = wanted
        .into_iter()
        .filter(|(k, _)| !running.contains(k) && !ended.contains(k))
        .map(|(_, a)| a)
        .collect();
    Plan { start, drop }
}

/// Run the tasks of hollow node `node` from its desired sets until the
/// events end (or `Event::Shutdown`).
pub async fn run(
    node: String,
    mut events: mpsc::UnboundedReceiver<Event>,
    reports: mpsc::UnboundedSender<TaskReport>,
    default: Duration,
) {
    let mut timers: HashMap<TaskKey, AbortHandle> = HashMap::new();
    let mut ended: HashSet<TaskKey> = HashSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<TaskKey>();
    let report = |key: &TaskKey, phase: TaskPhase, code: i32, message: String| TaskReport {
        node: node.clone(),
        key: key.clone(),
        phase,
        exit_code: code,
        message,
        pid: 0,
        port: 0,
        outputs: None,
        usage: None,
        gpu_fault: None,
    };
    loop {
        let desired = tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Desired { tasks, .. }) => tasks,
                // Hollow tasks have no supervisor and no GPU faults.
                Some(Event::Exited { .. } | Event::Started { .. } | Event::GpuFault(_)) => continue,
                Some(Event::Shutdown) | None => break,
            },
            Some(key) = done_rx.recv() => {
                timers.remove(&key);
                ended.insert(key);
                continue;
            }
        };
        let running: HashSet<TaskKey> = timers.keys().cloned().collect();
        let keys: HashSet<TaskKey> = desired.iter().map(Assignment::key).collect();
        ended.retain(|k| keys.contains(k));
        let Plan { start, drop } = plan(desired, &running, &ended);
        for k in drop {
            if let Some(t) = timers.remove(&k) {
                t.abort();
            }
        }
        for a in start {
            let key = a.key();
            let (after, code) = match outcome(&a, default) {
                Outcome::Exit { after, code } => (after, code),
                Outcome::Refused(why) => {
                    let _ = reports.send(report(&key, TaskPhase::Failed, -1, why));
                    ended.insert(key);
                    continue;
                }
            };
            if a.phase == TaskPhase::Bound {
                let _ = reports.send(report(&key, TaskPhase::Running, 0, String::new()));
            }
            let (phase, message) = if code == 0 {
                (TaskPhase::Succeeded, String::new())
            } else {
                (TaskPhase::Failed, format!("simulated exit code {code}"))
            };
            let last = report(&key, phase, code, message);
            let (reports, done) = (reports.clone(), done_tx.clone());
            let timer = tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = reports.send(last);
                let _ = done.send(key);
            });
            timers.insert(a.key(), timer.abort_handle());
        }
    }
    for t in timers.values() {
        t.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(job: &str, phase: TaskPhase, env: &[(&str, &str)]) -> Assignment {
        Assignment {
            job: job.into(),
            attempt: 1,
            phase,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_env_sets_duration_and_exit() {
        let d = Duration::from_millis(5);
        let a = task("a", TaskPhase::Bound, &[]);
        assert_eq!(outcome(&a, d), Outcome::Exit { after: d, code: 0 });
        let a = task(
            "a",
            TaskPhase::Bound,
            &[(DURATION_VAR, "2s"), (EXIT_CODE_VAR, "3")],
        );
        let want = Outcome::Exit {
            after: Duration::from_secs(2),
            code: 3,
        };
        assert_eq!(outcome(&a, d), want);
        let a = task("a", TaskPhase::Bound, &[(DURATION_VAR, "soon")]);
        let Outcome::Refused(why) = outcome(&a, d) else {
            panic!("a bad duration is refused");
        };
        assert!(
            why.starts_with("GPUCTL_SIM_DURATION=\"soon\": expected"),
            "{why}"
        );
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("25h").is_err());
        assert!(parse_duration("2d").is_err());
    }

    #[test]
    fn plans_from_the_desired_set() {
        let desired = vec![
            task("new", TaskPhase::Bound, &[]),
            task("kept", TaskPhase::Running, &[]),
            task("done", TaskPhase::Running, &[]),
            task("over", TaskPhase::Succeeded, &[]),
        ];
        let key = |j: &str| task(j, TaskPhase::Bound, &[]).key();
        let running: HashSet<TaskKey> = [key("kept"), key("gone")].into();
        let ended: HashSet<TaskKey> = [key("done")].into();
        let p = plan(desired, &running, &ended);
        let started: Vec<&str> = p.start.iter().map(|a| a.job.as_str()).collect();
        assert_eq!(started, ["new"], "not what runs, ended or is over");
        assert_eq!(p.drop, [key("gone")], "what left the desired set");
    }
}
