//! Pipelines: the Argo-style DAG workflow format and its run state machine.
pub mod expr;
pub mod spec;
pub mod validate;
pub mod vars;

pub use spec::{parse_workflow, Workflow};
