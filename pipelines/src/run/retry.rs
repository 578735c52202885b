//! A `Retry` node: once its last attempt has finished, either conclude
//! with that attempt's result or create the next attempt after the backoff.

use super::node::{Node, NodePhase, NodeType};
use super::state::Run;
use crate::spec::{parse_duration_ms, RetryPolicy};

impl Run {
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
        let (last_msg, last_out, last_exit) =
            (last.message.clone(), last.outputs.clone(), last.exit_code);
        let started = n.started_ms.unwrap_or(now_ms);
        let tmpl = n
            .template
            .as_deref()
            .and_then(|t| self.template(t))
            .cloned();
        let strategy = tmpl
            .as_ref()
            .and_then(|t| t.retry_strategy.clone())
            .unwrap_or_default();
        let conclude = |run: &mut Run, phase: NodePhase, msg: Option<String>| {
            let n = run.nodes.get_mut(id).expect("retry node");
            n.outputs = last_out.clone();
            n.exit_code = last_exit;
            run.finish_node(id, phase, msg, now_ms);
        };
        if last_phase == NodePhase::Succeeded {
            conclude(self, NodePhase::Succeeded, None);
            return;
        }
        let policy = strategy.retry_policy.unwrap_or_default();
        let retryable = match policy {
            RetryPolicy::Always => true,
            RetryPolicy::OnFailure => last_phase == NodePhase::Failed,
            RetryPolicy::OnError => last_phase == NodePhase::Error,
        };
        let limit = strategy
            .limit
            .as_ref()
            .and_then(|l| l.as_int())
            .unwrap_or(0)
            .max(0) as u32;
        let retries_done = attempts - 1;
        if !retryable || retries_done >= limit {
            let msg = match (retryable, last_msg) {
                (true, Some(m)) if limit > 0 => {
                    Some(format!("{m} (no more retries: limit {limit})"))
                }
                (_, m) => m,
            };
            conclude(self, last_phase, msg);
            return;
        }
        let backoff = strategy.backoff.as_ref();
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
        if let Some(max) = backoff
            .and_then(|b| b.max_duration.as_ref())
            .and_then(|d| parse_duration_ms(&d.0).ok())
        {
            if now_ms + delay > started + max {
                let m = last_msg.unwrap_or_else(|| "failed".into());
                conclude(
                    self,
                    last_phase,
                    Some(format!(
                        "{m} (no more retries: backoff.maxDuration reached)"
                    )),
                );
                return;
            }
        }
        let n = &self.nodes[id];
        let child_id = format!("{id}({attempts})");
        let mut p = Node::new(
            &child_id,
            &format!("{}({attempts})", n.display_name),
            NodeType::Pod,
            NodePhase::Pending,
        );
        p.template = n.template.clone();
        p.inputs = n.inputs.clone();
        p.depth = n.depth;
        p.exit_handler = n.exit_handler;
        p.retries = attempts;
        p.not_before_ms = Some(now_ms + delay);
        self.insert_node(p);
        let n = self.nodes.get_mut(id).expect("retry node");
        n.children.push(child_id);
        n.retries = attempts;
    }
}
