//! What one Raft `Ready` does to a replica: send the leader's messages →
//! install a snapshot → note read states → persist new entries and the
//! hard state → send the messages that needed them persisted → apply
//! committed entries (`State::apply`, then the changed objects and the
//! applied index to RocksDB) → `advance()` and apply what that commits →
//! answer reads → compact the log. (raft-rs's example applies before it
//! persists; it allows either, and persisting first sends a follower's
//! acknowledgement without waiting for its apply.)
//!
//! Both the driver thread and the in-process test harness run exactly this.

use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType};
use raft::StateRole;

use super::handle::ProposeError;
use super::replica::{Outbox, Replica};
use super::storage::{read_snapshot, StoreError};
use crate::state::{Applied, ApplyError, Envelope, ObjKey};

impl Replica {
    /// Process the pending Ready, if any; messages go to `out`.
    pub(super) fn on_ready(&mut self, out: &mut dyn Outbox) -> Result<(), StoreError> {
        // A ReadIndex request in flight when the term or leader changes may
        // have gone to a replica that died: fail it (reads are safe to retry)
        // rather than let it wait out its timeout.
        let era = (self.node.raft.term, self.node.raft.leader_id);
        if era != self.era {
            self.era = era;
            self.drop_lease();
            for r in self.reads.drain().flat_map(|(_, rs)| rs) {
                let _ = r.send(Err(ProposeError::NotLeader {
                    leader: Some(era.1).filter(|l| *l != 0),
                }));
            }
        }
        self.flush_requests();
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = self.node.ready();
        if let Some(ss) = ready.ss() {
            if ss.raft_state != StateRole::Leader
                && !(self.pending.is_empty() && self.reads.is_empty())
            {
                let leader = Some(ss.leader_id).filter(|l| *l != 0);
                self.fail_all(ProposeError::NotLeader { leader });
            }
        }
        if !ready.messages().is_empty() {
            out.send(ready.take_messages());
        }
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            self.install_snapshot(&snap)?;
        }
        for rs in ready.take_read_states() {
            let id = self.request_id(&rs.request_ctx);
            if let Some(id) = id {
                self.round_confirmed(id);
            }
            if let Some(replies) = id.and_then(|id| self.reads.remove(&id)) {
                self.waiting_reads
                    .extend(replies.into_iter().map(|r| (rs.index, r)));
            }
        }
        // New entries are stored, and the messages that wait for them
        // (a follower's acknowledgement, a vote) sent, before the committed
        // entries are applied: applying is the longest step of a Ready, and
        // the leader's next commit waits for those acknowledgements (and
        // for its own stored entries), not for this replica's apply.
        // raft-rs allows committed entries to be applied anywhere before
        // `advance`; the commit index stored with the hard state first is
        // never below the applied index stored after.
        let hs = ready.hs().cloned();
        if !ready.entries().is_empty() || hs.is_some() {
            let start = std::time::Instant::now();
            self.storage
                .append(ready.entries(), hs.as_ref(), ready.must_sync())?;
            self.shared
                .metrics
                .raft_append_seconds
                .observe(start.elapsed().as_secs_f64());
        }
        if !ready.persisted_messages().is_empty() {
            out.send(ready.take_persisted_messages());
        }
        let committed = ready.take_committed_entries();
        self.apply_entries(committed, None)?;
        let mut light = self.node.advance(ready);
        let commit = light.commit_index();
        out.send(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_entries(committed, commit)?;
        self.node.advance_apply();
        self.release_reads();
        self.publish_status();
        self.maybe_compact()?;
        Ok(())
    }

    /// Replace the stored and the in-memory state with a leader's snapshot.
    /// The objects are written to RocksDB on a second thread while this one
    /// decodes them into state (each about as long as the other); the state
    /// is swapped in once both are done.
    fn install_snapshot(&mut self, snap: &raft::prelude::Snapshot) -> Result<(), StoreError> {
        use std::time::Instant;
        let start = Instant::now();
        let rec = read_snapshot(snap)?;
        let read = start.elapsed();
        let storage = &self.storage;
        let (stored, state) = std::thread::scope(|s| {
            let store = s.spawn(|| {
                let t = Instant::now();
                storage
                    .store_snapshot(snap.get_metadata(), &rec.objects)
                    .map(|()| t.elapsed())
            });
            let t = Instant::now();
            let state = rec.state().map(|st| (st, t.elapsed()));
            let stored = store
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (stored, state)
        });
        let (stored, (state, loaded)) = (stored?, state?);
        tracing::info!(
            "installed a snapshot at index {} ({} jobs, {} nodes, {} queues; {} MiB, read in \
             {:.2} s, then stored in {:.2} s alongside loaded in {:.2} s)",
            rec.applied,
            state.jobs.len(),
            state.nodes.len(),
            state.queues.len(),
            snap.data.len() >> 20,
            read.as_secs_f64(),
            stored.as_secs_f64(),
            loaded.as_secs_f64()
        );
        *self.shared.state.write().unwrap_or_else(|p| p.into_inner()) = state;
        self.applied = rec.applied;
        self.last_compact_check = rec.applied;
        self.shared.version.send_replace(self.applied);
        Ok(())
    }

    fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
        commit: Option<u64>,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            if let Some(c) = commit {
                self.storage.persist_applied(self.applied, Some(c), &[])?;
            }
            return Ok(());
        }
        let mut replies = Vec::new();
        let dirty: Vec<(ObjKey, Option<Vec<u8>>)>;
        {
            let shared = self.shared.clone();
            let mut state = shared.state.write().unwrap_or_else(|p| p.into_inner());
            for e in &entries {
                self.applied = e.index;
                match e.get_entry_type() {
                    EntryType::EntryNormal => {
                        if e.data.is_empty() {
                            continue; // a new leader's empty entry
                        }
                        let result = match serde_json::from_slice::<Envelope>(&e.data) {
                            Ok(env) => state.apply(e.index, &env).map_err(ProposeError::from),
                            Err(err) => {
                                // Never fails for entries this build wrote; an
                                // entry from an incompatible build is skipped
                                // the same way on every replica.
                                tracing::error!(
                                    "skipping undecodable log entry {}: {err}",
                                    e.index
                                );
                                Err(ProposeError::Storage(format!("undecodable entry: {err}")))
                            }
                        };
                        if let Some(reply) = self.take_reply(&e.context) {
                            replies.push((reply, result));
                        }
                    }
                    EntryType::EntryConfChange => {
                        let mut cc = ConfChange::default();
                        let result = match cc.merge_from_bytes(&e.data) {
                            Ok(()) => self.apply_membership(&cc),
                            Err(err) => Err(ProposeError::Storage(format!(
                                "undecodable configuration change: {err}"
                            ))),
                        };
                        if let Some(reply) = self.take_reply(&e.context) {
                            replies.push((reply, result));
                        }
                    }
                    EntryType::EntryConfChangeV2 => {
                        let mut cc = ConfChangeV2::default();
                        if cc.merge_from_bytes(&e.data).is_ok() {
                            if let Ok(cs) = self.node.apply_conf_change(&cc) {
                                self.storage.set_conf_state(cs)?;
                            }
                        }
                    }
                }
            }
            dirty = state
                .take_dirty()
                .into_iter()
                .map(|k| {
                    let v = state.object_json(&k);
                    (k, v)
                })
                .collect();
        }
        // With the applied index, a commit index at least as high, in the
        // same write: entries are applied before this Ready's hard state is
        // stored, and a restart between the two must not find applied
        // above commit (Raft refuses to start so).
        let commit = Some(commit.unwrap_or(0).max(self.applied));
        self.storage.persist_applied(self.applied, commit, &dirty)?;
        self.shared.version.send_replace(self.applied);
        if !replies.is_empty() {
            // A caller answered now may read the status next (a membership
            // change answers with the voters): let it see what it waited for.
            self.publish_status();
        }
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
        Ok(())
    }

    /// Apply a committed configuration change: Raft's voters, the stored
    /// configuration, and the replica addresses it carries.
    fn apply_membership(&mut self, cc: &ConfChange) -> Result<Applied, ProposeError> {
        let cs = self.node.apply_conf_change(cc).map_err(|e| {
            ProposeError::Rejected(ApplyError::Invalid(format!("configuration change: {e}")))
        })?;
        self.storage
            .set_conf_state(cs)
            .map_err(|e| ProposeError::Storage(e.to_string()))?;
        let mut addrs = self
            .storage
            .peer_addresses()
            .map_err(|e| ProposeError::Storage(e.to_string()))?;
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                if let Ok(url) = std::str::from_utf8(&cc.context) {
                    if !url.is_empty() {
                        addrs.insert(cc.node_id, url.to_string());
                    }
                }
            }
            ConfChangeType::RemoveNode => {
                addrs.remove(&cc.node_id);
            }
        }
        self.storage
            .set_peer_addresses(&addrs)
            .map_err(|e| ProposeError::Storage(e.to_string()))?;
        tracing::info!(
            "membership changed: {:?} replica {}; replicas {addrs:?}",
            cc.get_change_type(),
            cc.node_id
        );
        self.shared.members.send_replace(addrs);
        Ok(Applied::Nothing)
    }

    fn maybe_compact(&mut self) -> Result<(), StoreError> {
        if self.applied < self.last_compact_check + self.opts.compact_after {
            return Ok(());
        }
        self.last_compact_check = self.applied;
        // Keep the newest `compact_after / 2` applied entries for slow readers.
        let keep = self.opts.compact_after / 2;
        if self.storage.log_len() as u64 > keep {
            self.storage
                .compact(self.applied.saturating_sub(keep).max(1))?;
        }
        Ok(())
    }
}
