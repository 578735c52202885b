//! What every gpuctl process shares:
//!
//! - [`api`]: the object model (Job, Node) users write and read, with strict
//!   parsing and validation that name the file, field path and reason. Pure.
//! - [`manifest`]: documents (YAML files, JSON payloads) to objects of the kind
//!   they name.
//! - [`node`]: the `Node` object (a GPU host and its GPUs).
//! - [`endpoint`]: the `Endpoint` object (a model served by replica tasks).
//! - [`secret`]: the `Secret` object and how tasks refer to it.
//! - [`autoscaler`]: the pure KPA-style replica decision the endpoint controller runs.
//! - [`artifact`]: the artifact store trait and its key and error types, shared
//!   by the pipeline engine and the node daemon's store.

pub mod api;
pub mod artifact;
pub mod autoscaler;
pub mod endpoint;
pub mod manifest;
pub mod node;
pub mod queue;
pub mod secret;

/// Milliseconds since the Unix epoch by the wall clock (for timestamps shown
/// to users; never for measuring durations).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
