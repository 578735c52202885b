//! The typed edge between the daemon and the scheduler's task messages.
//!
//! An assignment from `WatchAssignments` is converted once, as it arrives,
//! into an [`Assignment`] whose phase is a [`TaskPhase`]; what the daemon
//! says about a task is a [`TaskReport`], turned into a `ReportTaskRequest`
//! only as it is sent. The proto's `TaskPhase` enum is mapped to the
//! domain's here and nowhere else, so the rest of the daemon never sees a
//! wire phase.

use std::collections::BTreeMap;

use gpuctl_common::api::TaskPhase;
use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::{ReportTaskRequest, StepIo, StepOutputs, TaskAssignment};

use crate::owner::Owner;
use crate::runtime::TaskKey;

/// A task the scheduler wants on this node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Assignment {
    pub job: String,
    /// Global task index within the job (RANK for a gang).
    pub task_index: u32,
    /// Starts at 1; a retried job gets a new attempt.
    pub attempt: u32,
    /// `Bound`: start it; `Running`: it was started here, keep it. Any other
    /// phase is the scheduler's business, not a process.
    pub phase: TaskPhase,
    pub command: Vec<String>,
    /// The user's env from the spec (the daemon adds its own variables).
    pub env: BTreeMap<String, String>,
    pub working_dir: String,
    /// CUDA indices of the GPUs bound to the task.
    pub gpu_indices: Vec<u32>,
    /// Thousandths of each of `gpu_indices`, as sent: empty from older
    /// schedulers, meaning whole GPUs (see [`Assignment::gpu_shares`]).
    pub gpu_milli: Vec<u32>,
    /// Number of tasks in the job (1 for a single task job).
    pub job_tasks: u32,
    pub world_size: u32,
    pub rank: u32,
    pub local_rank: u32,
    pub master_addr: String,
    pub master_port: u32,
    /// Set when the task is a workflow step: its files in and out.
    pub step: Option<StepIo>,
    /// A serving task: it gets a free port as `$PORT`.
    pub wants_port: bool,
    /// Who the task runs as; `None`: the daemon's own user.
    pub owner: Option<Owner>,
    /// Variables from the task's `envFrom` secrets (`env` wins on a clash).
    pub secret_env: BTreeMap<String, String>,
    /// The task's secret files: `dir/key` → content.
    pub secret_files: BTreeMap<String, Vec<u8>>,
    /// Why the task cannot have its secrets; it fails with this.
    pub secret_error: String,
    /// `resources.cpu` in thousandths of a CPU: the task's CPU quota (0: none).
    pub cpu_milli: u64,
    /// `resources.memory` in bytes: the task's memory limit (0: none).
    pub memory_bytes: u64,
    /// UUIDs of the GPUs in `gpu_indices`, in order (CDI names them so).
    pub gpu_uuids: Vec<String>,
    /// The container image the task runs in; empty: none.
    pub image: String,
}

impl Assignment {
    pub fn key(&self) -> TaskKey {
        TaskKey {
            job: self.job.clone(),
            task_index: self.task_index,
            attempt: self.attempt,
        }
    }

    /// Thousandths of each assigned GPU (whole GPUs when the scheduler sent none).
    pub fn gpu_shares(&self) -> Vec<u32> {
        (0..self.gpu_indices.len())
            .map(|i| self.gpu_milli.get(i).copied().unwrap_or(1000))
            .collect()
    }
}

impl From<TaskAssignment> for Assignment {
    fn from(a: TaskAssignment) -> Self {
        Assignment {
            phase: phase_from_pb(a.phase),
            job: a.job,
            task_index: a.task_index,
            attempt: a.attempt,
            command: a.command,
            env: a.env.into_iter().collect(),
            working_dir: a.working_dir,
            gpu_indices: a.gpu_indices,
            gpu_milli: a.gpu_milli,
            job_tasks: a.job_tasks,
            world_size: a.world_size,
            rank: a.rank,
            local_rank: a.local_rank,
            master_addr: a.master_addr,
            master_port: a.master_port,
            step: a.step,
            wants_port: a.wants_port,
            owner: a.owner.map(|o| Owner {
                user: o.user,
                uid: o.uid,
                allow_root: o.allow_root,
            }),
            secret_env: a.secret_env.into_iter().collect(),
            secret_files: a.secret_files.into_iter().collect(),
            secret_error: a.secret_error,
            cpu_milli: a.cpu_milli,
            memory_bytes: a.memory_bytes,
            gpu_uuids: a.gpu_uuids,
            image: a.image,
        }
    }
}

/// The phase of an assignment. One this daemon does not know (unspecified,
/// or from a newer scheduler) reads as `Pending`: the task stays in the
/// desired set, so a process of it here is kept, but there is nothing to
/// start.
fn phase_from_pb(raw: i32) -> TaskPhase {
    match pb::TaskPhase::try_from(raw) {
        Ok(pb::TaskPhase::Bound) => TaskPhase::Bound,
        Ok(pb::TaskPhase::Running) => TaskPhase::Running,
        Ok(pb::TaskPhase::Succeeded) => TaskPhase::Succeeded,
        Ok(pb::TaskPhase::Failed) => TaskPhase::Failed,
        Ok(pb::TaskPhase::Cancelled) => TaskPhase::Cancelled,
        Ok(pb::TaskPhase::Pending | pb::TaskPhase::Unspecified) | Err(_) => TaskPhase::Pending,
    }
}

/// A phase as the scheduler reads it in a report.
fn phase_to_pb(p: TaskPhase) -> pb::TaskPhase {
    match p {
        TaskPhase::Pending => pb::TaskPhase::Pending,
        TaskPhase::Bound => pb::TaskPhase::Bound,
        TaskPhase::Running => pb::TaskPhase::Running,
        TaskPhase::Succeeded => pb::TaskPhase::Succeeded,
        TaskPhase::Failed => pb::TaskPhase::Failed,
        TaskPhase::Cancelled => pb::TaskPhase::Cancelled,
    }
}

/// What the daemon tells the scheduler about one of its tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskReport {
    pub node: String,
    pub key: TaskKey,
    /// `Running`, `Succeeded` or `Failed`.
    pub phase: TaskPhase,
    pub exit_code: i32,
    pub message: String,
    /// Process group of a task that started (0: none).
    pub pid: u32,
    /// `$PORT` of a serving task that started (0: none).
    pub port: u16,
    /// A workflow step's outputs, sent with its final phase.
    pub outputs: Option<StepOutputs>,
    /// What a task that ended used (tasks with a cgroup).
    pub usage: Option<crate::isolation::Usage>,
    /// Failed because one of its GPUs reported a fatal XID.
    pub gpu_fault: Option<pb::GpuFault>,
}

impl TaskReport {
    /// The task's last report: it ended, nothing follows.
    pub fn is_final(&self) -> bool {
        self.phase != TaskPhase::Running
    }

    pub fn to_proto(&self) -> ReportTaskRequest {
        ReportTaskRequest {
            outputs: self.outputs.clone(),
            node: self.node.clone(),
            job: self.key.job.clone(),
            task_index: self.key.task_index,
            attempt: self.key.attempt,
            phase: phase_to_pb(self.phase).into(),
            exit_code: self.exit_code,
            message: self.message.clone(),
            pid: self.pid,
            port: u32::from(self.port),
            usage: self.usage.map(|u| pb::TaskUsage {
                cpu_ms: u.cpu_ms,
                memory_peak_bytes: u.memory_peak_bytes,
            }),
            gpu_fault: self.gpu_fault.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_read_once_at_the_edge() {
        // By name, as the scheduler's users know them: a name without a
        // variant here stands for a number this daemon has no variant for,
        // and "" for a message without the field.
        let sent = |phase: &str| TaskAssignment {
            phase: match phase {
                "" => 0,
                name => pb::TaskPhase::from_str_name(&format!(
                    "TASK_PHASE_{}",
                    name.to_ascii_uppercase()
                ))
                .map_or(99, i32::from),
            },
            ..Default::default()
        };
        let read = |phase| Assignment::from(sent(phase)).phase;
        assert_eq!(read("Bound"), TaskPhase::Bound);
        assert_eq!(read("Running"), TaskPhase::Running);
        assert_eq!(read("Evicted"), TaskPhase::Pending);
        assert_eq!(read(""), TaskPhase::Pending);
    }

    #[test]
    fn an_assignment_keeps_what_the_scheduler_sent() {
        let a = Assignment::from(TaskAssignment {
            job: "train".into(),
            task_index: 1,
            attempt: 2,
            phase: pb::TaskPhase::Bound.into(),
            command: vec!["python".into()],
            env: [("EPOCHS".to_string(), "3".to_string())].into(),
            gpu_indices: vec![0, 3],
            job_tasks: 2,
            world_size: 2,
            rank: 1,
            master_addr: "10.0.0.5".into(),
            master_port: 29500,
            wants_port: true,
            ..Default::default()
        });
        assert_eq!(a.key().to_string(), "train/task-1/attempt-2");
        assert_eq!(a.env["EPOCHS"], "3");
        assert_eq!(a.gpu_shares(), vec![1000, 1000]);
        assert_eq!((a.world_size, a.rank, a.master_port), (2, 1, 29500));
        assert!(a.wants_port);
        assert_eq!(a.owner, None, "no owner: the daemon's own user");
        let owned = Assignment::from(TaskAssignment {
            owner: Some(pb::TaskOwner {
                user: "alice".into(),
                uid: Some(1001),
                allow_root: false,
            }),
            ..Default::default()
        });
        assert_eq!(
            owned.owner,
            Some(Owner {
                user: "alice".into(),
                uid: Some(1001),
                allow_root: false
            })
        );
    }

    #[test]
    fn a_report_names_its_phase_as_the_scheduler_reads_it() {
        let r = TaskReport {
            node: "n1".into(),
            key: TaskKey {
                job: "a".into(),
                task_index: 0,
                attempt: 1,
            },
            phase: TaskPhase::Succeeded,
            exit_code: 0,
            message: String::new(),
            pid: 0,
            port: 8080,
            outputs: None,
            usage: Some(crate::isolation::Usage {
                cpu_ms: 1500,
                memory_bytes: 0,
                memory_peak_bytes: 64 << 20,
            }),
            gpu_fault: None,
        };
        assert!(r.is_final());
        let u = r.to_proto().usage.expect("usage sent");
        assert_eq!((u.cpu_ms, u.memory_peak_bytes), (1500, 64 << 20));
        let p = r.to_proto();
        assert_eq!(
            (p.phase(), p.job.as_str(), p.port),
            (pb::TaskPhase::Succeeded, "a", 8080)
        );
        let running = TaskReport {
            phase: TaskPhase::Running,
            ..r
        };
        assert!(!running.is_final());
    }
}
