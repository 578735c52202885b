//! Checks that need no cluster: everything that can be known about a
//! workflow before any step runs.
//!
//! [`validate_all`] returns every problem found, each with its field path
//! (`spec.templates[1].dag.tasks[2].depends`) and the reason; the first is
//! what [`crate::parse_workflow`] reports. Problems are reported in document
//! order, so the driver here walks the document and hands each part to the
//! checker of its concern:
//!
//! ```text
//!  mod.rs      the driver: the workflow, then each template
//!  names       metadata and template names, entrypoint and onExit
//!  params      parameters and artifacts: arguments, inputs, outputs
//!  leaf        container and script templates, memoize
//!  resources   GPU counts and the resources block
//!  retry       retryStrategy and activeDeadlineSeconds
//!  dag         DAG templates: tasks, dependencies, target, task arguments
//!  steps       steps templates: groups, step names, what a step may name
//!  hooks       a task's or step's exit handler (`onExit`, `hooks.exit`)
//!  suspend     suspend templates: the duration, what a suspend node can output
//!  graph       dependencies, cycles, ancestors, recursion between templates
//!  refs        what each `{{...}}` may refer to where it sits
//!  checker     the shared state (errors so far) and helpers
//!  limits      the numbers validation enforces
//! ```

mod checker;
mod dag;
mod graph;
mod hooks;
mod leaf;
mod limits;
mod names;
mod params;
mod refs;
mod resources;
mod retry;
mod steps;
mod suspend;

pub use graph::{ancestors_of, find_cycle, task_depends};
pub use limits::{
    MAX_DAG_DEPTH, MAX_DEADLINE_SECONDS, MAX_FAN_OUT, MAX_RETRY_LIMIT, MAX_TASKS_PER_DAG,
};
pub use resources::parse_gpus;

use gpuctl_common::api::FieldError;

use crate::spec::{hoist_inline, parse_duration_ms, unhoisted_path, Template, Workflow};
use checker::{unsupported, Validator, VarCtx};
use retry::positive_seconds;

/// Every problem in the workflow, in document order.
pub fn validate_all(wf: &Workflow) -> Vec<FieldError> {
    // Inline templates are checked as templates, each error at its place.
    let (hoisted, origins, mut unreadable) = hoist_inline(wf);
    let mut v = Validator {
        wf: &hoisted,
        errors: Vec::new(),
    };
    v.workflow();
    let own = wf.spec.templates.len();
    let mut errors: Vec<FieldError> = v
        .errors
        .into_iter()
        .map(|mut e| {
            e.path = unhoisted_path(&e.path, own, &origins);
            e
        })
        .collect();
    // An inline template that is no template is the problem to name, not
    // the template its task then lacks.
    errors.retain(|e| {
        !unreadable.iter().any(|u| {
            e.path
                .strip_suffix(".template")
                .is_some_and(|task| u.path.starts_with(&format!("{task}.inline")))
        })
    });
    unreadable.append(&mut errors);
    unreadable
}

impl<'a> Validator<'a> {
    /// The whole document, top-level fields first, then each template.
    fn workflow(&mut self) {
        self.metadata();
        let s = &self.wf.spec;
        unsupported(
            &mut self.errors,
            "spec",
            &[
                ("workflowTemplateRef", &s.workflow_template_ref),
                ("volumeClaimTemplates", &s.volume_claim_templates),
                ("hooks", &s.hooks),
                ("synchronization", &s.synchronization),
                ("templateDefaults", &s.template_defaults),
                ("shutdown", &s.shutdown),
                ("retryStrategy", &s.retry_strategy),
                ("podPriority", &s.pod_priority),
                ("podPriorityClassName", &s.pod_priority_class_name),
                ("hostNetwork", &s.host_network),
                ("dnsPolicy", &s.dns_policy),
                ("dnsConfig", &s.dns_config),
                ("hostAliases", &s.host_aliases),
                ("schedulerName", &s.scheduler_name),
                ("podDisruptionBudget", &s.pod_disruption_budget),
                (
                    "automountServiceAccountToken",
                    &s.automount_service_account_token,
                ),
                ("executor", &s.executor),
                ("podSpecPatch", &s.pod_spec_patch),
                ("volumeClaimGC", &s.volume_claim_gc),
                ("metrics", &s.metrics),
                ("artifactRepositoryRef", &s.artifact_repository_ref),
                ("artifactGC", &s.artifact_gc),
                ("workflowMetadata", &s.workflow_metadata),
            ],
            "",
        );
        if let Some(a) = &s.arguments {
            self.workflow_arguments(a);
        }
        if let Some(p) = &s.parallelism {
            self.parallelism("spec.parallelism", p);
        }
        if let Some(d) = &s.active_deadline_seconds {
            if let Err(e) = positive_seconds(d) {
                self.err("spec.activeDeadlineSeconds", e);
            }
        }
        self.template_names();
        self.entry_points();
        for (i, t) in s.templates.iter().enumerate() {
            self.template(i, t);
        }
        self.recursion();
    }

    /// One template: its kind, inputs and outputs, then the fields of its
    /// kind, retries, deadline, memoize and, for a DAG, its tasks.
    fn template(&mut self, i: usize, t: &'a Template) {
        let p = format!("spec.templates[{i}]");
        unsupported(
            &mut self.errors,
            &p,
            &[
                ("resource", &t.resource),
                ("containerSet", &t.container_set),
                ("http", &t.http),
                ("data", &t.data),
                ("plugin", &t.plugin),
                ("synchronization", &t.synchronization),
                ("sidecars", &t.sidecars),
                ("initContainers", &t.init_containers),
                ("daemon", &t.daemon),
                ("podSpecPatch", &t.pod_spec_patch),
                ("priority", &t.priority),
                ("priorityClassName", &t.priority_class_name),
                ("schedulerName", &t.scheduler_name),
                (
                    "automountServiceAccountToken",
                    &t.automount_service_account_token,
                ),
                ("executor", &t.executor),
                ("hostAliases", &t.host_aliases),
                ("failFast", &t.fail_fast),
                ("metrics", &t.metrics),
            ],
            "",
        );
        let kinds = [
            t.dag.is_some(),
            t.steps.is_some(),
            t.container.is_some(),
            t.script.is_some(),
            t.suspend.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if kinds == 0 && t.resource.is_none() {
            self.err(
                &p,
                format!(
                    "template {:?} has none of `dag`, `steps`, `container`, `script`, `suspend`",
                    t.name
                ),
            );
        } else if kinds > 1 {
            self.err(
                &p,
                format!(
                    "template {:?} must have exactly one of `dag`, `steps`, `container`, `script`, `suspend`",
                    t.name
                ),
            );
        }
        let leaf = !t.is_composite();
        let ctx = VarCtx {
            tmpl: t,
            dag: None,
            item: false,
            leaf,
            artifact: false,
            steps: false,
        };
        self.template_inputs(&p, t, ctx);
        self.template_outputs(&p, t, ctx);
        if let Some(c) = &t.container {
            self.container(&p, c, ctx);
        }
        if let Some(s) = &t.script {
            self.script(&p, s, ctx);
        }
        if let Some(r) = &t.retry_strategy {
            self.retry_strategy(&p, r);
        }
        if let Some(d) = &t.active_deadline_seconds {
            if let Err(e) = positive_seconds(d) {
                self.err(format!("{p}.activeDeadlineSeconds"), e);
            }
        }
        if let Some(n) = &t.parallelism {
            self.parallelism(&format!("{p}.parallelism"), n);
        }
        if let Some(d) = &t.timeout {
            if t.is_composite() {
                self.err(format!("{p}.timeout"), "Argo applies `timeout` to container and script templates; use `activeDeadlineSeconds` on a dag or steps template");
            } else if let Err(e) = parse_duration_ms(&d.0) {
                self.err(format!("{p}.timeout"), e);
            }
        }
        if let Some(m) = &t.memoize {
            self.memoize(&p, m, leaf, ctx);
        }
        if let Some(d) = &t.dag {
            self.dag(&p, t, d);
        }
        if let Some(groups) = &t.steps {
            self.steps(&p, t, groups);
        }
        if let Some(s) = &t.suspend {
            self.suspend(&p, t, s, ctx);
        }
    }
}
