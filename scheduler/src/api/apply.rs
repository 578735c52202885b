//! `Control.Apply`: the object is read once, here, into the kind it names
//! (a [`Manifest`] of the object model, or a pipelines `Workflow`), checked
//! against the current state (name taken, could never run) and proposed as
//! its typed command. Nothing after this edge sees the request's JSON.

use gpuctl_common::api::{self, Manifest};
use gpuctl_common::endpoint::Endpoint;
use gpuctl_common::manifest::{document_kind, json_document, parse_manifest_document};
use gpuctl_pipelines::Workflow;
use gpuctl_proto::v1 as pb;
use tonic::Status;

use super::convert::{in_source, request_id_of};
use super::Api;
use crate::placement;
use crate::state::Command;

/// An object as `Apply` receives it, parsed once.
enum Object {
    Manifest(Box<Manifest>),
    Workflow(Box<Workflow>),
}

/// Read the payload once, look up its kind, and parse it as that kind.
fn parse_object(source: &str, object_json: &str) -> Result<Object, Status> {
    let doc =
        json_document(source, object_json).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let object = if document_kind(&doc) == Some("Workflow") {
        gpuctl_pipelines::parse_workflow_document(source, doc)
            .map(|wf| Object::Workflow(Box::new(wf)))
    } else {
        parse_manifest_document(source, doc).map(|m| Object::Manifest(Box::new(m)))
    };
    object.map_err(|e| Status::invalid_argument(e.to_string()))
}

impl Api {
    /// Create (or, for a queue, configure) the object in `req`; answers with
    /// the stored object as JSON.
    pub(super) async fn apply_object(&self, req: pb::ApplyRequest) -> Result<String, Status> {
        let source = if req.source.is_empty() {
            "<api>".to_string()
        } else {
            req.source
        };
        let request_id = request_id_of(&req.request_id);
        let manifest = match parse_object(&source, &req.object_json)? {
            Object::Workflow(wf) => {
                let params = req.parameters.into_iter().collect();
                return self.apply_workflow(&source, *wf, params, request_id).await;
            }
            Object::Manifest(m) => m,
        };
        // Check against current state, not a follower's possibly older copy.
        self.proposer().read_barrier().await?;
        // A retry of a request that was applied gets its recorded answer.
        let repeated = self.already_applied(request_id.as_deref());
        let cmd = match *manifest {
            Manifest::Job(job) => {
                if !repeated {
                    self.check_new_job(&source, &job)?;
                }
                Command::SubmitJob { job: Box::new(job) }
            }
            Manifest::Endpoint(ep) => {
                if !repeated {
                    self.check_new_endpoint(&source, &ep)?;
                }
                Command::CreateEndpoint {
                    endpoint: Box::new(ep),
                }
            }
            Manifest::Queue(queue) => Command::PutQueue {
                queue: Box::new(queue),
            },
            Manifest::Secret(secret) => Command::PutSecret {
                secret: Box::new(secret),
            },
        };
        self.proposer()
            .propose_request(cmd, request_id)
            .await
            .map_err(|s| in_source(&source, s))
    }

    /// A new job's name must be free, and some node must be able to run it.
    fn check_new_job(&self, source: &str, job: &api::Job) -> Result<(), Status> {
        let st = self.state();
        if st.jobs.contains_key(&job.metadata.name) {
            return Err(Status::already_exists(format!(
                "{source}: job {:?} already exists; pick another metadata.name or cancel the old one",
                job.metadata.name
            )));
        }
        for (i, t) in job.spec.tasks.iter().enumerate() {
            if let Some(why) = st.missing_secret(&format!("spec.tasks[{i}]"), t) {
                return Err(Status::invalid_argument(format!(
                    "{source}: job {:?}: {why}",
                    job.metadata.name
                )));
            }
        }
        let nodes: Vec<&api::Node> = st.nodes.values().collect();
        if let Some(why) = placement::infeasible(&nodes, job) {
            return Err(Status::invalid_argument(format!(
                "{source}: job {:?}: {why}",
                job.metadata.name
            )));
        }
        Ok(())
    }

    /// A new endpoint's name must be free, and some node must be able to run
    /// one replica.
    fn check_new_endpoint(&self, source: &str, ep: &Endpoint) -> Result<(), Status> {
        let st = self.state();
        if st.endpoints.contains_key(&ep.metadata.name) {
            return Err(Status::already_exists(format!(
                "{source}: endpoint {:?} already exists; delete it first (gpuctl delete endpoint {})",
                ep.metadata.name, ep.metadata.name
            )));
        }
        let nodes: Vec<&api::Node> = st.nodes.values().collect();
        let probe = crate::state::endpoints::replica_job(ep, &ep.metadata.name);
        let missing = ep
            .spec
            .auth
            .as_ref()
            .map(|a| &a.api_key_secret.name)
            .filter(|n| !st.secrets.contains_key(*n))
            .map(|n| {
                format!("spec.auth.apiKeySecret: secret {n:?} does not exist; apply it first (kind: Secret)")
            })
            .or_else(|| st.missing_secret("spec.server", &probe.spec.tasks[0]));
        if let Some(why) = missing {
            return Err(Status::invalid_argument(format!(
                "{source}: endpoint {:?}: {why}",
                ep.metadata.name
            )));
        }
        if let Some(why) = placement::infeasible(&nodes, &probe) {
            return Err(Status::invalid_argument(format!(
                "{source}: endpoint {:?}: spec.resources: a replica {why}",
                ep.metadata.name
            )));
        }
        Ok(())
    }
}
