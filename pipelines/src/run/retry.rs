//! A `Retry` node: once its last attempt has finished, either conclude
//! with that attempt's result or create the next attempt after the backoff.

use super::node::{Node, NodePhase, NodeType};
use super::state::Run;
use crate::spec::{parse_duration_ms, Backoff, RetryPolicy, RetryStrategy};

/// What to do after a failed attempt.
enum NextAttempt {
    /// Retry after this many milliseconds.
    After(u64),
    /// No more retries; the Retry node ends with this message.
    Stop(Option<String>),
}

impl Run {
    /// Advance Retry node `id` once its last attempt has finished.
    pub(super) fn advance_retry(&mut self, id: &str, now_ms: u64) {
        let n = &self.nodes[id];
        let Some(last_id) = n.children.last().cloned() else {
            return;
        };
        let last = &self.nodes[&last_id];
        if !last.phase.is_fulfilled() {
            return;
        }
        let attempts = n.children.len() as u32;
        let last_phase = last.phase;
        let last_msg = last.message.clone();
        let started = n.started_ms.unwrap_or(now_ms);
        let strategy = n
            .template
            .as_deref()
            .and_then(|t| self.template(t))
            .and_then(|t| t.retry_strategy.clone())
            .unwrap_or_default();
        if last_phase == NodePhase::Succeeded {
            self.conclude_retry(id, &last_id, NodePhase::Succeeded, None, now_ms);
            return;
        }
        let retries_done = attempts - 1;
        match next_attempt(
            &strategy,
            last_phase,
            last_msg,
            retries_done,
            started,
            now_ms,
        ) {
            NextAttempt::Stop(msg) => self.conclude_retry(id, &last_id, last_phase, msg, now_ms),
            NextAttempt::After(delay) => self.start_attempt(id, attempts, now_ms + delay),
        }
    }

    /// End the Retry node `id` as its last attempt `last_id` ended, with
    /// that attempt's outputs and exit code.
    fn conclude_retry(
        &mut self,
        id: &str,
        last_id: &str,
        phase: NodePhase,
        msg: Option<String>,
        now_ms: u64,
    ) {
        let last = &self.nodes[last_id];
        let (outputs, exit_code) = (last.outputs.clone(), last.exit_code);
        let n = self.node_mut(id).expect("retry node");
        n.outputs = outputs;
        n.exit_code = exit_code;
        self.finish_node(id, phase, msg, now_ms);
    }

    /// Add attempt number `attempt` (0 is the first) under Retry node `id`,
    /// not to be launched before `not_before_ms`.
    fn start_attempt(&mut self, id: &str, attempt: u32, not_before_ms: u64) {
        let n = &self.nodes[id];
        let child_id = format!("{id}({attempt})");
        let mut p = Node::new(
            &child_id,
            &format!("{}({attempt})", n.display_name),
            NodeType::Pod,
            NodePhase::Pending,
        );
        p.template = n.template.clone();
        p.inputs = n.inputs.clone();
        p.depth = n.depth;
        p.exit_handler = n.exit_handler;
        p.retries = attempt;
        p.not_before_ms = Some(not_before_ms);
        self.insert_node(p);
        let n = self.node_mut(id).expect("retry node");
        n.children.push(child_id);
        n.retries = attempt;
    }
}

/// Whether an attempt that ended in `last_phase` is retried under
/// `strategy`, and after how long: the policy must cover the failure, the
/// limit must not be reached, and the retry must start within
/// `backoff.maxDuration` of the first attempt.
fn next_attempt(
    strategy: &RetryStrategy,
    last_phase: NodePhase,
    last_msg: Option<String>,
    retries_done: u32,
    started_ms: u64,
    now_ms: u64,
) -> NextAttempt {
    let policy = strategy.retry_policy.unwrap_or_default();
    let retryable = match policy {
        RetryPolicy::Always => true,
        RetryPolicy::OnFailure => last_phase == NodePhase::Failed,
        RetryPolicy::OnError => last_phase == NodePhase::Error,
    };
    // No limit: retry until it succeeds, as Argo does.
    let limit = strategy
        .limit
        .as_ref()
        .map_or(i64::from(u32::MAX), |l| l.as_int().unwrap_or(0))
        .clamp(0, i64::from(u32::MAX)) as u32;
    if !retryable || retries_done >= limit {
        let msg = match (retryable, last_msg) {
            (true, Some(m)) if limit > 0 => Some(format!("{m} (no more retries: limit {limit})")),
            (_, m) => m,
        };
        return NextAttempt::Stop(msg);
    }
    let backoff = strategy.backoff.as_ref();
    let delay = backoff_delay(backoff, retries_done);
    if let Some(max) = backoff
        .and_then(|b| b.max_duration.as_ref())
        .and_then(|d| parse_duration_ms(&d.0).ok())
    {
        if now_ms + delay > started_ms + max {
            let m = last_msg.unwrap_or_else(|| "failed".into());
            return NextAttempt::Stop(Some(format!(
                "{m} (no more retries: backoff.maxDuration reached)"
            )));
        }
    }
    NextAttempt::After(delay)
}

/// `duration × factor^retries_done` in milliseconds, at most `cap` (0
/// without a backoff).
fn backoff_delay(backoff: Option<&Backoff>, retries_done: u32) -> u64 {
    let base = backoff
        .and_then(|b| b.duration.as_ref())
        .and_then(|d| parse_duration_ms(&d.0).ok())
        .unwrap_or(0);
    let factor = backoff
        .and_then(|b| b.factor.as_ref())
        .and_then(|f| f.as_int())
        .unwrap_or(1)
        .max(1) as u64;
    let delay = base.saturating_mul(factor.saturating_pow(retries_done));
    match backoff
        .and_then(|b| b.cap.as_ref())
        .and_then(|c| parse_duration_ms(&c.0).ok())
    {
        Some(cap) => delay.min(cap),
        None => delay,
    }
}
