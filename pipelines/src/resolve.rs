//! Templates by reference, resolved at submit: a workflow's
//! `workflowTemplateRef` and its tasks' `templateRef`s are replaced by
//! copies of what they name, so the run that starts is self-contained and
//! a later change to a `WorkflowTemplate` does not change it (as Argo,
//! which keeps the copies in `status.storedTemplates`).
//!
//! Argo's semantics:
//! - `workflowTemplateRef`: the workflow's spec is the template's spec with
//!   the workflow's own fields over it: `entrypoint`, `onExit`, deadlines,
//!   `parallelism` and `ttlStrategy` when set; `arguments.parameters` merged
//!   by name (the workflow's values win); the workflow's own templates
//!   added (one of the same name replaces the template's).
//! - `templateRef`: the task runs that template with the task's arguments
//!   against the template's own inputs (defaults included), like a local
//!   template. Inside it, `template: x` names a sibling in the same
//!   `WorkflowTemplate`; `templateRef`s there are followed in turn.
//!
//! A copied template is named `wftmpl:NAME/TEMPLATE` (`cwftmpl:NAME/TEMPLATE`
//! for a `ClusterWorkflowTemplate`): Argo template names cannot hold `:`,
//! so a copy never collides with the workflow's own templates or its
//! hoisted inline ones (`PARENT/TASK`). Inside a copy, a task's `onExit`
//! and `hooks.exit` name siblings too and are renamed the same way; a
//! hook's own `templateRef` is copied as a task's.

use std::collections::BTreeMap;

use gpuctl_common::api::FieldError;

use crate::spec::{kind_name, DagTask, Parameter, Template, Workflow, WorkflowSpec};

/// The label Argo puts on a workflow made from a `WorkflowTemplate`.
pub const LABEL_WORKFLOW_TEMPLATE: &str = "workflows.argoproj.io/workflow-template";
/// The label Argo puts on a workflow made from a `ClusterWorkflowTemplate`.
pub const LABEL_CLUSTER_WORKFLOW_TEMPLATE: &str = "workflows.argoproj.io/cluster-workflow-template";

/// Where referenced templates are found.
pub trait TemplateStore {
    /// The `WorkflowTemplate` (or, with `cluster_scope`, the
    /// `ClusterWorkflowTemplate`) called `name`.
    fn workflow_template(&self, name: &str, cluster_scope: bool) -> Option<&Workflow>;
}

/// Templates in memory, by (cluster scope, name): for tests and tools.
#[derive(Debug, Clone, Default)]
pub struct InMemoryTemplates(pub BTreeMap<(bool, String), Workflow>);

impl InMemoryTemplates {
    /// Add a `WorkflowTemplate` or `ClusterWorkflowTemplate` (its kind
    /// decides which).
    pub fn add(&mut self, t: Workflow) {
        let cluster = t.kind == "ClusterWorkflowTemplate";
        let name = t.metadata.name.clone().unwrap_or_default();
        self.0.insert((cluster, name), t);
    }
}

impl TemplateStore for InMemoryTemplates {
    fn workflow_template(&self, name: &str, cluster_scope: bool) -> Option<&Workflow> {
        self.0.get(&(cluster_scope, name.to_string()))
    }
}

/// Whether the workflow names any template stored apart from it.
pub fn has_references(wf: &Workflow) -> bool {
    wf.spec.workflow_template_ref.is_some()
        || wf.spec.templates.iter().any(|t| {
            tasks_of(t).iter().any(|(_, task)| {
                task.template_ref.is_some()
                    || task
                        .hooks
                        .iter()
                        .flat_map(|h| h.values())
                        .any(|h| h.template_ref.is_some())
            })
        })
}

/// The workflow with every reference replaced by a copy of what it names.
/// A missing `WorkflowTemplate` or template is an error naming the
/// reference and where it is. The result is not validated.
pub fn resolve(wf: &Workflow, store: &dyn TemplateStore) -> Result<Workflow, FieldError> {
    let mut out = wf.clone();
    let mut origins: Vec<Origin> = Vec::new();
    if let Some(r) = &wf.spec.workflow_template_ref {
        let t = store
            .workflow_template(&r.name, r.cluster_scope)
            .ok_or_else(|| {
                FieldError::new(
                    "spec.workflowTemplateRef.name",
                    format!("no {} named {:?}", r.kind(), r.name),
                )
            })?;
        let (spec, from_template) = merge_spec(&t.spec, &wf.spec);
        out.spec = spec;
        let label = if r.cluster_scope {
            LABEL_CLUSTER_WORKFLOW_TEMPLATE
        } else {
            LABEL_WORKFLOW_TEMPLATE
        };
        out.metadata
            .labels
            .entry(label.to_string())
            .or_insert_with(|| r.name.clone());
        // The template's templates call each other by their own names,
        // which are now the workflow's.
        for (i, own) in from_template.into_iter().enumerate() {
            origins.push(Origin {
                imported: None,
                at: match own {
                    Some(k) => format!("{} {:?}: spec.templates[{k}]", r.kind(), r.name),
                    None => format!("spec.templates[{i}]"),
                },
            });
        }
    } else {
        origins.extend((0..out.spec.templates.len()).map(|i| Origin {
            imported: None,
            at: format!("spec.templates[{i}]"),
        }));
    }
    let mut imports = Imports {
        store,
        done: BTreeMap::new(),
    };
    let mut i = 0;
    while i < out.spec.templates.len() {
        let mut t = out.spec.templates[i].clone();
        let origin = origins[i].clone();
        for (path, task) in tasks_of_mut(&mut t) {
            let at = format!("{}.{path}", origin.at);
            let target = match (&task.template_ref, &origin.imported) {
                (Some(r), _) => Some((r.cluster_scope, r.name.clone(), r.template.clone())),
                (None, Some((c, n))) => task.template.clone().map(|x| (*c, n.clone(), x)),
                (None, None) => None,
            };
            // Exit handlers inside a copy name its siblings.
            if let Some((c, n)) = &origin.imported {
                let mut handlers: Vec<&mut String> = task.on_exit.iter_mut().collect();
                if let Some(hooks) = task.hooks.as_mut() {
                    handlers.extend(hooks.values_mut().filter_map(|h| h.template.as_mut()));
                }
                for h in handlers {
                    let key = (*c, n.clone(), h.clone());
                    *h = imports.import(&key, &at, &mut out.spec.templates, &mut origins)?;
                }
            }
            // A hook's own `templateRef`.
            for h in task.hooks.iter_mut().flat_map(|h| h.values_mut()) {
                if let Some(r) = h.template_ref.take() {
                    let key = (r.cluster_scope, r.name, r.template);
                    h.template =
                        Some(imports.import(&key, &at, &mut out.spec.templates, &mut origins)?);
                }
            }
            let Some(key) = target else {
                continue;
            };
            let local = imports.import(&key, &at, &mut out.spec.templates, &mut origins)?;
            task.template = Some(local);
            task.template_ref = None;
        }
        out.spec.templates[i] = t;
        i += 1;
    }
    out.spec.workflow_template_ref = None;
    Ok(out)
}

/// Where a template of the resolved workflow came from: `imported` is the
/// stored template (cluster scope, name) whose siblings its `template:`
/// names; `at` its place, for errors.
#[derive(Debug, Clone)]
struct Origin {
    imported: Option<(bool, String)>,
    at: String,
}

struct Imports<'a> {
    store: &'a dyn TemplateStore,
    /// (cluster scope, stored template, template) → its copy's name.
    done: BTreeMap<(bool, String, String), String>,
}

impl Imports<'_> {
    /// The name of the copy of `key`'s template, copying it (at the end of
    /// `templates`) the first time.
    fn import(
        &mut self,
        key: &(bool, String, String),
        at: &str,
        templates: &mut Vec<Template>,
        origins: &mut Vec<Origin>,
    ) -> Result<String, FieldError> {
        if let Some(n) = self.done.get(key) {
            return Ok(n.clone());
        }
        let (cluster, name, template) = key;
        let kind = kind_name(*cluster);
        let doc = self
            .store
            .workflow_template(name, *cluster)
            .ok_or_else(|| {
                FieldError::new(
                    "",
                    format!("templateRef {name:?} at {at}: no {kind} named {name:?}"),
                )
            })?;
        let Some((k, t)) = doc.template(template) else {
            let names: Vec<&str> = doc.spec.templates.iter().map(|t| t.name.as_str()).collect();
            return Err(FieldError::new(
                "",
                format!(
                    "templateRef {name:?} at {at}: {kind} {name:?} has no template {template:?} (templates: {})",
                    names.join(", ")
                ),
            ));
        };
        let local = if *cluster {
            format!("cwftmpl:{name}/{template}")
        } else {
            format!("wftmpl:{name}/{template}")
        };
        let mut copy = t.clone();
        copy.name = local.clone();
        templates.push(copy);
        origins.push(Origin {
            imported: Some((*cluster, name.clone())),
            at: format!("{kind} {name:?}: spec.templates[{k}]"),
        });
        self.done.insert(key.clone(), local.clone());
        Ok(local)
    }
}

/// The template's spec with the workflow's over it, and for each template
/// of the result its index in the stored template (`None`: the
/// workflow's own).
fn merge_spec(t: &WorkflowSpec, w: &WorkflowSpec) -> (WorkflowSpec, Vec<Option<usize>>) {
    let mut s = t.clone();
    let mut from: Vec<Option<usize>> = (0..s.templates.len()).map(Some).collect();
    if w.entrypoint.is_some() {
        s.entrypoint = w.entrypoint.clone();
    }
    if w.on_exit.is_some() {
        s.on_exit = w.on_exit.clone();
    }
    if w.active_deadline_seconds.is_some() {
        s.active_deadline_seconds = w.active_deadline_seconds.clone();
    }
    if w.parallelism.is_some() {
        s.parallelism = w.parallelism.clone();
    }
    if w.ttl_strategy.is_some() {
        s.ttl_strategy = w.ttl_strategy;
    }
    if let Some(wa) = &w.arguments {
        let args = s.arguments.get_or_insert_with(Default::default);
        for p in &wa.parameters {
            merge_by_name(&mut args.parameters, p, |x: &Parameter| &x.name);
        }
    }
    for t in &w.templates {
        match s.templates.iter().position(|x| x.name == t.name) {
            Some(i) => {
                s.templates[i] = t.clone();
                from[i] = None;
            }
            None => {
                s.templates.push(t.clone());
                from.push(None);
            }
        }
    }
    (s, from)
}

fn merge_by_name<T: Clone>(list: &mut Vec<T>, item: &T, name: impl Fn(&T) -> &String) {
    match list.iter().position(|x| name(x) == name(item)) {
        Some(i) => list[i] = item.clone(),
        None => list.push(item.clone()),
    }
}

/// A template's DAG tasks and steps with their paths inside it.
fn tasks_of(t: &Template) -> Vec<(String, &DagTask)> {
    let mut v = Vec::new();
    if let Some(d) = &t.dag {
        v.extend(
            d.tasks
                .iter()
                .enumerate()
                .map(|(j, task)| (format!("dag.tasks[{j}]"), task)),
        );
    }
    if let Some(groups) = &t.steps {
        for (g, group) in groups.iter().enumerate() {
            v.extend(
                group
                    .iter()
                    .enumerate()
                    .map(|(k, step)| (format!("steps[{g}][{k}]"), step)),
            );
        }
    }
    v
}

fn tasks_of_mut(t: &mut Template) -> Vec<(String, &mut DagTask)> {
    let mut v = Vec::new();
    if let Some(d) = &mut t.dag {
        v.extend(
            d.tasks
                .iter_mut()
                .enumerate()
                .map(|(j, task)| (format!("dag.tasks[{j}]"), task)),
        );
    }
    if let Some(groups) = &mut t.steps {
        for (g, group) in groups.iter_mut().enumerate() {
            v.extend(
                group
                    .iter_mut()
                    .enumerate()
                    .map(|(k, step)| (format!("steps[{g}][{k}]"), step)),
            );
        }
    }
    v
}
