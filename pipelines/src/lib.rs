//! Pipelines: the Argo-style DAG workflow format and its run state machine.
pub mod expr;
pub mod run;
pub mod spec;
pub mod store;
pub mod validate;
pub mod vars;

pub use run::{
    Node, NodeInputs, NodeOutputs, NodePhase, NodeType, NodeView, Run, RunError, StepOutcome,
    StepPhase, StepResources, StepToLaunch, Tick, WorkflowPhase, WorkflowStatus,
};
pub use spec::{parse_workflow, Workflow};
pub use store::{
    ArtifactError, ArtifactKey, ArtifactStore, InMemoryArtifactStore, MemoCache, MemoEntry, NoCache,
};
pub use validate::validate_all;
