//! Stored Argo objects that are not runs: `WorkflowTemplate`s and
//! `ClusterWorkflowTemplate`s (what `templateRef` and `workflowTemplateRef`
//! name; workflows copy them at submit) and `CronWorkflow`s with their
//! scheduling status. The apply side of creating, replacing and deleting
//! them; a CronWorkflow's runs are `cron.rs`'s.
//!
//! gpuctl has no namespaces. The two template kinds differ in who changes
//! them: a `WorkflowTemplate` is owned like a workflow (its creator, or an
//! admin, replaces and deletes it; a team lead for the team), a
//! `ClusterWorkflowTemplate` is the cluster's shared library, changed by
//! admins only. Every user may read and reference both; each kind has
//! names of its own (`clusterScope: true` picks the cluster one).

use gpuctl_common::api::{validate_name, ObjectMeta};
use gpuctl_pipelines::cron::{rfc3339, CronWorkflow};
use gpuctl_pipelines::resolve::TemplateStore;
use gpuctl_pipelines::spec::ARGO_API_VERSION;
use gpuctl_pipelines::Workflow;
use serde::{Deserialize, Serialize};

use super::command::{Applied, ApplyError};
use super::objects::ObjKey;
use super::State;

/// The label Argo puts on a CronWorkflow its `stopStrategy` stopped.
pub const LABEL_CRON_COMPLETED: &str = "cronworkflows.argoproj.io/completed";

/// A stored `WorkflowTemplate` or `ClusterWorkflowTemplate`: the document
/// as applied, with the server's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTemplate {
    pub metadata: ObjectMeta,
    pub template: Workflow,
}

/// A stored `CronWorkflow` and where its schedule stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CronObject {
    pub metadata: ObjectMeta,
    pub cron: CronWorkflow,
    #[serde(default)]
    pub status: CronStatus,
}

/// What the controller decided last, replicated so that a new leader
/// neither repeats nor skips a scheduled time.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronStatus {
    /// The last scheduled time handled (Unix seconds), run or skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_s: Option<i64>,
    /// What happened at that time: the workflow started, or why none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Its workflows that succeeded, ever (Argo's `status.succeeded`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub succeeded: u64,
    /// Its workflows that failed, ever, and runs that could not be
    /// submitted (Argo's `status.failed`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: u64,
    /// The finished workflows still kept that the counts include.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub counted: std::collections::BTreeSet<String>,
    /// `stopStrategy` held: nothing more is scheduled (Argo's phase
    /// `Stopped`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TemplateStore for State {
    fn workflow_template(&self, name: &str, cluster_scope: bool) -> Option<&Workflow> {
        let map = if cluster_scope {
            &self.cluster_workflow_templates
        } else {
            &self.workflow_templates
        };
        map.get(name).map(|t| &t.template)
    }
}

/// The object as Argo shows it: apiVersion, kind, metadata, spec, status.
fn argo_view(
    kind: &str,
    meta: &ObjectMeta,
    doc_meta: &gpuctl_pipelines::spec::WorkflowMeta,
    spec: serde_json::Value,
    status: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut m = serde_json::json!({
        "name": meta.name,
        "uid": meta.uid.map(|u| u.to_string()),
        "resourceVersion": meta.resource_version.map(|u| u.to_string()),
        "creationTimestamp": meta.creation_timestamp_ms.map(|t| rfc3339((t / 1000) as i64)),
    });
    if !doc_meta.labels.is_empty() {
        m["labels"] = serde_json::json!(doc_meta.labels);
    }
    if !doc_meta.annotations.is_empty() {
        m["annotations"] = serde_json::json!(doc_meta.annotations);
    }
    if let Some(o) = &meta.owner {
        m["owner"] = serde_json::json!(o);
    }
    let mut v = serde_json::json!({
        "apiVersion": ARGO_API_VERSION,
        "kind": kind,
        "metadata": m,
        "spec": spec,
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    v
}

impl StoredTemplate {
    pub fn view(&self) -> serde_json::Value {
        argo_view(
            &self.template.kind,
            &self.metadata,
            &self.template.metadata,
            serde_json::to_value(&self.template.spec).unwrap_or_default(),
            None,
        )
    }
}

impl State {
    /// Store a template, or replace the one of that name (keeping its uid,
    /// creation time and owner).
    pub(super) fn put_workflow_template(
        &mut self,
        index: u64,
        now: u64,
        cluster: bool,
        template: &Workflow,
        owner: Option<&str>,
    ) -> Result<Applied, ApplyError> {
        let name = template.metadata.name.clone().unwrap_or_default();
        validate_name("metadata.name", &name).map_err(|e| ApplyError::Invalid(e.to_string()))?;
        let map = if cluster {
            &mut self.cluster_workflow_templates
        } else {
            &mut self.workflow_templates
        };
        let metadata = match map.get(&name) {
            Some(old) => ObjectMeta {
                resource_version: Some(index),
                ..old.metadata.clone()
            },
            None => ObjectMeta {
                name: name.clone(),
                uid: Some(index),
                resource_version: Some(index),
                creation_timestamp_ms: Some(now),
                owner: owner.map(str::to_string),
                ..Default::default()
            },
        };
        let stored = StoredTemplate {
            metadata,
            template: template.clone(),
        };
        let view = stored.view();
        map.insert(name.clone(), stored);
        self.dirty.insert(template_key(cluster, name));
        Ok(Applied::Object(Box::new(view)))
    }

    pub(super) fn delete_workflow_template(
        &mut self,
        cluster: bool,
        name: &str,
    ) -> Result<Applied, ApplyError> {
        let map = if cluster {
            &mut self.cluster_workflow_templates
        } else {
            &mut self.workflow_templates
        };
        let old = map.remove(name).ok_or_else(|| ApplyError::NotFound {
            kind: if cluster {
                "clusterworkflowtemplate"
            } else {
                "workflowtemplate"
            },
            name: name.to_string(),
        })?;
        self.dirty.insert(template_key(cluster, name.to_string()));
        Ok(Applied::Object(Box::new(old.view())))
    }

    /// Store a CronWorkflow, or replace the spec of the one of that name
    /// (its schedule status stays: `gpuctl cron suspend` is a replace).
    pub(super) fn put_cron_workflow(
        &mut self,
        index: u64,
        now: u64,
        cron: &CronWorkflow,
        owner: Option<&str>,
    ) -> Result<Applied, ApplyError> {
        let name = cron.name().to_string();
        validate_name("metadata.name", &name).map_err(|e| ApplyError::Invalid(e.to_string()))?;
        let obj = match self.cron_workflows.get(&name) {
            Some(old) => CronObject {
                metadata: ObjectMeta {
                    resource_version: Some(index),
                    ..old.metadata.clone()
                },
                cron: cron.clone(),
                status: old.status.clone(),
            },
            None => CronObject {
                metadata: ObjectMeta {
                    name: name.clone(),
                    uid: Some(index),
                    resource_version: Some(index),
                    creation_timestamp_ms: Some(now),
                    owner: owner.map(str::to_string),
                    ..Default::default()
                },
                cron: cron.clone(),
                status: CronStatus::default(),
            },
        };
        self.cron_workflows.insert(name.clone(), obj);
        self.dirty.insert(ObjKey::CronWorkflow(name.clone()));
        Ok(Applied::Object(Box::new(self.cron_view(&name))))
    }

    /// The workflows a CronWorkflow made, oldest first.
    pub fn cron_children(&self, name: &str) -> Vec<&super::WorkflowObject> {
        let mut v: Vec<&super::WorkflowObject> = self
            .workflows
            .values()
            .filter(|w| {
                w.metadata
                    .labels
                    .get(gpuctl_pipelines::cron::LABEL_CRON_WORKFLOW)
                    .is_some_and(|n| n == name)
            })
            .collect();
        v.sort_by_key(|w| w.metadata.uid);
        v
    }

    /// A CronWorkflow as `gpuctl get` shows it: Argo's shape, with
    /// `status.active`, `lastScheduledTime`, the `succeeded`/`failed`
    /// counts, `phase` (`Active`, or `Stopped` by its `stopStrategy`), and
    /// the last decision's message.
    pub fn cron_view(&self, name: &str) -> serde_json::Value {
        let Some(c) = self.cron_workflows.get(name) else {
            return serde_json::Value::Null;
        };
        let children = self.cron_children(name);
        let phase = |w: &&super::WorkflowObject| w.run.phase();
        let active: Vec<&str> = children
            .iter()
            .filter(|w| !phase(w).is_terminal())
            .map(|w| w.metadata.name.as_str())
            .collect();
        let next = c
            .cron
            .schedule_in(&crate::cron_zone::local())
            .ok()
            .and_then(|s| {
                let from = c
                    .status
                    .last_scheduled_s
                    .or(c.metadata.creation_timestamp_ms.map(|t| (t / 1000) as i64))?;
                s.next_after(from)
            })
            .map(rfc3339);
        let status = serde_json::json!({
            "active": active,
            "lastScheduledTime": c.status.last_scheduled_s.map(rfc3339),
            "nextScheduledTime": next,
            "succeeded": c.status.succeeded,
            "failed": c.status.failed,
            "phase": if c.status.stopped { "Stopped" } else { "Active" },
            "message": c.status.message,
        });
        // Argo labels a stopped one `.../completed: "true"`.
        let mut doc_meta = c.cron.metadata.clone();
        if c.status.stopped {
            doc_meta
                .labels
                .insert(LABEL_CRON_COMPLETED.to_string(), "true".to_string());
        }
        argo_view(
            "CronWorkflow",
            &c.metadata,
            &doc_meta,
            serde_json::to_value(&c.cron.spec).unwrap_or_default(),
            Some(status),
        )
    }
}

/// The storage key of a template of either kind.
fn template_key(cluster: bool, name: String) -> ObjKey {
    if cluster {
        ObjKey::ClusterWorkflowTemplate(name)
    } else {
        ObjKey::WorkflowTemplate(name)
    }
}
