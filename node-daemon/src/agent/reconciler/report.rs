//! What the reconciler tells the scheduler about its tasks (through the
//! outbox), and failing the tasks of a GPU that reported a fatal XID.

use gpuctl_common::api::TaskPhase;
use gpuctl_proto::v1::StepOutputs;

use super::{LocalState, Reconciler};
use crate::assignment::TaskReport;
use crate::runtime::{Exit, TaskKey};

impl Reconciler {
    /// A report of `key` in `phase`, with nothing else to say.
    fn report_of(
        &self,
        key: &TaskKey,
        phase: TaskPhase,
        exit_code: i32,
        message: String,
    ) -> TaskReport {
        TaskReport {
            node: self.cfg.node.clone(),
            key: key.clone(),
            phase,
            exit_code,
            message,
            pid: 0,
            port: 0,
            outputs: None,
            usage: None,
            gpu_fault: None,
        }
    }

    /// The final report of a task that ran: its exit and what it used.
    pub(super) fn report_exit(
        &self,
        key: &TaskKey,
        phase: TaskPhase,
        exit: &Exit,
        outputs: Option<StepOutputs>,
    ) {
        let _ = self.reports.send(TaskReport {
            outputs,
            usage: exit.usage,
            ..self.report_of(key, phase, exit.code, exit.message.clone())
        });
    }

    /// Fail and stop every running task that holds the GPU of `f`.
    pub(super) fn gpu_fault(&mut self, f: &gpuctl_proto::v1::GpuFault) {
        let hit: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.state == LocalState::Running && t.gpus.contains(&f.index))
            .map(|(k, _)| k.clone())
            .collect();
        for key in hit {
            self.report_fault(&key, f.clone());
            // Stopping: its exit is not reported again.
            self.stop(&key);
        }
    }

    /// Report `key` failed by the XID of `f` (the scheduler requeues its job).
    pub(super) fn report_fault(&self, key: &TaskKey, f: gpuctl_proto::v1::GpuFault) {
        let message = gpuctl_common::xid::fault_message(f.index, &f.uuid, f.xid);
        tracing::warn!("{key}: {message}; failing the task");
        let _ = self.reports.send(TaskReport {
            gpu_fault: Some(f),
            ..self.report_of(key, TaskPhase::Failed, -1, message)
        });
    }

    pub(super) fn report(
        &self,
        key: &TaskKey,
        phase: TaskPhase,
        exit_code: i32,
        message: &str,
        pid: u32,
    ) {
        self.report_with(key, phase, exit_code, message, pid, 0, None);
    }

    /// Report a task's phase; `port` for a serving task that started, `outputs`
    /// for a workflow step that ended.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn report_with(
        &self,
        key: &TaskKey,
        phase: TaskPhase,
        exit_code: i32,
        message: &str,
        pid: u32,
        port: u16,
        outputs: Option<StepOutputs>,
    ) {
        let _ = self.reports.send(TaskReport {
            pid,
            port,
            outputs,
            ..self.report_of(key, phase, exit_code, message.to_string())
        });
    }
}
