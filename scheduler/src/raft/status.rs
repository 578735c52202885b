//! What this replica's Raft node reports about itself: its role, term and
//! indexes, and on the leader each peer's replication progress. Read by
//! `gpuctl cluster status` and the metrics.

/// Raft status of this replica, for `gpuctl cluster status` and metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RaftStatus {
    pub id: u64,
    pub leader_id: u64,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub role: String,
    pub voters: Vec<u64>,
    /// Replication progress of each peer; filled in on the leader only.
    pub progress: Vec<PeerProgress>,
    /// This replica leads and has applied an entry of its own term, so its
    /// state holds every write acknowledged before (by it or by earlier
    /// leaders): a write proposed here in this term may be checked against
    /// it without a ReadIndex round (`Proposer::write_fence`).
    pub current_term_applied: bool,
}

/// How far one peer's log is, as the leader sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerProgress {
    pub id: u64,
    pub matched: u64,
    pub next_index: u64,
    pub state: String,
    pub recent_active: bool,
}

impl RaftStatus {
    pub fn is_leader(&self) -> bool {
        self.role == "Leader"
    }
}
