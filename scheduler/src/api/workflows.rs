//! The API's workflow parts: `Apply` of a parsed `kind: Workflow`, reads,
//! `Wait`, and the step files a node daemon needs (in each
//! `TaskAssignment`) and reports back (in `ReportTask`).

use std::collections::BTreeMap;

use gpuctl_common::api::{self, Job};
use gpuctl_pipelines::{Workflow, WorkflowPhase};
use gpuctl_proto::v1 as pb;
use rand::Rng;
use tonic::Status;

use super::convert::json;
use super::Api;
use crate::state::{Command, StepOutputs, WorkflowObject};

/// Length of the random suffix appended to `metadata.generateName`.
const SUFFIX_LEN: usize = 5;

/// A `generateName` suffix: lowercase letters and digits, as Kubernetes.
fn random_suffix() -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..SUFFIX_LEN)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

impl Api {
    /// Pick a parsed workflow's name, check it against the cluster, and
    /// store it.
    pub(super) async fn apply_workflow(
        &self,
        source: &str,
        wf: Workflow,
        parameters: BTreeMap<String, String>,
        request_id: Option<String>,
        owner: Option<String>,
    ) -> Result<String, Status> {
        let generated = wf.metadata.name.as_deref().is_none_or(str::is_empty);
        let name = wf.run_name(&random_suffix());
        api::validate_name("metadata.name", &name)
            .map_err(|e| Status::invalid_argument(e.in_source(source, 0).to_string()))?;
        self.proposer().read_barrier().await?;
        // A retry of an applied request gets its first answer (and does not
        // start a second run under another generated name).
        let repeated = self.already_applied(request_id.as_deref());
        // Templates by reference are copied in now: the run keeps what the
        // templates were at submit, whatever happens to them later.
        let wf = if gpuctl_pipelines::resolve::has_references(&wf) {
            let r = gpuctl_pipelines::resolve::resolve(&wf, &*self.state())
                .map_err(|e| Status::invalid_argument(e.in_source(source, 0).to_string()))?;
            if let Some(e) = gpuctl_pipelines::validate_all(&r).into_iter().next() {
                return Err(Status::invalid_argument(format!(
                    "{source}: with its templates resolved: {}: {}",
                    e.path, e.reason
                )));
            }
            r
        } else {
            wf
        };
        if !repeated {
            let st = self.state();
            if !generated && st.workflows.contains_key(&name) {
                return Err(Status::already_exists(format!(
                    "{source}: workflow {name:?} already exists; pick another metadata.name or use metadata.generateName"
                )));
            }
            let nodes: Vec<&api::Node> = st.nodes.values().collect();
            if let Some(why) = infeasible_step(&wf, &nodes) {
                return Err(Status::invalid_argument(format!(
                    "{source}: workflow {name:?}: {why}"
                )));
            }
        }
        self.proposer()
            .propose_request(
                Command::SubmitWorkflow {
                    name,
                    workflow: Box::new(wf),
                    arguments: parameters,
                    owner,
                },
                request_id,
            )
            .await
    }

    pub(super) fn get_workflows(&self, name: &str) -> Result<Vec<String>, Status> {
        let st = self.state();
        if name.is_empty() {
            let mut all: Vec<&WorkflowObject> = st.workflows.values().collect();
            all.sort_by_key(|w| w.metadata.uid);
            return all.into_iter().map(|w| json(&w.view())).collect();
        }
        let w = st
            .workflows
            .get(name)
            .ok_or_else(|| Status::not_found(format!("workflow {name:?} not found")))?;
        Ok(vec![json(&w.view())?])
    }

    /// A workflow's phase, for `Wait`, with the object once it is over
    /// (rendering a big run on every change would cost more than the run);
    /// `None` when there is no such workflow.
    pub(super) fn workflow_phase(&self, name: &str) -> Option<(WorkflowPhase, String)> {
        let st = self.state();
        let w = st.workflows.get(name)?;
        let phase = w.run.phase();
        let obj = if phase.is_terminal() {
            json(&w.view()).unwrap_or_default()
        } else {
            String::new()
        };
        Some((phase, obj))
    }
}

/// A leaf template whose resources no node could ever give (say 16 GPUs on
/// a cluster whose largest node has 8): `path: reason`. Requests written
/// with `{{...}}` are only known at run time and are not checked here.
fn infeasible_step(wf: &Workflow, nodes: &[&api::Node]) -> Option<String> {
    for (i, t) in wf.spec.templates.iter().enumerate() {
        let (field, res) = match (&t.container, &t.script) {
            (Some(c), _) => ("container", c.resources.as_ref()),
            (_, Some(s)) => ("script", s.resources.as_ref()),
            _ => continue,
        };
        let Some(r) = res else {
            continue;
        };
        let pick = |f: &dyn Fn(&gpuctl_pipelines::spec::ResourceList) -> bool| {
            r.requests
                .as_ref()
                .filter(|l| f(l))
                .or(r.limits.as_ref().filter(|l| f(l)))
        };
        let gpus = r
            .limits
            .as_ref()
            .and_then(|l| l.gpu.as_ref())
            .or(r.requests.as_ref().and_then(|l| l.gpu.as_ref()))
            .and_then(|g| gpuctl_pipelines::validate::parse_gpus(g.as_str()).ok())
            .unwrap_or(0.0);
        let resources = api::Resources {
            gpus,
            cpu: pick(&|l| l.cpu.is_some()).and_then(|l| l.cpu),
            memory: pick(&|l| l.memory.is_some()).and_then(|l| l.memory),
            ..Default::default()
        };
        let job = Job::new(
            "step",
            api::JobSpec {
                tasks: vec![api::TaskSpec {
                    name: "main".into(),
                    replicas: 1,
                    command: vec!["true".into()],
                    env: Default::default(),
                    env_from: Vec::new(),
                    secret_files: Vec::new(),
                    working_dir: None,
                    resources,
                    image: None,
                }],
                min_available: None,
                priority: 0,
                topology: Default::default(),
                max_retries: 0,
                timeout_seconds: None,
                ttl_seconds_after_finished: None,
            },
        );
        if let Some(why) = crate::placement::infeasible(nodes.iter().copied(), &job) {
            return Some(format!("spec.templates[{i}].{field}.resources: {why}"));
        }
    }
    None
}

/// A node daemon's report of a step's outputs.
pub(super) fn outputs_from_pb(o: pb::StepOutputs) -> StepOutputs {
    StepOutputs {
        parameters: o.parameters.into_iter().collect(),
        result: o.has_result.then_some(o.result),
        artifacts: o.artifacts.into_iter().collect(),
        error: Some(o.error).filter(|e| !e.is_empty()),
    }
}
