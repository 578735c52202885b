//! Conversions at the gRPC edge: refusals to statuses (with the file an
//! object came from), objects to JSON, the kind names users type, and
//! phases to and from the proto enums (the one place the scheduler's side
//! of the node and `Wait` messages names a phase).

use gpuctl_common::api::{JobPhase, TaskPhase};
use gpuctl_pipelines::WorkflowPhase;
use gpuctl_proto::v1 as pb;
use tonic::Status;

use crate::raft::ProposeError;
use crate::state::{ApplyError, ErrorCode};

pub(super) fn to_status(e: ProposeError) -> Status {
    match e {
        ProposeError::NotLeader { .. } | ProposeError::Shutdown => {
            Status::unavailable(e.to_string())
        }
        ProposeError::Timeout(_) => Status::deadline_exceeded(e.to_string()),
        ProposeError::ChangeInProgress => Status::failed_precondition(e.to_string()),
        ProposeError::Storage(_) => Status::internal(e.to_string()),
        ProposeError::Rejected(a) => match a {
            ApplyError::AlreadyExists { .. } => Status::already_exists(a.to_string()),
            ApplyError::NotFound { .. } => Status::not_found(a.to_string()),
            ApplyError::Invalid(_) => Status::invalid_argument(a.to_string()),
            ApplyError::FailedPrecondition(_) | ApplyError::StaleBinding { .. } => {
                Status::failed_precondition(a.to_string())
            }
            ApplyError::Conflict(_) => Status::aborted(a.to_string()),
            ApplyError::Repeated { code, message } => match code {
                ErrorCode::AlreadyExists => Status::already_exists(message),
                ErrorCode::NotFound => Status::not_found(message),
                ErrorCode::Invalid => Status::invalid_argument(message),
                ErrorCode::FailedPrecondition => Status::failed_precondition(message),
                ErrorCode::Conflict => Status::aborted(message),
            },
        },
    }
}

/// A request's id, when the client sent one.
pub(super) fn request_id_of(raw: &str) -> Option<String> {
    Some(raw.to_string()).filter(|r| !r.is_empty())
}

/// Prefix a refusal of the state machine with where the object came from.
pub(super) fn in_source(source: &str, s: Status) -> Status {
    match s.code() {
        tonic::Code::InvalidArgument
        | tonic::Code::AlreadyExists
        | tonic::Code::NotFound
        | tonic::Code::Aborted
        | tonic::Code::FailedPrecondition
            if !s.message().starts_with(source) =>
        {
            Status::new(s.code(), format!("{source}: {}", s.message()))
        }
        _ => s,
    }
}

pub(super) fn json<T: serde::Serialize>(v: &T) -> Result<String, Status> {
    serde_json::to_string(v).map_err(|e| Status::internal(format!("encoding object: {e}")))
}

/// Normalise `jobs`, `job`, `node`, `no`, `queues` … to `job` / `node` / `queue`.
pub(super) fn kind_of(kind: &str) -> Result<&'static str, Status> {
    match kind.to_ascii_lowercase().as_str() {
        "job" | "jobs" => Ok("job"),
        "node" | "nodes" | "no" => Ok("node"),
        "queue" | "queues" | "q" => Ok("queue"),
        "workflow" | "workflows" | "wf" => Ok("workflow"),
        "endpoint" | "endpoints" | "ep" => Ok("endpoint"),
        "secret" | "secrets" => Ok("secret"),
        "user" | "users" => Ok("user"),
        "token" | "tokens" => Ok("token"),
        // Argo's kind names and its CLI's short names.
        "workflowtemplate" | "workflowtemplates" | "wftmpl" => Ok("workflowtemplate"),
        "clusterworkflowtemplate" | "clusterworkflowtemplates" | "cwftmpl" | "cwft" => {
            Ok("clusterworkflowtemplate")
        }
        "cronworkflow" | "cronworkflows" | "cwf" | "cronwf" => Ok("cronworkflow"),
        other => Err(Status::invalid_argument(format!(
            "unknown kind {other:?}: this server knows jobs, nodes, queues, workflows, endpoints, secrets, users, tokens, workflowtemplates, clusterworkflowtemplates and cronworkflows"
        ))),
    }
}

/// A task's phase as the node messages carry it.
pub(super) fn phase_to_pb(p: TaskPhase) -> pb::TaskPhase {
    match p {
        TaskPhase::Pending => pb::TaskPhase::Pending,
        TaskPhase::Bound => pb::TaskPhase::Bound,
        TaskPhase::Running => pb::TaskPhase::Running,
        TaskPhase::Succeeded => pb::TaskPhase::Succeeded,
        TaskPhase::Failed => pb::TaskPhase::Failed,
        TaskPhase::Cancelled => pb::TaskPhase::Cancelled,
    }
}

/// A job's phase as `Wait` reports it.
pub(super) fn job_phase_to_pb(p: JobPhase) -> pb::RunPhase {
    match p {
        JobPhase::Pending => pb::RunPhase::Pending,
        JobPhase::Running => pb::RunPhase::Running,
        JobPhase::Succeeded => pb::RunPhase::Succeeded,
        JobPhase::Failed => pb::RunPhase::Failed,
        JobPhase::Cancelled => pb::RunPhase::Cancelled,
    }
}

/// A workflow's phase as `Wait` reports it.
pub(super) fn workflow_phase_to_pb(p: WorkflowPhase) -> pb::RunPhase {
    match p {
        WorkflowPhase::Running => pb::RunPhase::Running,
        WorkflowPhase::Succeeded => pb::RunPhase::Succeeded,
        WorkflowPhase::Failed => pb::RunPhase::Failed,
        WorkflowPhase::Error => pb::RunPhase::Error,
    }
}

/// A phase from a node message; `None` for one this scheduler does not know
/// (unspecified, or from a newer sender).
fn phase_from_pb(raw: i32) -> Option<TaskPhase> {
    match pb::TaskPhase::try_from(raw).ok()? {
        pb::TaskPhase::Unspecified => None,
        pb::TaskPhase::Pending => Some(TaskPhase::Pending),
        pb::TaskPhase::Bound => Some(TaskPhase::Bound),
        pb::TaskPhase::Running => Some(TaskPhase::Running),
        pb::TaskPhase::Succeeded => Some(TaskPhase::Succeeded),
        pb::TaskPhase::Failed => Some(TaskPhase::Failed),
        pb::TaskPhase::Cancelled => Some(TaskPhase::Cancelled),
    }
}

/// The phase a node reports for one of its tasks: only what a node can
/// know (it started, it ended well, it ended badly); the rest is the
/// scheduler's to decide.
pub(super) fn reported_phase(raw: i32) -> Result<TaskPhase, Status> {
    match phase_from_pb(raw) {
        Some(p @ (TaskPhase::Running | TaskPhase::Succeeded | TaskPhase::Failed)) => Ok(p),
        Some(p) => Err(Status::invalid_argument(format!(
            "phase {p}: a node reports Running, Succeeded or Failed"
        ))),
        None => Err(Status::invalid_argument(format!(
            "phase {raw} (unspecified or unknown): a node reports Running, Succeeded or Failed"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_crosses_the_edge_and_a_node_reports_only_its_own() {
        let all = [
            TaskPhase::Pending,
            TaskPhase::Bound,
            TaskPhase::Running,
            TaskPhase::Succeeded,
            TaskPhase::Failed,
            TaskPhase::Cancelled,
        ];
        for p in all {
            let sent = phase_to_pb(p) as i32;
            let reportable = matches!(
                p,
                TaskPhase::Running | TaskPhase::Succeeded | TaskPhase::Failed
            );
            assert_eq!(reported_phase(sent).ok(), reportable.then_some(p), "{p}");
        }
        for raw in [pb::TaskPhase::Unspecified as i32, 99] {
            let e = reported_phase(raw).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
        }
    }
}
