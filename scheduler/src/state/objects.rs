//! Names of the objects the state machine stores ([`ObjKey`]), with their
//! key form (`job/<name>`, `wfnode/<workflow>/<node>`, …: the one place that
//! spells it), and the record kept of each applied client request
//! ([`RequestRecord`]), so that a retried request is answered instead of
//! applied twice. Request records name the object they changed by its key,
//! and the Raft storage uses the same keys in its state column family.

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
    /// A workflow's header record (its run without nodes and without the
    /// workflow document).
    Workflow(String),
    /// A workflow's document as submitted, written once.
    WorkflowSpec(String),
    /// One node of a workflow's run: (workflow, node id).
    WorkflowNode(String, String),
    /// A memoization cache entry, by key.
    Memo(String),
    Endpoint(String),
    Secret(String),
    /// A user, by name.
    User(String),
    /// A token record, by token id.
    Token(String),
    WorkflowTemplate(String),
    ClusterWorkflowTemplate(String),
    CronWorkflow(String),
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
            ObjKey::WorkflowSpec(n) => format!("wfspec/{n}"),
            ObjKey::WorkflowNode(w, id) => format!("wfnode/{w}/{id}"),
            ObjKey::Memo(k) => format!("memo/{k}"),
            ObjKey::Endpoint(n) => format!("endpoint/{n}"),
            ObjKey::Secret(n) => format!("secret/{n}"),
            ObjKey::User(n) => format!("user/{n}"),
            ObjKey::Token(n) => format!("token/{n}"),
            ObjKey::WorkflowTemplate(n) => format!("wftmpl/{n}"),
            ObjKey::ClusterWorkflowTemplate(n) => format!("cwftmpl/{n}"),
            ObjKey::CronWorkflow(n) => format!("cronwf/{n}"),
        }
    }

    /// The object a storage key names (the inverse of
    /// [`ObjKey::storage_key`]); `None` for a kind this version does not
    /// know.
    pub fn parse(key: &str) -> Option<ObjKey> {
        let (kind, rest) = key.split_once('/')?;
        let name = rest.to_string();
        Some(match kind {
            "job" => ObjKey::Job(name),
            "node" => ObjKey::Node(name),
            "queue" => ObjKey::Queue(name),
            "req" => ObjKey::Request(name),
            "workflow" => ObjKey::Workflow(name),
            "wfspec" => ObjKey::WorkflowSpec(name),
            "wfnode" => {
                let (w, id) = rest.split_once('/').unwrap_or((rest, ""));
                ObjKey::WorkflowNode(w.to_string(), id.to_string())
            }
            "memo" => ObjKey::Memo(name),
            "endpoint" => ObjKey::Endpoint(name),
            "secret" => ObjKey::Secret(name),
            "user" => ObjKey::User(name),
            "token" => ObjKey::Token(name),
            "wftmpl" => ObjKey::WorkflowTemplate(name),
            "cwftmpl" => ObjKey::ClusterWorkflowTemplate(name),
            "cronwf" => ObjKey::CronWorkflow(name),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_to_the_object_they_name() {
        let keys = [
            ObjKey::Job("train".into()),
            ObjKey::Node("gpu-1".into()),
            ObjKey::Queue("research".into()),
            ObjKey::Request("r-1".into()),
            ObjKey::Workflow("wf".into()),
            ObjKey::WorkflowSpec("wf".into()),
            ObjKey::WorkflowNode("wf".into(), "wf.a(0:x)".into()),
            ObjKey::Memo("gen-1".into()),
            ObjKey::Endpoint("lin".into()),
            ObjKey::Secret("hf".into()),
            ObjKey::User("alice".into()),
            ObjKey::Token("0123456789ab".into()),
            ObjKey::WorkflowTemplate("t".into()),
            ObjKey::ClusterWorkflowTemplate("t".into()),
            ObjKey::CronWorkflow("nightly".into()),
        ];
        for k in keys {
            assert_eq!(ObjKey::parse(&k.storage_key()), Some(k));
        }
        assert_eq!(ObjKey::parse("future/thing"), None);
        assert_eq!(ObjKey::parse("applied"), None);
    }
}
