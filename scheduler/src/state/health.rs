//! GPU health in the state machine: a GPU that reports a fatal XID (see
//! [`gpuctl_common::xid`]) is marked unhealthy (placement skips it), the job
//! whose task it failed is requeued without using a retry, and the node is
//! cordoned when the rule says so:
//!
//! - an XID that needs the machine rebooted (79, fallen off the bus), or
//! - as many unhealthy GPUs as the node's `--cordon-after-unhealthy-gpus`.
//!
//! The rule runs when a GPU turns unhealthy (edge-triggered), so an admin
//! who uncordons a node keeps it uncordoned until another GPU fails.
//! `Cordon` with `evict` (the last step of `gpuctl drain`) requeues every
//! job that still has a task on the node, also without using a retry.

use gpuctl_common::api::{push_event, TaskPhase};
use gpuctl_common::xid;

use super::command::{Applied, ApplyError, GpuFault};
use super::jobs::queue_new_attempt;
use super::objects::ObjKey;
use super::State;

impl State {
    fn touch_node_obj(&mut self, index: u64, name: &str) {
        if let Some(n) = self.nodes.get_mut(name) {
            n.metadata.resource_version = Some(index);
        }
        self.dirty.insert(ObjKey::Node(name.to_string()));
    }

    /// A GPU of `node` reported a fatal XID: mark it unhealthy (once), note
    /// it in the node's events, and cordon the node if the rule says so.
    pub(super) fn gpu_faulted(&mut self, index: u64, now: u64, node: &str, f: &GpuFault) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        let Some(g) = n.status.gpus.iter_mut().find(|g| g.index == f.index) else {
            return;
        };
        if !g.healthy && g.xid == f.xid {
            return; // already known
        }
        g.healthy = false;
        g.xid = f.xid;
        push_event(&mut n.status.events, now, "GpuFault", f.message());
        self.health_cordon(now, node, Some(f));
        self.touch_node_obj(index, node);
    }

    /// Cordon `node` if the rule says so and it is not cordoned yet.
    /// `fault`: the XID that just arrived, if one did.
    pub(super) fn health_cordon(&mut self, now: u64, node: &str, fault: Option<&GpuFault>) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        if n.spec.unschedulable {
            return;
        }
        let unhealthy = n.status.gpus.iter().filter(|g| !g.healthy).count() as u32;
        let limit = n.status.cordon_after_unhealthy_gpus;
        let reason = match fault {
            Some(f) if xid::needs_node_reboot(f.xid) => {
                format!("{}: the node needs a reboot", f.message())
            }
            _ if limit > 0 && unhealthy >= limit => format!(
                "{unhealthy} unhealthy GPU(s), at or above --cordon-after-unhealthy-gpus {limit}"
            ),
            _ => return,
        };
        n.spec.unschedulable = true;
        n.spec.cordon_reason = Some(reason.clone());
        push_event(&mut n.status.events, now, "Cordoned", reason);
    }

    /// `Cordon`: mark a node (un)schedulable with its reason; with `evict`,
    /// requeue every job that has a task there.
    pub(super) fn cordon(
        &mut self,
        index: u64,
        now: u64,
        node: &str,
        unschedulable: bool,
        reason: Option<&str>,
        evict: bool,
    ) -> Result<Applied, ApplyError> {
        let n = self
            .nodes
            .get_mut(node)
            .ok_or_else(|| ApplyError::NotFound {
                kind: "node",
                name: node.to_string(),
            })?;
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if unschedulable {
            let changed = !n.spec.unschedulable
                || reason.is_some_and(|r| n.spec.cordon_reason.as_deref() != Some(r));
            n.spec.unschedulable = true;
            if let Some(r) = reason {
                n.spec.cordon_reason = Some(r.to_string());
            }
            if changed {
                let msg = reason.unwrap_or("cordoned").to_string();
                push_event(&mut n.status.events, now, "Cordoned", msg);
            }
        } else if n.spec.unschedulable {
            n.spec.unschedulable = false;
            n.spec.cordon_reason = None;
            push_event(&mut n.status.events, now, "Uncordoned", "uncordoned".into());
        }
        if evict {
            let why = format!("node {node} drained");
            let on_node: Vec<String> = self
                .jobs
                .values()
                .filter(|j| {
                    j.status
                        .tasks
                        .iter()
                        .any(|t| t.phase.holds_resources() && t.node.as_deref() == Some(node))
                })
                .map(|j| j.metadata.name.clone())
                .collect();
            for j in on_node {
                self.requeue(index, now, &j, &why, "Evicted");
            }
        }
        self.touch_node_obj(index, node);
        Ok(Applied::Node(Box::new(self.nodes[node].clone())))
    }

    /// End the job's current attempt through no fault of its own (a GPU
    /// fault, a drain) and queue it again without using a retry; a gang
    /// goes as a whole.
    pub(super) fn requeue(&mut self, index: u64, now: u64, name: &str, reason: &str, event: &str) {
        self.stop_tasks(name, TaskPhase::Failed, reason);
        let Some(job) = self.jobs.get_mut(name) else {
            return;
        };
        if job.status.phase.is_terminal() {
            return;
        }
        job.status.requeues += 1;
        let queued = format!("attempt {} queued; no retry used", job.status.attempt + 1);
        let message = format!("{reason}; requeued");
        queue_new_attempt(job, now, (event, reason), message, queued);
        self.touch_job(index, name);
    }
}
