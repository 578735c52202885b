//! A workflow as the state stores it: [`WorkflowObject`] (the run of the
//! `pipelines` crate, the step jobs it launched) and its stored form, a
//! header record plus one record per node, so an apply rewrites only the
//! nodes it changed. The labels that tie step jobs to their workflow.

use std::collections::BTreeMap;

use gpuctl_common::api::ObjectMeta;
use gpuctl_pipelines::{MemoEntry, Node, Run, RunHeader, RunWithoutNodes, StepToLaunch, Workflow};
use serde::{Deserialize, Serialize};

use super::objects::ObjKey;

/// Label naming the workflow that owns a step job.
pub const LABEL_WORKFLOW: &str = "gpuctl.io/workflow";
/// Label naming the step (the Argo node id) a job runs.
pub const LABEL_STEP: &str = "gpuctl.io/step";
/// `apiVersion` of workflows as the API serves them.
pub const WORKFLOW_API_VERSION: &str = "argoproj.io/v1alpha1";

/// A stored workflow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowObject {
    pub metadata: ObjectMeta,
    pub run: Run,
    /// When the leader should propose a `WorkflowTick` (retry backoff or a
    /// deadline); `None`: nothing is timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at_ms: Option<u64>,
    /// Step id → the job that runs it, for every step launched.
    #[serde(default)]
    pub jobs: BTreeMap<String, String>,
    /// Launch specs of the steps whose jobs have not ended, by job name:
    /// the node daemon needs their files (script, artifacts, outputs).
    #[serde(default)]
    pub running: BTreeMap<String, StepToLaunch>,
}

impl WorkflowObject {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// Steps that finished successfully (run or memoized) and all steps so
    /// far, for `gpuctl get workflows` (`3/5`).
    pub fn progress(&self) -> (usize, usize) {
        use gpuctl_pipelines::{NodePhase, NodeType};
        let pods = self
            .run
            .nodes()
            .values()
            .filter(|n| n.node_type == NodeType::Pod);
        let (mut done, mut all) = (0, 0);
        for n in pods {
            all += 1;
            if n.phase == NodePhase::Succeeded {
                done += 1;
            }
        }
        (done, all)
    }

    /// The object as the API serves it: Argo's shape (`spec` as submitted,
    /// `status` with the node tree) plus `status.jobs` and `status.progress`.
    pub fn view(&self) -> serde_json::Value {
        let (done, all) = self.progress();
        let mut status = serde_json::to_value(self.run.status()).unwrap_or_default();
        if let Some(m) = status.as_object_mut() {
            m.insert("progress".into(), format!("{done}/{all}").into());
            m.insert(
                "jobs".into(),
                serde_json::to_value(&self.jobs).unwrap_or_default(),
            );
        }
        serde_json::json!({
            "apiVersion": WORKFLOW_API_VERSION,
            "kind": "Workflow",
            "metadata": self.metadata,
            "spec": self.run.workflow().spec,
            "status": status,
        })
    }
}

/// How a workflow is stored: a header record (`workflow/<name>`: the object
/// and its run without nodes or document), the document as submitted
/// (`wfspec/<name>`, written once; a header of an older version holds it
/// instead) and one record per node
/// (`wfnode/<name>/<node id>`: the node, its step's job, and the step's
/// launch spec while the job runs). An apply
/// rewrites only the nodes it changed, so a step of a 1,000-way fan-out
/// costs one small record, not the whole run.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StoredRef<'a> {
    metadata: &'a ObjectMeta,
    run: RunWithoutNodes<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wake_at_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    metadata: ObjectMeta,
    run: RunHeader,
    #[serde(default)]
    wake_at_ms: Option<u64>,
}

#[derive(Serialize)]
struct NodeRecordRef<'a> {
    node: &'a Node,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<&'a String>,
    /// The launch spec while the step's job runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    launch: Option<&'a StepToLaunch>,
}

#[derive(Deserialize)]
struct NodeRecord {
    node: Node,
    #[serde(default)]
    job: Option<String>,
    #[serde(default)]
    launch: Option<StepToLaunch>,
}

impl WorkflowObject {
    /// The header record (see [`StoredRef`]).
    pub fn header_json(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(&StoredRef {
            metadata: &self.metadata,
            run: self.run.without_nodes_or_workflow(),
            wake_at_ms: self.wake_at_ms,
        })
        .ok()
    }

    /// The workflow document's record, written once when the workflow is
    /// submitted (the header is rewritten on every step, and a fan-out's
    /// items are most of the document).
    pub fn spec_json(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(self.run.workflow()).ok()
    }

    /// The record of one node.
    pub fn node_json(&self, id: &str) -> Option<Vec<u8>> {
        let node = self.run.node(id)?;
        let job = self.jobs.get(id);
        serde_json::to_vec(&NodeRecordRef {
            node,
            job,
            launch: job.and_then(|j| self.running.get(j)),
        })
        .ok()
    }

    /// Every record of this workflow (to write a snapshot).
    pub fn records(&self) -> Vec<(ObjKey, Vec<u8>)> {
        let name = self.metadata.name.clone();
        let mut out = Vec::new();
        if let Some(h) = self.header_json() {
            out.push((ObjKey::Workflow(name.clone()), h));
        }
        if let Some(w) = self.spec_json() {
            out.push((ObjKey::WorkflowSpec(name.clone()), w));
        }
        for id in self.run.nodes().keys() {
            if let Some(n) = self.node_json(id) {
                out.push((ObjKey::WorkflowNode(name.clone(), id.clone()), n));
            }
        }
        out
    }
}

/// Collects workflow records from the state column family and puts the
/// workflows back together.
#[derive(Default)]
pub struct WorkflowRecords {
    headers: Vec<Stored>,
    specs: BTreeMap<String, Workflow>,
    nodes: BTreeMap<String, Vec<NodeRecord>>,
}

impl WorkflowRecords {
    /// Take a record if it is a workflow's: `Ok(true)`; `Ok(false)` if not.
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<bool, String> {
        match ObjKey::parse(&String::from_utf8_lossy(key)) {
            Some(ObjKey::Workflow(_)) => {
                let h: Stored = serde_json::from_slice(value).map_err(|e| e.to_string())?;
                self.headers.push(h);
                Ok(true)
            }
            Some(ObjKey::WorkflowSpec(wf)) => {
                let w: Workflow = serde_json::from_slice(value).map_err(|e| e.to_string())?;
                self.specs.insert(wf, w);
                Ok(true)
            }
            Some(ObjKey::WorkflowNode(wf, _)) => {
                let n: NodeRecord = serde_json::from_slice(value).map_err(|e| e.to_string())?;
                self.nodes.entry(wf).or_default().push(n);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The workflows (records of nodes without a header, and headers
    /// without their document, are dropped).
    pub fn finish(mut self) -> Vec<WorkflowObject> {
        self.headers
            .into_iter()
            .filter_map(|h| {
                let spec = self.specs.remove(&h.metadata.name);
                let records = self.nodes.remove(&h.metadata.name).unwrap_or_default();
                let mut jobs = BTreeMap::new();
                let mut running = BTreeMap::new();
                let mut nodes = Vec::with_capacity(records.len());
                for r in records {
                    if let Some(j) = r.job {
                        if let Some(l) = r.launch {
                            running.insert(j.clone(), l);
                        }
                        jobs.insert(r.node.id.clone(), j);
                    }
                    nodes.push(r.node);
                }
                let run = match spec {
                    Some(w) => h.run.into_run_with(w, nodes),
                    None => h.run.into_run(nodes)?,
                };
                Some(WorkflowObject {
                    metadata: h.metadata,
                    run,
                    wake_at_ms: h.wake_at_ms,
                    jobs,
                    running,
                })
            })
            .collect()
    }
}

/// One memoization entry as stored (`memo/<key>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoRecord {
    pub key: String,
    pub entry: MemoEntry,
}
