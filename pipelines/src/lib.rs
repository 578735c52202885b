//! Pipelines: Argo Workflows DAG workflows for gpuctl — parse, validate,
//! expand, and run them as a pure state machine.
//!
//! An ML engineer's existing Argo `Workflow` (`kind: Workflow`, `dag`
//! templates, `container`/`script` leaves) runs unchanged: each leaf becomes
//! a gpuctl job. This crate does no I/O: no tokio, sockets, clock or process
//! spawning. Time comes in as `now_ms`; randomness (a `generateName` suffix)
//! comes in as a string. The scheduler's pipeline controller is the shell.
//!
//! ```text
//!  wf.yaml ──parse_workflow()──► Workflow ──Run::new(wf, name, args, now)──► Run
//!            spec/: strict serde      │                                       │
//!            validate/: graph,        │ errors: ManifestError                 │ serde: persisted in
//!            cycles, {{vars}},        ▼ "wf.yaml: spec.templates[1]           │ the Raft state; a new
//!            depends/when syntax        .dag.tasks[2].depends: ..."           │ leader deserializes it
//!                                                                             ▼
//!   shell (pipeline controller)                                   run/: the state machine
//!   ┌──────────────────────────────────────────────────────────────────────────────────────┐
//!   │ loop {                                                                               │
//!   │   for step in run.ready_steps(now, &mut cache)   // StepToLaunch: id, argv, env,     │
//!   │       launch a gpuctl job named step.id          //   script source, gpus/cpu/mem,   │
//!   │       (get step.input_artifacts from the store)  //   attempt, memoize key           │
//!   │   on job end: put output artifacts in the store;                                     │
//!   │       run.on_step_finished(id, StepOutcome{phase, exit code, params, result,         │
//!   │                                            artifacts}, now, &mut cache)              │
//!   │   let t = run.on_tick(now)        // deadlines, retry backoff → t.cancel (jobs to    │
//!   │   stop t.cancel; sleep until t.next_wakeup_ms or the next job event   //  stop)      │
//!   │   persist run; show run.status() in `gpuctl describe workflow`                       │
//!   │ } until run.phase() is terminal                                                      │
//!   └──────────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Inside the run, DAG nodes expand lazily as their dependencies finish:
//! nested DAGs, `withItems`/`withParam` fan-out (`A(0:foo)`), `when`
//! (Skipped), `depends` (Omitted when it can no longer hold), `target`,
//! retries (`A(0)`, `A(1)` after the backoff), `failFast`, `continueOn`,
//! deadlines, memoization through a [`MemoCache`], and the `onExit` handler
//! with `{{workflow.status}}`. Artifacts are tracked by [`ArtifactKey`]; the
//! bytes live in an [`ArtifactStore`] the shell owns.
//!
//! Modules: [`spec`] (the document, parsing), [`validate`] (static checks),
//! [`expr`] (`depends` and `when`), [`vars`] (`{{...}}`), [`run`] (the state
//! machine), [`store`] (the memo cache trait, in-memory stores, and the
//! artifact store trait re-exported from `gpuctl_common::artifact`, where
//! the node daemon's store finds it without this crate). [`parse_workflow`]
//! lives here because it joins parsing and validation.

pub mod cron;
pub mod expr;
pub mod resolve;
pub mod run;
pub mod spec;
pub mod store;
pub mod validate;
pub mod vars;

pub use run::step_resources;
pub use run::{
    InputArtifact, Node, NodeInputs, NodeOutputs, NodePhase, NodeType, NodeView,
    OutputArtifactSpec, OutputParameterSpec, Run, RunError, RunHeader, RunWithoutNodes,
    StepOutcome, StepPhase, StepResources, StepToLaunch, Tick, WorkflowPhase, WorkflowStatus,
};
pub use spec::Workflow;
pub use store::{
    ArtifactError, ArtifactKey, ArtifactStore, InMemoryArtifactStore, MemoCache, MemoEntry, NoCache,
};
pub use validate::validate_all;

use gpuctl_common::api::ManifestError;
use gpuctl_common::manifest::Document;

/// Parse one Argo `Workflow` from YAML (or JSON) text and validate it.
///
/// `source_name` (a file name, `<stdin>`, …) appears in errors. Validation
/// stops at the first problem; [`validate_all`] lists all.
pub fn parse_workflow(source_name: &str, text: &str) -> Result<Workflow, ManifestError> {
    let wf = spec::parse_unvalidated(text).map_err(|e| e.in_source(source_name, 0))?;
    validated(source_name, wf)
}

/// [`parse_workflow`] of a document already read, so that an API payload
/// whose kind was looked up is not read a second time.
pub fn parse_workflow_document(
    source_name: &str,
    doc: Document,
) -> Result<Workflow, ManifestError> {
    let wf = spec::from_document(doc).map_err(|e| e.in_source(source_name, 0))?;
    validated(source_name, wf)
}

/// A `WorkflowTemplate` or `ClusterWorkflowTemplate` document, checked like
/// a workflow (its `entrypoint` may be left to the workflows that use it)
/// and named with `metadata.name`. Its `templateRef`s are checked when it
/// is stored, against the templates stored then ([`resolve`]).
pub fn parse_workflow_template_document(
    source_name: &str,
    doc: Document,
) -> Result<Workflow, ManifestError> {
    let wf = spec::from_document_as(doc, &["WorkflowTemplate", "ClusterWorkflowTemplate"])
        .map_err(|e| e.in_source(source_name, 0))?;
    let name = wf.metadata.name.clone().unwrap_or_default();
    gpuctl_common::api::validate_name("metadata.name", &name)
        .map_err(|e| e.in_source(source_name, 0))?;
    validated(source_name, wf)
}

/// The workflow, or the first problem [`validate_all`] finds in it.
fn validated(source_name: &str, wf: Workflow) -> Result<Workflow, ManifestError> {
    if let Some(e) = validate_all(&wf).into_iter().next() {
        return Err(e.in_source(source_name, 0));
    }
    Ok(wf)
}
