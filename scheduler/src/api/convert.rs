//! Conversions at the gRPC edge: refusals to statuses (with the file an
//! object came from), objects to JSON, and the kind names users type.

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
        other => Err(Status::invalid_argument(format!(
            "unknown kind {other:?}: this server knows jobs, nodes, queues, workflows and endpoints"
        ))),
    }
}
