//! Suspending: a `suspend` template's node (Running until the run is
//! resumed, or until its `duration` has passed), and suspending and
//! resuming the whole run, as `argo suspend` and `argo resume` do.

use super::node::{Node, NodeInputs, NodePhase, NodeType};
use super::state::Run;
use crate::spec::{parse_duration_ms, Template};
use crate::vars::substitute;

impl Run {
    /// The node of a `suspend` template. A `duration` is its resume time,
    /// kept in the node's `deadline_ms` (which, for a Suspend node, ends it
    /// Succeeded rather than Failed). A template's `retryStrategy` and
    /// `memoize` do nothing here, as in Argo: nothing runs that could fail.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn instantiate_suspend(
        &mut self,
        id: &str,
        display: &str,
        t: &Template,
        inputs: NodeInputs,
        depth: usize,
        exit_handler: bool,
        now_ms: u64,
    ) {
        let mut n = Node::new(id, display, NodeType::Suspend, NodePhase::Running);
        n.template = Some(t.name.clone());
        n.inputs = inputs;
        n.started_ms = Some(now_ms);
        n.depth = depth;
        n.exit_handler = exit_handler;
        let duration = t.suspend.as_ref().and_then(|s| s.duration.as_ref());
        if let Some(d) = duration {
            let scope = self.leaf_scope(&n);
            let ms = substitute(&d.0, &scope)
                .map_err(|e| e.to_string())
                .and_then(|text| parse_duration_ms(&text));
            match ms {
                Ok(ms) => n.deadline_ms = Some(now_ms.saturating_add(ms)),
                Err(e) => {
                    n.phase = NodePhase::Error;
                    n.message = Some(format!("suspend.duration: {e}"));
                    n.finished_ms = Some(now_ms);
                }
            }
        }
        self.insert_node(n);
    }

    /// Whether the run is suspended: no step starts until it is resumed.
    pub fn is_suspended(&self) -> bool {
        self.suspended
    }

    /// The Suspend nodes waiting for a resume (or their duration).
    pub fn suspended_nodes(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.node_type == NodeType::Suspend && n.phase == NodePhase::Running)
            .map(|n| n.id.clone())
            .collect()
    }

    /// Suspend the run (`gpuctl suspend`): no new step starts; running ones
    /// finish. Suspending a suspended run changes nothing. `Err` for a run
    /// that has ended.
    pub fn suspend(&mut self) -> Result<(), String> {
        if self.phase.is_terminal() {
            return Err(format!("already {}; nothing to suspend", self.phase));
        }
        self.suspended = true;
        Ok(())
    }

    /// Resume the run (`gpuctl resume`): steps start again, and every
    /// Suspend node waiting ends Succeeded. As `argo resume`, a run with
    /// nothing suspended is left as it is without an error. `Err` for a run
    /// that has ended.
    pub fn resume(&mut self, now_ms: u64) -> Result<(), String> {
        if self.phase.is_terminal() {
            return Err(format!("already {}; nothing to resume", self.phase));
        }
        self.suspended = false;
        for id in self.suspended_nodes() {
            self.finish_node(&id, NodePhase::Succeeded, Some("resumed".into()), now_ms);
        }
        self.reconcile(now_ms);
        self.refresh_open();
        Ok(())
    }

    /// Suspend nodes whose `duration` has passed end Succeeded.
    pub(super) fn wake_suspended(&mut self, now_ms: u64) {
        let due: Vec<String> = self
            .open
            .timed
            .iter()
            .filter_map(|id| self.nodes.get(id))
            .filter(|n| {
                n.node_type == NodeType::Suspend
                    && n.phase == NodePhase::Running
                    && n.deadline_ms.is_some_and(|d| now_ms >= d)
            })
            .map(|n| n.id.clone())
            .collect();
        for id in due {
            self.finish_node(
                &id,
                NodePhase::Succeeded,
                Some("suspend duration passed".into()),
                now_ms,
            );
        }
    }
}
