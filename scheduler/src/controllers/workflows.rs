//! Workflow timers (leader only): a run whose timer (retry backoff, a
//! deadline) has passed gets a `WorkflowTick`. Everything else about
//! workflows happens in `State::apply`.

use std::time::Duration;

use crate::state::{Command, State};

/// `WorkflowTick` for every workflow whose timer has passed at `now_ms`.
pub fn due(st: &State, now_ms: u64) -> Vec<Command> {
    st.workflows_due(now_ms)
        .into_iter()
        .map(|name| Command::WorkflowTick { name })
        .collect()
}

/// How long from `now_ms` until the earliest timer of a running workflow
/// (at least 5 ms, so a timer just due does not spin the loop).
pub fn next_wakeup(st: &State, now_ms: u64) -> Option<Duration> {
    st.workflows
        .values()
        .filter(|w| !w.run.phase().is_terminal())
        .filter_map(|w| w.wake_at_ms)
        .min()
        .map(|t| Duration::from_millis(t.saturating_sub(now_ms).max(5)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_due_or_timed_without_workflows() {
        let st = State::default();
        assert!(due(&st, u64::MAX).is_empty());
        assert_eq!(next_wakeup(&st, 0), None);
    }
}
