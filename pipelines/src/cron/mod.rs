//! Argo's `CronWorkflow`: a workflow spec run on a schedule. This module
//! is the document (strict serde, like [`crate::spec`]), its checks, and
//! the workflow one scheduled time creates; [`schedule`] finds the times.
//! Deciding when to run, and what to do with runs still going, is the
//! scheduler's (a leader-only controller, its decisions in the Raft log).

pub mod schedule;
pub mod stop;

use std::collections::BTreeMap;

use gpuctl_common::api::{validate_name, FieldError, ManifestError};
use gpuctl_common::manifest::Document;
use serde::{Deserialize, Serialize};

use crate::spec::{Ignored, Unsupported, Workflow, WorkflowMeta, WorkflowSpec, ARGO_API_VERSION};
pub use schedule::{rfc3339, time_zone, CronSchedule, Schedule};
pub use stop::{Counts, StopStrategy};

/// The label Argo puts on the workflows a CronWorkflow creates.
pub const LABEL_CRON_WORKFLOW: &str = "workflows.argoproj.io/cron-workflow";
/// The annotation with the scheduled time of a workflow a CronWorkflow made.
pub const ANNOTATION_SCHEDULED_TIME: &str = "workflows.argoproj.io/scheduled-time";
/// A CronWorkflow's name leaves room for `-<unix seconds>` in its
/// workflows' names (Argo's limit too).
pub const MAX_CRON_NAME_LEN: usize = 52;

/// An Argo `CronWorkflow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CronWorkflow {
    pub api_version: String,
    pub kind: String,
    pub metadata: WorkflowMeta,
    pub spec: CronWorkflowSpec,
    #[serde(default, skip_serializing)]
    pub status: Ignored,
}

/// What to do when a run is due while earlier ones still run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ConcurrencyPolicy {
    /// Start it anyway.
    #[default]
    Allow,
    /// Skip it.
    Forbid,
    /// Stop the running ones, then start it.
    Replace,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CronWorkflowSpec {
    /// One cron expression (before Argo 3.6; still accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Cron expressions: a run at each time any of them names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<String>,
    /// IANA time zone of the schedules; absent: the scheduler's local zone
    /// (Argo: the controller's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<ConcurrencyPolicy>,
    /// A run noticed later than this after its time is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<i64>,
    /// Succeeded workflows kept (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful_jobs_history_limit: Option<i64>,
    /// Failed workflows kept (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_jobs_history_limit: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    pub workflow_spec: WorkflowSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_metadata: Option<CronWorkflowMetadata>,
    /// Stop scheduling once this holds (Argo 3.6 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_strategy: Option<StopStrategy>,
    /// Run a scheduled time only when this holds (Argo 3.6 and later);
    /// not supported yet.
    #[serde(default, skip_serializing)]
    pub when: Unsupported,
}

/// `workflowMetadata`: labels and annotations of the workflows it makes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CronWorkflowMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing)]
    pub name: Ignored,
    #[serde(default, skip_serializing)]
    pub generate_name: Ignored,
    #[serde(default, skip_serializing)]
    pub namespace: Ignored,
}

impl CronWorkflow {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }

    /// `schedules`, or the one `schedule`.
    pub fn schedule_exprs(&self) -> Vec<String> {
        let mut v = self.spec.schedules.clone();
        if let Some(s) = &self.spec.schedule {
            v.push(s.clone());
        }
        v
    }

    /// The schedules in their time zone; without `timezone`, in `local`
    /// (Argo: the controller's local time zone).
    pub fn schedule_in(&self, local: &jiff::tz::TimeZone) -> Result<CronSchedule, String> {
        match self.spec.timezone.as_deref() {
            Some(tz) if !tz.is_empty() => CronSchedule::new(&self.schedule_exprs(), tz),
            _ => CronSchedule::in_zone(&self.schedule_exprs(), local.clone()),
        }
    }

    pub fn concurrency_policy(&self) -> ConcurrencyPolicy {
        self.spec.concurrency_policy.unwrap_or_default()
    }

    /// Succeeded and failed workflows to keep.
    pub fn history_limits(&self) -> (usize, usize) {
        let lim = |v: Option<i64>, d: usize| v.map_or(d, |n| n.max(0) as usize);
        (
            lim(self.spec.successful_jobs_history_limit, 3),
            lim(self.spec.failed_jobs_history_limit, 1),
        )
    }

    /// The workflow run for the time `scheduled_s` (Unix seconds): named
    /// `NAME-<scheduled_s>`, labelled with the CronWorkflow's name and
    /// annotated with the time, as Argo does.
    pub fn workflow_at(&self, scheduled_s: i64) -> Workflow {
        let meta = self.spec.workflow_metadata.clone().unwrap_or_default();
        let mut labels = meta.labels;
        labels.insert(LABEL_CRON_WORKFLOW.to_string(), self.name().to_string());
        let mut annotations = meta.annotations;
        annotations.insert(ANNOTATION_SCHEDULED_TIME.to_string(), rfc3339(scheduled_s));
        Workflow {
            api_version: ARGO_API_VERSION.to_string(),
            kind: "Workflow".to_string(),
            metadata: WorkflowMeta {
                name: Some(format!("{}-{scheduled_s}", self.name())),
                labels,
                annotations,
                ..Default::default()
            },
            spec: self.spec.workflow_spec.clone(),
            status: None,
        }
    }
}

/// Parse a `CronWorkflow` document and check it: the schedules and time
/// zone, the limits, and its `workflowSpec` as a workflow
/// (`spec.workflowSpec.templates[0]...` in errors).
pub fn parse_cron_workflow_document(
    source_name: &str,
    doc: Document,
) -> Result<CronWorkflow, ManifestError> {
    let e = |e: FieldError| e.in_source(source_name, 0);
    crate::spec::check_header(&doc, &["CronWorkflow"]).map_err(e)?;
    let c: CronWorkflow = serde_path_to_error::deserialize(doc).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        e(FieldError::new(path, err.into_inner().to_string()))
    })?;
    if let Some(first) = validate_cron(&c).into_iter().next() {
        return Err(e(first));
    }
    Ok(c)
}

/// Every problem of a CronWorkflow, in document order.
pub fn validate_cron(c: &CronWorkflow) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match &c.metadata.name {
        None => errors.push(FieldError::new(
            "metadata.name",
            "missing: a CronWorkflow is named with `name` (its workflows are NAME-<unix seconds>)",
        )),
        Some(n) => {
            if let Err(err) = validate_name("metadata.name", n) {
                errors.push(err);
            } else if n.len() > MAX_CRON_NAME_LEN {
                errors.push(FieldError::new(
                    "metadata.name",
                    format!("{n:?} is longer than {MAX_CRON_NAME_LEN} characters (its workflows add -<unix seconds>)"),
                ));
            }
        }
    }
    let s = &c.spec;
    match (&s.schedule, s.schedules.is_empty()) {
        (None, true) => errors.push(FieldError::new(
            "spec.schedules",
            "missing: at least one cron schedule, e.g. `schedules: [\"0 2 * * *\"]`",
        )),
        (Some(_), false) => errors.push(FieldError::new(
            "spec.schedule",
            "use either `schedule` or `schedules`, not both",
        )),
        _ => {}
    }
    if let Some(x) = &s.schedule {
        if let Err(why) = Schedule::parse(x) {
            errors.push(FieldError::new("spec.schedule", why));
        }
    }
    for (i, x) in s.schedules.iter().enumerate() {
        if let Err(why) = Schedule::parse(x) {
            errors.push(FieldError::new(format!("spec.schedules[{i}]"), why));
        }
    }
    if let Some(tz) = &s.timezone {
        if let Err(why) = time_zone(tz) {
            errors.push(FieldError::new("spec.timezone", why));
        }
    }
    for (field, v) in [
        ("startingDeadlineSeconds", s.starting_deadline_seconds),
        (
            "successfulJobsHistoryLimit",
            s.successful_jobs_history_limit,
        ),
        ("failedJobsHistoryLimit", s.failed_jobs_history_limit),
    ] {
        if v.is_some_and(|n| n < 0) {
            errors.push(FieldError::new(
                format!("spec.{field}"),
                "must not be negative",
            ));
        }
    }
    if let Some(st) = &s.stop_strategy {
        for (field, why) in st.problems() {
            errors.push(FieldError::new(format!("spec.stopStrategy.{field}"), why));
        }
    }
    if s.when.is_some() {
        errors.push(FieldError::new(
            "spec.when",
            "`when` on a CronWorkflow is not supported yet by gpuctl; see README",
        ));
    }
    // The workflow it makes, checked as one (a template reference is
    // checked when a run is created).
    let wf = c.workflow_at(0);
    for mut err in crate::validate::validate_all(&wf) {
        if let Some(rest) = err.path.strip_prefix("spec") {
            err.path = format!("spec.workflowSpec{rest}");
        }
        errors.push(err);
    }
    errors
}
