//! The state's stored form: every object as (storage key, JSON), written
//! by the Raft driver after each apply and read back on restart or from a
//! snapshot. Unknown keys are skipped, so a newer version's objects do not
//! stop an older replica.

use super::objects::{ObjKey, RequestRecord};
use super::workflow_object::{MemoRecord, WorkflowRecords};
use super::State;

impl State {
    /// Build the state from the state column family's objects (storage
    /// key, JSON), as stored by [`State::object_json`]. Unknown keys are
    /// skipped (they belong to a newer version); an undecodable object is an
    /// error naming its key.
    pub fn from_stored(objects: &[(String, Vec<u8>)]) -> Result<State, String> {
        fn decode<T: serde::de::DeserializeOwned>(k: &str, v: &[u8]) -> Result<T, String> {
            serde_json::from_slice(v).map_err(|e| format!("stored object {k}: {e}"))
        }
        let mut s = State::default();
        let mut workflows = WorkflowRecords::default();
        let mut memo = Vec::new();
        for (k, v) in objects {
            let Some(key) = ObjKey::parse(k) else {
                continue;
            };
            match key {
                ObjKey::Workflow(_) | ObjKey::WorkflowSpec(_) | ObjKey::WorkflowNode(..) => {
                    workflows
                        .add(k.as_bytes(), v)
                        .map_err(|e| format!("stored object {k}: {e}"))?;
                }
                ObjKey::Memo(_) => memo.push(decode::<MemoRecord>(k, v)?),
                ObjKey::Job(n) => {
                    s.jobs.insert(n, decode(k, v)?);
                }
                ObjKey::Node(n) => {
                    s.nodes.insert(n, decode(k, v)?);
                }
                ObjKey::Endpoint(n) => {
                    s.endpoints.insert(n, decode(k, v)?);
                }
                ObjKey::Queue(n) => {
                    s.queues.insert(n, decode(k, v)?);
                }
                ObjKey::Secret(n) => {
                    s.secrets.insert(n, decode(k, v)?);
                }
                ObjKey::User(n) => {
                    s.users.insert(n, decode(k, v)?);
                }
                ObjKey::Token(n) => {
                    s.tokens.insert(n, decode(k, v)?);
                }
                ObjKey::WorkflowTemplate(n) => {
                    s.workflow_templates.insert(n, decode(k, v)?);
                }
                ObjKey::ClusterWorkflowTemplate(n) => {
                    s.cluster_workflow_templates.insert(n, decode(k, v)?);
                }
                ObjKey::CronWorkflow(n) => {
                    s.cron_workflows.insert(n, decode(k, v)?);
                }
                ObjKey::Request(_) => {
                    let r: RequestRecord = decode(k, v)?;
                    s.requests_by_age.insert((r.at_ms, r.id.clone()));
                    s.requests.insert(r.id.clone(), r);
                }
            }
        }
        s.rebuild_usage();
        Ok(s.with_workflows(workflows.finish(), memo))
    }

    /// Every stored object as (storage key, JSON): what [`State::from_stored`]
    /// reads back.
    pub fn stored_objects(&self) -> Vec<(String, Vec<u8>)> {
        let keys = self
            .jobs
            .keys()
            .map(|n| ObjKey::Job(n.clone()))
            .chain(self.nodes.keys().map(|n| ObjKey::Node(n.clone())))
            .chain(self.queues.keys().map(|n| ObjKey::Queue(n.clone())))
            .chain(self.requests.keys().map(|n| ObjKey::Request(n.clone())))
            .chain(self.memo.keys().map(|k| ObjKey::Memo(k.clone())))
            .chain(self.endpoints.keys().map(|n| ObjKey::Endpoint(n.clone())))
            .chain(self.secrets.keys().map(|n| ObjKey::Secret(n.clone())))
            .chain(self.users.keys().map(|n| ObjKey::User(n.clone())))
            .chain(self.tokens.keys().map(|n| ObjKey::Token(n.clone())))
            .chain(
                self.workflow_templates
                    .keys()
                    .map(|n| ObjKey::WorkflowTemplate(n.clone())),
            )
            .chain(
                self.cluster_workflow_templates
                    .keys()
                    .map(|n| ObjKey::ClusterWorkflowTemplate(n.clone())),
            )
            .chain(
                self.cron_workflows
                    .keys()
                    .map(|n| ObjKey::CronWorkflow(n.clone())),
            );
        let mut out: Vec<(String, Vec<u8>)> = keys
            .filter_map(|k| self.object_json(&k).map(|v| (k.storage_key(), v)))
            .collect();
        for w in self.workflows.values() {
            out.extend(w.records().into_iter().map(|(k, v)| (k.storage_key(), v)));
        }
        out
    }

    /// The stored form of an object, or `None` when it was deleted.
    pub fn object_json(&self, key: &ObjKey) -> Option<Vec<u8>> {
        match key {
            ObjKey::Job(n) => self.jobs.get(n).and_then(|j| serde_json::to_vec(j).ok()),
            ObjKey::Node(n) => self.nodes.get(n).and_then(|n| serde_json::to_vec(n).ok()),
            ObjKey::Queue(n) => self.queues.get(n).and_then(|q| serde_json::to_vec(q).ok()),
            ObjKey::Request(n) => self
                .requests
                .get(n)
                .and_then(|r| serde_json::to_vec(r).ok()),
            ObjKey::Workflow(n) => self.workflows.get(n).and_then(|w| w.header_json()),
            ObjKey::WorkflowSpec(n) => self.workflows.get(n).and_then(|w| w.spec_json()),
            ObjKey::WorkflowNode(w, id) => self.workflows.get(w).and_then(|w| w.node_json(id)),
            ObjKey::Memo(k) => self.memo.get(k).and_then(|e| {
                serde_json::to_vec(&MemoRecord {
                    key: k.clone(),
                    entry: e.clone(),
                })
                .ok()
            }),
            ObjKey::Endpoint(n) => self
                .endpoints
                .get(n)
                .and_then(|e| serde_json::to_vec(e).ok()),
            ObjKey::Secret(n) => self.secrets.get(n).and_then(|s| serde_json::to_vec(s).ok()),
            ObjKey::User(n) => self.users.get(n).and_then(|u| serde_json::to_vec(u).ok()),
            ObjKey::Token(n) => self.tokens.get(n).and_then(|t| serde_json::to_vec(t).ok()),
            ObjKey::WorkflowTemplate(n) => self
                .workflow_templates
                .get(n)
                .and_then(|t| serde_json::to_vec(t).ok()),
            ObjKey::ClusterWorkflowTemplate(n) => self
                .cluster_workflow_templates
                .get(n)
                .and_then(|t| serde_json::to_vec(t).ok()),
            ObjKey::CronWorkflow(n) => self
                .cron_workflows
                .get(n)
                .and_then(|c| serde_json::to_vec(c).ok()),
        }
    }
}
