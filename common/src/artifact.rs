//! The artifact store interface: the key of one artifact, the store's
//! errors, and the trait a store implements. It lives here, with no I/O, so
//! that the node daemon (which keeps artifacts in a folder) and the pipeline
//! engine (which tracks them by key) share it without depending on each other.

use serde::{Deserialize, Serialize};

/// Where one artifact lives: the workflow run, the step (node id) that
/// produced it, and its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactKey {
    pub workflow: String,
    pub step: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact {name:?} of step {step:?} in workflow {workflow:?} not found")]
    NotFound {
        workflow: String,
        step: String,
        name: String,
    },
    #[error("artifact store: {0}")]
    Io(String),
}

/// Artifact bytes by (workflow, step, name). After a step succeeds the
/// shell `put`s each output artifact it finds at the declared path; before a
/// step starts it `get`s each input artifact and writes it to its path.
pub trait ArtifactStore {
    fn put(&mut self, key: &ArtifactKey, data: Vec<u8>) -> Result<(), ArtifactError>;
    fn get(&self, key: &ArtifactKey) -> Result<Vec<u8>, ArtifactError>;
    fn contains(&self, key: &ArtifactKey) -> bool;
    /// Forget everything a workflow run stored (when it is deleted).
    fn delete_workflow(&mut self, workflow: &str) -> Result<(), ArtifactError>;
}
