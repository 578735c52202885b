//! The run state machine: one workflow run as plain data plus the rules that
//! move it forward. No I/O and no clock: the shell passes `now_ms` into every
//! call, launches what [`Run::ready_steps`] returns, reports what finished
//! with [`Run::on_step_finished`], calls [`Run::on_tick`] for deadlines and
//! retry backoff, and persists the whole [`Run`] (it is serde-serializable) so
//! that a new leader resumes where the old one stopped.
//!
//! Nodes follow Argo's status tree: a `DAG` node per DAG invocation, a
//! `Steps` node per steps invocation with a `StepGroup` per group (`wf[0]`,
//! its steps `wf[0].a`), a
//! `TaskGroup` per fan-out task (children `A(0:foo)`, `A(1:bar)`), a `Retry`
//! node per leaf with a `retryStrategy` (children are attempts `A(0)`,
//! `A(1)`), `Pod` nodes for the steps that actually run, and `Skipped` nodes
//! for tasks whose `when` was false (phase Skipped) or whose `depends` can no
//! longer hold (phase Omitted), and `Suspend` nodes for `suspend` templates. Node ids are Argo node names
//! (`wf.outer.inner(0:a)`), which makes them stable step ids.
//!
//! This module only declares its parts and re-exports the public ones; the
//! parts depend on each other in one direction, from the shell-facing calls
//! down to the data:
//!
//! ```text
//!  events   what the shell calls: ready_steps, on_step_finished, on_tick, terminate
//!  view     the status tree for `describe`
//!    │
//!  walk     reconcile: move every node forward; top-level and template nodes
//!  ├ dag    a DAG node: start the tasks whose turn has come, then assess it
//!  ├ steps  a Steps node: its groups one after another (Argo's `steps`)
//!  │ └ task one task or step: fan-out, `when`, arguments, its nodes
//!  │   hooks a task's or step's exit handler (`onExit`, `hooks.exit`)
//!  ├ retry  a Retry node: conclude or schedule the next attempt
//!  ├ suspend a Suspend node; suspending and resuming the whole run
//!  launch   a Pod node's fully substituted launch spec
//!  scope    the `{{...}}` variables and artifacts in reach of a node
//!  artifact_sources  `raw` artifacts and `fromExpression`
//!    │
//!  state    the Run record, its stored forms, and node bookkeeping
//!  graph    per-DAG-template structure derived once from the spec
//!  step     what crosses to the shell: StepToLaunch, StepOutcome, Tick, RunError
//!  node     the status tree's node types
//! ```

mod artifact_sources;
mod dag;
mod events;
mod graph;
mod hooks;
mod launch;
pub(crate) mod node;
mod retry;
mod scope;
mod state;
mod step;
mod steps;
mod suspend;
mod task;
mod view;
mod walk;

pub use launch::step_resources;
pub use node::{InputArtifact, Node, NodeInputs, NodeOutputs, NodePhase, NodeType, WorkflowPhase};
pub use state::{Run, RunHeader, RunWithoutNodes};
pub use step::{
    OutputArtifactSpec, OutputParameterSpec, RunError, StepOutcome, StepPhase, StepResources,
    StepToLaunch, Tick,
};
pub use task::format_sequence_item;
pub use view::{NodeView, WorkflowStatus};
