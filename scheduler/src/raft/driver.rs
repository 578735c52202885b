//! The Raft driver: one thread owns the `raft::RawNode` and runs the loop
//! raft-rs prescribes (tick/step/propose → `ready()` → send messages →
//! apply committed entries → persist entries and hard state → send
//! persisted messages → `advance()`).
//!
//! ```text
//!  async callers ──Propose(Envelope)──► driver thread ──► RawNode
//!        ▲                                   │ ready
//!        │ reply after commit + apply        ▼
//!        └──────────────────────────── State::apply ──► RocksDB (state cf)
//!                                           │
//!                              version watch (wakes controllers, watchers)
//! ```
//!
//! Proposals that arrive together are proposed together and persisted in
//! one synced write, so throughput does not cost one fsync per command.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Message};
use raft::{Config, RawNode, StateRole};
use tokio::sync::watch;

use super::handle::{Msg, ProposeError, RaftHandle, RaftOptions, ReadReply, Reply, Shared};
use super::status::{PeerProgress, RaftStatus};
use super::storage::{RaftStorage, StoreError};
use super::transport::Transport;
use crate::metrics::Metrics;
use crate::state::{Applied, ApplyError, Envelope, ObjKey, State};

/// A slog drain that forwards raft-rs's log lines to `tracing`.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;
    fn log(
        &self,
        record: &slog::Record<'_>,
        _values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", record.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            slog::Level::Info => tracing::info!(target: "raft", "{}", record.msg()),
            _ => tracing::debug!(target: "raft", "{}", record.msg()),
        }
        Ok(())
    }
}

/// Start the driver thread over opened storage.
pub fn start(
    opts: RaftOptions,
    storage: RaftStorage,
    state: State,
    applied: u64,
    metrics: Metrics,
    transport: Option<Transport>,
) -> Result<(RaftHandle, std::thread::JoinHandle<()>), StoreError> {
    if !storage.is_initialized() && !opts.join {
        let voters = if opts.initial_voters.is_empty() {
            vec![opts.id]
        } else {
            opts.initial_voters.clone()
        };
        storage.initialize(&voters)?;
    }
    let (version, _) = watch::channel(applied);
    let (members, _) = watch::channel(storage.peer_addresses()?);
    let shared = Arc::new(Shared {
        state: RwLock::new(state),
        status: Mutex::new(RaftStatus {
            id: opts.id,
            applied,
            ..Default::default()
        }),
        version,
        members,
        metrics,
    });
    let cfg = Config {
        id: opts.id,
        election_tick: 12,
        heartbeat_tick: 2,
        applied,
        pre_vote: true,
        check_quorum: true,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        ..Default::default()
    };
    let logger = slog::Logger::root(TracingDrain, slog::o!("raft_id" => opts.id));
    let node = RawNode::new(&cfg, storage.clone(), &logger).map_err(|e| StoreError::Corrupt {
        what: "raft state".into(),
        detail: e.to_string(),
    })?;
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = RaftHandle {
        tx,
        shared: shared.clone(),
        propose_timeout: opts.propose_timeout,
    };
    let mut driver = Driver {
        node,
        storage,
        shared,
        opts,
        pending: HashMap::new(),
        reads: HashMap::new(),
        era: (0, 0),
        waiting_reads: Vec::new(),
        transport,
        next_id: 0,
        incarnation: incarnation(),
        applied,
        last_compact_check: applied,
    };
    let thread = std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || driver.run(rx))
        .map_err(|e| StoreError::Corrupt {
            what: "raft thread".into(),
            detail: e.to_string(),
        })?;
    Ok((handle, thread))
}

/// Distinguishes this process's proposal ids from those of an earlier run
/// whose entries may still be replayed.
fn incarnation() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

struct Driver {
    node: RawNode<RaftStorage>,
    storage: RaftStorage,
    shared: Arc<Shared>,
    opts: RaftOptions,
    /// Proposals of this process waiting for apply, by id.
    pending: HashMap<u64, Reply>,
    /// (term, leader) when last looked at, to notice elections.
    era: (u64, u64),
    /// ReadIndex requests waiting for their read state, by id.
    reads: HashMap<u64, ReadReply>,
    /// Read states waiting for `applied` to reach their index.
    waiting_reads: Vec<(u64, ReadReply)>,
    transport: Option<Transport>,
    next_id: u64,
    incarnation: u64,
    applied: u64,
    last_compact_check: u64,
}

impl Driver {
    fn run(&mut self, rx: Receiver<Msg>) {
        let single_voter = self.storage.conf_state().voters == vec![self.opts.id];
        if single_voter {
            // No one to wait for: become leader at once instead of after an election timeout.
            let _ = self.node.campaign();
        }
        let mut next_tick = Instant::now() + self.opts.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = match rx.recv_timeout(wait) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut stop = false;
            if let Some(m) = first {
                stop |= self.handle(m);
                // Batch whatever else is already queued.
                for _ in 0..4096 {
                    match rx.try_recv() {
                        Ok(m) => stop |= self.handle(m),
                        Err(_) => break,
                    }
                }
            }
            if Instant::now() >= next_tick {
                self.node.tick();
                next_tick = Instant::now() + self.opts.tick;
            }
            if let Err(e) = self.on_ready() {
                tracing::error!("raft storage failed, stopping the replica: {e}");
                self.fail_all(ProposeError::Storage(e.to_string()));
                break;
            }
            if stop {
                break;
            }
        }
        self.fail_all(ProposeError::Shutdown);
    }

    /// Returns true on shutdown.
    fn handle(&mut self, m: Msg) -> bool {
        match m {
            Msg::Shutdown => true,
            Msg::Step(m) => {
                if self.transport.as_ref().is_some_and(|t| t.is_cut_off()) {
                    return false; // a simulated partition drops incoming traffic too
                }
                if let Err(e) = self.node.step(*m) {
                    tracing::debug!("dropping raft message: {e}");
                }
                false
            }
            Msg::Unreachable(id) => {
                self.node.report_unreachable(id);
                false
            }
            Msg::ReadIndex(reply) => {
                if self.node.raft.leader_id == 0 {
                    let _ = reply.send(Err(ProposeError::NotLeader { leader: None }));
                    return false;
                }
                self.next_id += 1;
                let id = self.next_id;
                self.reads.insert(id, reply);
                self.node.read_index(self.context(id));
                false
            }
            Msg::ConfChange { cc, reply } => {
                if self.node.raft.state != StateRole::Leader {
                    let leader = Some(self.node.raft.leader_id).filter(|l| *l != 0);
                    let _ = reply.send(Err(ProposeError::NotLeader { leader }));
                    return false;
                }
                self.next_id += 1;
                let id = self.next_id;
                // raft-rs silently turns a second change into an empty entry
                // while one is unapplied; refuse it clearly instead.
                let r = &self.node.raft;
                if r.pending_conf_index > r.raft_log.applied() {
                    let _ = reply.send(Err(ProposeError::ChangeInProgress));
                    return false;
                }
                match self.node.propose_conf_change(self.context(id), *cc) {
                    Ok(()) => {
                        self.pending.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ProposeError::Rejected(
                            ApplyError::FailedPrecondition(format!(
                                "configuration change refused: {e}"
                            )),
                        )));
                    }
                }
                false
            }
            Msg::Propose { env, reply } => {
                if self.node.raft.state != StateRole::Leader {
                    let leader = Some(self.node.raft.leader_id).filter(|l| *l != 0);
                    let _ = reply.send(Err(ProposeError::NotLeader { leader }));
                    return false;
                }
                let data = match serde_json::to_vec(&*env) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = reply
                            .send(Err(ProposeError::Storage(format!("encoding command: {e}"))));
                        return false;
                    }
                };
                self.next_id += 1;
                let id = self.next_id;
                match self.node.propose(self.context(id), data) {
                    Ok(()) => {
                        self.pending.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ProposeError::NotLeader { leader: None }));
                        tracing::debug!("proposal dropped: {e}");
                    }
                }
                false
            }
        }
    }

    /// Request context: this process's incarnation, then the request id.
    fn context(&self, id: u64) -> Vec<u8> {
        let mut ctx = self.incarnation.to_be_bytes().to_vec();
        ctx.extend_from_slice(&id.to_be_bytes());
        ctx
    }

    fn request_id(&self, ctx: &[u8]) -> Option<u64> {
        if ctx.len() != 16 || ctx[..8] != self.incarnation.to_be_bytes() {
            return None;
        }
        Some(u64::from_be_bytes(ctx[8..].try_into().ok()?))
    }

    fn fail_all(&mut self, err: ProposeError) {
        for (_, r) in self.pending.drain() {
            let _ = r.send(Err(err.clone()));
        }
        for (_, r) in self.reads.drain() {
            let _ = r.send(Err(err.clone()));
        }
        for (_, r) in self.waiting_reads.drain(..) {
            let _ = r.send(Err(err.clone()));
        }
    }

    fn send_messages(&mut self, msgs: Vec<Message>) {
        match &self.transport {
            Some(t) => msgs.into_iter().for_each(|m| t.send(m)),
            None => {
                for m in msgs {
                    tracing::debug!("dropping raft message to {} (no peers configured)", m.to);
                }
            }
        }
    }

    /// Answer reads whose read index has been applied.
    fn release_reads(&mut self) {
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .waiting_reads
            .drain(..)
            .partition(|(i, _)| *i <= applied);
        self.waiting_reads = waiting;
        for (_, r) in ready {
            let _ = r.send(Ok(()));
        }
    }

    fn on_ready(&mut self) -> Result<(), StoreError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = self.node.ready();
        // A ReadIndex request in flight when the term or leader changes may
        // have gone to a replica that died: fail it (reads are safe to retry)
        // rather than let it wait out its timeout.
        let era = (self.node.raft.term, self.node.raft.leader_id);
        if era != self.era {
            self.era = era;
            for (_, r) in self.reads.drain() {
                let _ = r.send(Err(ProposeError::NotLeader {
                    leader: Some(era.1).filter(|l| *l != 0),
                }));
            }
        }
        if let Some(ss) = ready.ss() {
            if ss.raft_state != StateRole::Leader
                && !(self.pending.is_empty() && self.reads.is_empty())
            {
                let leader = Some(ss.leader_id).filter(|l| *l != 0);
                self.fail_all(ProposeError::NotLeader { leader });
            }
        }
        if !ready.messages().is_empty() {
            let msgs = ready.take_messages();
            self.send_messages(msgs);
        }
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            let rec = self.storage.apply_snapshot(&snap)?;
            let state = rec.state()?;
            tracing::info!(
                "installed a snapshot at index {} ({} jobs, {} nodes, {} queues)",
                rec.applied,
                state.jobs.len(),
                state.nodes.len(),
                state.queues.len()
            );
            *self.shared.state.write().unwrap_or_else(|p| p.into_inner()) = state;
            self.applied = rec.applied;
            self.last_compact_check = rec.applied;
            self.shared.version.send_replace(self.applied);
        }
        for rs in ready.take_read_states() {
            let id = self.request_id(&rs.request_ctx);
            if let Some(reply) = id.and_then(|id| self.reads.remove(&id)) {
                self.waiting_reads.push((rs.index, reply));
            }
        }
        let committed = ready.take_committed_entries();
        self.apply_entries(committed, None)?;
        let hs = ready.hs().cloned();
        if !ready.entries().is_empty() || hs.is_some() {
            self.storage
                .append(ready.entries(), hs.as_ref(), ready.must_sync())?;
        }
        if !ready.persisted_messages().is_empty() {
            let msgs = ready.take_persisted_messages();
            self.send_messages(msgs);
        }
        let mut light = self.node.advance(ready);
        let commit = light.commit_index();
        let msgs = light.take_messages();
        self.send_messages(msgs);
        let committed = light.take_committed_entries();
        self.apply_entries(committed, commit)?;
        self.node.advance_apply();
        self.release_reads();
        self.publish_status();
        self.maybe_compact()?;
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

    fn take_reply(&mut self, ctx: &[u8]) -> Option<Reply> {
        let id = self.request_id(ctx)?;
        self.pending.remove(&id)
    }

    fn publish_status(&mut self) {
        let r = &self.node.raft;
        let st = RaftStatus {
            id: r.id,
            leader_id: r.leader_id,
            term: r.term,
            commit: r.raft_log.committed,
            applied: self.applied,
            role: format!("{:?}", r.state),
            voters: self.storage.conf_state().voters,
            progress: if r.state == StateRole::Leader {
                let mut p: Vec<PeerProgress> = r
                    .prs()
                    .iter()
                    .map(|(id, pr)| PeerProgress {
                        id: *id,
                        matched: pr.matched,
                        next_index: pr.next_idx,
                        state: format!("{:?}", pr.state),
                        recent_active: pr.recent_active,
                    })
                    .collect();
                p.sort_by_key(|x| x.id);
                p
            } else {
                Vec::new()
            },
        };
        self.shared.metrics.observe_raft(&st);
        *self.shared.status.lock().unwrap_or_else(|p| p.into_inner()) = st;
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
