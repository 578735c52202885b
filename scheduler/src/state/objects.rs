//! Names of the objects the state machine stores ([`ObjKey`]) and the
//! record kept of each applied client request ([`RequestRecord`]), so that a
//! retried request is answered instead of applied twice.

use serde::{Deserialize, Serialize};

use super::command::ErrorCode;

/// How an applied request ended, kept for [`REQUEST_TTL_MS`] so that a
/// client's retry of it gets the same answer instead of a second apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: String,
    /// The proposer's clock when it was applied.
    pub at_ms: u64,
    /// The Raft index it was applied at.
    pub index: u64,
    /// The object it changed (its storage key), when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<(ErrorCode, String)>,
}

/// How long a request is remembered: longer than any client keeps retrying.
pub const REQUEST_TTL_MS: u64 = 10 * 60 * 1000;
/// Most requests remembered at once; the oldest are forgotten first.
pub const MAX_REQUEST_RECORDS: usize = 100_000;
/// Longest accepted request id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Identifies a stored object (the key in the state column family).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjKey {
    Job(String),
    Node(String),
    Queue(String),
    /// A [`RequestRecord`], by request id.
    Request(String),
    /// A workflow's header record (its run without nodes).
    Workflow(String),
    /// One node of a workflow's run: (workflow, node id).
    WorkflowNode(String, String),
    /// A memoization cache entry, by key.
    Memo(String),
    Endpoint(String),
}

impl ObjKey {
    /// The storage key, e.g. `job/train`.
    pub fn storage_key(&self) -> String {
        match self {
            ObjKey::Job(n) => format!("job/{n}"),
            ObjKey::Node(n) => format!("node/{n}"),
            ObjKey::Queue(n) => format!("queue/{n}"),
            ObjKey::Request(n) => format!("req/{n}"),
            ObjKey::Workflow(n) => format!("workflow/{n}"),
            ObjKey::WorkflowNode(w, id) => format!("wfnode/{w}/{id}"),
            ObjKey::Memo(k) => format!("memo/{k}"),
            ObjKey::Endpoint(n) => format!("endpoint/{n}"),
        }
    }
}
