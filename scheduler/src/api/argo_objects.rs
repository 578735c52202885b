//! `Apply`, `Get` and `Delete` of the stored Argo objects that are not
//! runs: `WorkflowTemplate`, `ClusterWorkflowTemplate` and `CronWorkflow`
//! (the state side is `state/templates.rs`). A template's `templateRef`s,
//! and a CronWorkflow's `workflowTemplateRef`, must name templates stored
//! already, as Argo checks on create; a workflow that names a template
//! gets a copy of it when it is submitted (`workflows.rs`).

use gpuctl_pipelines::cron::CronWorkflow;
use gpuctl_pipelines::resolve::{has_references, resolve};
use gpuctl_pipelines::Workflow;
use tonic::Status;

use super::authz::{Action, ApplyKind, Principal};
use super::convert::{in_source, json};
use super::Api;
use crate::state::{Command, State};

/// Kind names as `kind_of` gives them.
pub(super) const WFTMPL: &str = "workflowtemplate";
pub(super) const CWFTMPL: &str = "clusterworkflowtemplate";
pub(super) const CRON: &str = "cronworkflow";

/// The references of `wf` resolve against `st`, and what they make is a
/// valid workflow: the first problem, with `source`, else `None`.
fn check_references(st: &State, source: &str, wf: &Workflow) -> Result<(), Status> {
    if !has_references(wf) {
        return Ok(());
    }
    let r = resolve(wf, st)
        .map_err(|e| Status::invalid_argument(e.in_source(source, 0).to_string()))?;
    if let Some(e) = gpuctl_pipelines::validate_all(&r).into_iter().next() {
        return Err(Status::invalid_argument(format!(
            "{source}: with its templates resolved: {}: {}",
            e.path, e.reason
        )));
    }
    Ok(())
}

impl Api {
    /// Store a WorkflowTemplate or ClusterWorkflowTemplate (replacing one
    /// of the same name, for its owner; cluster ones for admins).
    pub(super) async fn apply_template(
        &self,
        who: &Principal,
        source: &str,
        template: Workflow,
        request_id: Option<String>,
    ) -> Result<String, Status> {
        let cluster = template.kind == "ClusterWorkflowTemplate";
        let (kind, apply_kind) = if cluster {
            (CWFTMPL, ApplyKind::ClusterWorkflowTemplate)
        } else {
            (WFTMPL, ApplyKind::WorkflowTemplate)
        };
        let name = template.metadata.name.clone().unwrap_or_default();
        let checked = || {
            self.check(
                who,
                &Action::Apply {
                    kind: apply_kind,
                    name: &name,
                    queue: None,
                },
            )?;
            let st = self.state();
            let exists = if cluster {
                st.cluster_workflow_templates.contains_key(&name)
            } else {
                st.workflow_templates.contains_key(&name)
            };
            drop(st);
            if exists {
                self.check(
                    who,
                    &Action::Stop {
                        verb: "replace",
                        kind,
                        name: &name,
                    },
                )?;
            }
            check_references(&self.state(), source, &template)?;
            Ok(Command::PutWorkflowTemplate {
                cluster,
                template: Box::new(template.clone()),
                // The cluster's library belongs to no one user.
                owner: if cluster { None } else { who.owner() },
            })
        };
        self.proposer()
            .checked_write(request_id, checked)
            .await
            .map_err(|s| in_source(source, s))
    }

    /// Store a CronWorkflow, or replace the spec of one (for its owner).
    pub(super) async fn apply_cron(
        &self,
        who: &Principal,
        source: &str,
        cron: CronWorkflow,
        request_id: Option<String>,
    ) -> Result<String, Status> {
        let name = cron.name().to_string();
        let checked = || {
            self.check(
                who,
                &Action::Apply {
                    kind: ApplyKind::CronWorkflow,
                    name: &name,
                    queue: None,
                },
            )?;
            let exists = self.state().cron_workflows.contains_key(&name);
            if exists {
                self.check(
                    who,
                    &Action::Stop {
                        verb: "replace",
                        kind: CRON,
                        name: &name,
                    },
                )?;
            }
            check_references(&self.state(), source, &cron.workflow_at(0))?;
            Ok(Command::PutCronWorkflow {
                cron: Box::new(cron.clone()),
                owner: who.owner(),
            })
        };
        self.proposer()
            .checked_write(request_id, checked)
            .await
            .map_err(|s| in_source(source, s))
    }

    /// The objects of one of these kinds (all, or the one named), as Argo
    /// shows them.
    pub(super) fn get_argo_objects(&self, kind: &str, name: &str) -> Result<Vec<String>, Status> {
        let st = self.state();
        let views: Vec<serde_json::Value> = match kind {
            CRON => st
                .cron_workflows
                .keys()
                .filter(|n| name.is_empty() || *n == name)
                .map(|n| st.cron_view(n))
                .collect(),
            _ => {
                let map = if kind == CWFTMPL {
                    &st.cluster_workflow_templates
                } else {
                    &st.workflow_templates
                };
                map.iter()
                    .filter(|(n, _)| name.is_empty() || *n == name)
                    .map(|(_, t)| t.view())
                    .collect()
            }
        };
        if !name.is_empty() && views.is_empty() {
            return Err(Status::not_found(format!("{kind} {name:?} not found")));
        }
        views.iter().map(json).collect()
    }
}

/// The command that deletes an object of one of these kinds.
pub(super) fn delete_command(kind: &str, name: String) -> Option<Command> {
    match kind {
        WFTMPL => Some(Command::DeleteWorkflowTemplate {
            cluster: false,
            name,
        }),
        CWFTMPL => Some(Command::DeleteWorkflowTemplate {
            cluster: true,
            name,
        }),
        CRON => Some(Command::DeleteCronWorkflow { name }),
        _ => None,
    }
}
