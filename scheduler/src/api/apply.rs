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

use super::authz::{Action, ApplyKind, Principal};
use super::convert::{in_source, request_id_of};
use super::Api;
use crate::placement;
use crate::state::Command;

/// An object as `Apply` receives it, parsed once.
enum Object {
    Manifest(Box<Manifest>),
    Workflow(Box<Workflow>),
    /// A `WorkflowTemplate` or `ClusterWorkflowTemplate`.
    Template(Box<Workflow>),
    Cron(Box<gpuctl_pipelines::cron::CronWorkflow>),
}

/// Read the payload once, look up its kind, and parse it as that kind.
fn parse_object(source: &str, object_json: &str) -> Result<Object, Status> {
    let doc =
        json_document(source, object_json).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let object = match document_kind(&doc) {
        Some("Workflow") => gpuctl_pipelines::parse_workflow_document(source, doc)
            .map(|wf| Object::Workflow(Box::new(wf))),
        Some("WorkflowTemplate" | "ClusterWorkflowTemplate") => {
            gpuctl_pipelines::parse_workflow_template_document(source, doc)
                .map(|t| Object::Template(Box::new(t)))
        }
        Some("CronWorkflow") => gpuctl_pipelines::cron::parse_cron_workflow_document(source, doc)
            .map(|c| Object::Cron(Box::new(c))),
        _ => parse_manifest_document(source, doc).map(|m| Object::Manifest(Box::new(m))),
    };
    object.map_err(|e| Status::invalid_argument(e.to_string()))
}

impl Api {
    /// Create (or, for a queue, configure) the object in `req` for `who`
    /// (refused when it may not); answers with the stored object as JSON.
    /// The call is recorded in the audit log.
    pub(super) async fn apply_object(
        &self,
        who: &Result<Principal, Status>,
        req: pb::ApplyRequest,
    ) -> Result<String, Status> {
        let source = if req.source.is_empty() {
            "<api>".to_string()
        } else {
            req.source.clone()
        };
        let parsed = parse_object(&source, &req.object_json);
        let (kind, name) = match &parsed {
            Ok(Object::Manifest(m)) => (m.kind().to_ascii_lowercase(), m.name().to_string()),
            Ok(Object::Workflow(wf)) => (
                "workflow".to_string(),
                wf.metadata
                    .name
                    .clone()
                    .or_else(|| wf.metadata.generate_name.clone())
                    .unwrap_or_default(),
            ),
            Ok(Object::Template(t)) => (
                t.kind.to_ascii_lowercase(),
                t.metadata.name.clone().unwrap_or_default(),
            ),
            Ok(Object::Cron(c)) => ("cronworkflow".to_string(), c.name().to_string()),
            Err(_) => (String::new(), String::new()),
        };
        let r = async {
            let who = who.as_ref().map_err(Clone::clone)?;
            self.apply_as(who, &source, parsed?, req).await
        }
        .await;
        self.audit(who, "apply", &kind, &name, &r);
        r
    }

    async fn apply_as(
        &self,
        who: &Principal,
        source: &str,
        object: Object,
        req: pb::ApplyRequest,
    ) -> Result<String, Status> {
        let source = source.to_string();
        let request_id = request_id_of(&req.request_id);
        let mut manifest = match object {
            Object::Workflow(wf) => {
                let name = wf.metadata.name.clone().unwrap_or_default();
                self.check(
                    who,
                    &Action::Apply {
                        kind: ApplyKind::Workflow,
                        name: &name,
                        queue: None,
                    },
                )?;
                let params = req.parameters.into_iter().collect();
                return self
                    .apply_workflow(&source, *wf, params, request_id, who.owner())
                    .await;
            }
            Object::Template(t) => {
                return self.apply_template(who, &source, *t, request_id).await;
            }
            Object::Cron(c) => return self.apply_cron(who, &source, *c, request_id).await,
            Object::Manifest(m) => m,
        };
        // The owner is the caller; only an admin may name another one.
        let owned = |meta: &mut api::ObjectMeta| {
            if !who.is_admin() || meta.owner.is_none() {
                meta.owner = who.owner();
            }
        };
        match &mut *manifest {
            Manifest::Job(j) => owned(&mut j.metadata),
            Manifest::Endpoint(e) => owned(&mut e.metadata),
            Manifest::Queue(q) => q.metadata.owner = None,
            Manifest::Secret(s) => owned(&mut s.metadata),
        }
        // Checked against current state, not a follower's possibly older
        // copy (see `Proposer::checked_write`).
        let checked = || self.checked_command(who, &source, &manifest, request_id.as_deref());
        self.proposer()
            .checked_write(request_id.clone(), checked)
            .await
            .map_err(|s| in_source(&source, s))
    }

    /// May `who` apply `manifest`, and could it ever run: the command that
    /// creates it, or why not.
    fn checked_command(
        &self,
        who: &Principal,
        source: &str,
        manifest: &Manifest,
        request_id: Option<&str>,
    ) -> Result<Command, Status> {
        let (kind, queue) = match manifest {
            Manifest::Job(j) => (ApplyKind::Job, j.metadata.queue.as_deref()),
            Manifest::Endpoint(_) => (ApplyKind::Endpoint, None),
            Manifest::Queue(_) => (ApplyKind::Queue, None),
            Manifest::Secret(_) => (ApplyKind::Secret, None),
        };
        self.check(
            who,
            &Action::Apply {
                kind,
                name: manifest.name(),
                queue,
            },
        )?;
        for name in secrets_named(manifest) {
            self.check(who, &Action::UseSecret { name })?;
        }
        // A retry of a request that was applied gets its recorded answer.
        let repeated = self.already_applied(request_id);
        Ok(match manifest {
            Manifest::Job(job) => {
                if !repeated {
                    self.check_new_job(source, job)?;
                }
                Command::SubmitJob {
                    job: Box::new(job.clone()),
                }
            }
            Manifest::Endpoint(ep) => {
                let exists = self.state().endpoints.contains_key(&ep.metadata.name);
                if exists {
                    // Applied again: a rollout when what replicas run changed.
                    // The same rule as deleting it: its owner, their team
                    // lead, an admin.
                    self.check(
                        who,
                        &Action::Stop {
                            verb: "update",
                            kind: "endpoint",
                            name: &ep.metadata.name,
                        },
                    )?;
                }
                if !repeated {
                    self.check_endpoint(source, ep, !exists)?;
                }
                if exists {
                    Command::UpdateEndpoint {
                        endpoint: Box::new(ep.clone()),
                    }
                } else {
                    Command::CreateEndpoint {
                        endpoint: Box::new(ep.clone()),
                    }
                }
            }
            Manifest::Queue(queue) => Command::PutQueue {
                queue: Box::new(queue.clone()),
            },
            Manifest::Secret(secret) => Command::PutSecret {
                secret: Box::new(sealed(secret)?),
            },
        })
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
        if let Some(why) = placement::infeasible(st.nodes.values(), job) {
            return Err(Status::invalid_argument(format!(
                "{source}: job {:?}: {why}",
                job.metadata.name
            )));
        }
        Ok(())
    }

    /// A new endpoint's name must be free (`new`), and some node must be able
    /// to run one replica.
    fn check_endpoint(&self, source: &str, ep: &Endpoint, new: bool) -> Result<(), Status> {
        let st = self.state();
        if new && st.endpoints.contains_key(&ep.metadata.name) {
            return Err(Status::already_exists(format!(
                "{source}: endpoint {:?} already exists; delete it first (gpuctl delete endpoint {})",
                ep.metadata.name, ep.metadata.name
            )));
        }
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
        if let Some(why) = placement::infeasible(st.nodes.values(), &probe) {
            return Err(Status::invalid_argument(format!(
                "{source}: endpoint {:?}: spec.resources: a replica {why}",
                ep.metadata.name
            )));
        }
        Ok(())
    }
}

fn refs<'a>(
    env: &'a [gpuctl_common::secret::EnvFromSource],
    files: &'a [gpuctl_common::secret::SecretFilesSource],
) -> Vec<&'a str> {
    env.iter()
        .map(|e| e.secret_ref.name.as_str())
        .chain(files.iter().map(|f| f.secret_ref.name.as_str()))
        .collect()
}

/// A secret as it is proposed: with an encryption configuration whose
/// first provider encrypts (`--encryption-provider-config`), validated and
/// its values sealed, so that the Raft log, the stored state and snapshots
/// hold ciphertext only; otherwise as given (the state validates it).
fn sealed(secret: &gpuctl_common::secret::Secret) -> Result<gpuctl_common::secret::Secret, Status> {
    let mut s = secret.clone();
    let Some(keys) = gpuctl_security::sealing::installed().filter(|k| k.encrypts()) else {
        return Ok(s);
    };
    s.validate()
        .map_err(|e| Status::invalid_argument(format!("secret {:?}: {e}", secret.metadata.name)))?;
    s.seal_values(|context, plain| keys.seal(context, plain));
    Ok(s)
}

/// The secrets an applied job or endpoint would give its tasks.
fn secrets_named(m: &Manifest) -> Vec<&str> {
    match m {
        Manifest::Job(j) => j
            .spec
            .tasks
            .iter()
            .flat_map(|t| refs(&t.env_from, &t.secret_files))
            .collect(),
        Manifest::Endpoint(e) => e
            .spec
            .server
            .iter()
            .flat_map(|s| refs(&s.env_from, &s.secret_files))
            .chain(e.spec.auth.iter().map(|a| a.api_key_secret.name.as_str()))
            .collect(),
        Manifest::Queue(_) | Manifest::Secret(_) => Vec::new(),
    }
}
