//! Pipelines: the Argo-style DAG workflow format and its run state machine (filled in by the pipelines work).
