//! The two stores a run talks to through the shell: artifacts (bytes a step
//! produced) and the memoization cache (outputs of earlier steps by key).
//! Both are small traits with in-memory versions for tests; the filesystem
//! or Raft-backed versions belong to the shells. The artifact trait and its
//! key and error types live in `gpuctl_common::artifact` (the node daemon's
//! store implements it without this crate) and are re-exported here.

use std::collections::BTreeMap;

pub use gpuctl_common::artifact::{ArtifactError, ArtifactKey, ArtifactStore};
use serde::{Deserialize, Serialize};

use crate::run::node::NodeOutputs;

/// An [`ArtifactStore`] in memory.
#[derive(Debug, Clone, Default)]
pub struct InMemoryArtifactStore {
    items: BTreeMap<ArtifactKey, Vec<u8>>,
}

impl InMemoryArtifactStore {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl ArtifactStore for InMemoryArtifactStore {
    fn put(&mut self, key: &ArtifactKey, data: Vec<u8>) -> Result<(), ArtifactError> {
        self.items.insert(key.clone(), data);
        Ok(())
    }
    fn get(&self, key: &ArtifactKey) -> Result<Vec<u8>, ArtifactError> {
        self.items
            .get(key)
            .cloned()
            .ok_or_else(|| ArtifactError::NotFound {
                workflow: key.workflow.clone(),
                step: key.step.clone(),
                name: key.name.clone(),
            })
    }
    fn contains(&self, key: &ArtifactKey) -> bool {
        self.items.contains_key(key)
    }
    fn delete_workflow(&mut self, workflow: &str) -> Result<(), ArtifactError> {
        self.items.retain(|k, _| k.workflow != workflow);
        Ok(())
    }
}

/// One memoized result: the outputs of a step that succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoEntry {
    /// When the step finished (ms since the epoch); `maxAge` counts from here.
    pub created_ms: u64,
    pub outputs: NodeOutputs,
    /// The step that produced it, for `describe`.
    pub step: String,
}

/// The memoization cache: `memoize.key` (after substitution) → outputs.
pub trait MemoCache {
    fn get(&self, key: &str) -> Option<MemoEntry>;
    fn put(&mut self, key: &str, entry: MemoEntry);
}

/// A map is a cache (what tests and a Raft-replicated table use).
impl MemoCache for BTreeMap<String, MemoEntry> {
    fn get(&self, key: &str) -> Option<MemoEntry> {
        BTreeMap::get(self, key).cloned()
    }
    fn put(&mut self, key: &str, entry: MemoEntry) {
        self.insert(key.to_string(), entry);
    }
}

/// No cache: every step runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCache;

impl MemoCache for NoCache {
    fn get(&self, _: &str) -> Option<MemoEntry> {
        None
    }
    fn put(&mut self, _: &str, _: MemoEntry) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_store_round_trip() {
        let mut s = InMemoryArtifactStore::new();
        let k = ArtifactKey {
            workflow: "wf".into(),
            step: "wf.train".into(),
            name: "model".into(),
        };
        assert!(matches!(s.get(&k), Err(ArtifactError::NotFound { .. })));
        s.put(&k, b"weights".to_vec()).unwrap();
        assert!(s.contains(&k));
        assert_eq!(s.get(&k).unwrap(), b"weights");
        s.delete_workflow("wf").unwrap();
        assert!(s.is_empty());
    }
}
