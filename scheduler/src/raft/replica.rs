//! One replica's Raft node without a thread or a clock: raft-rs's `RawNode`
//! over [`RaftStorage`], the [`Shared`] state it applies to, and the
//! bookkeeping of this process's proposals and reads.
//!
//! The driver thread (`driver.rs`) feeds it requests and ticks and calls
//! its per-Ready step (`ready.rs`); the in-process test harness
//! (`harness/`) does the same for several replicas over an in-memory
//! network. What a Ready sends goes to an [`Outbox`]: the gRPC transport
//! or the harness's queue.
//!
//! Requests are queued as they arrive and handed to Raft together just
//! before each Ready ([`Replica::flush_requests`]): the proposals as one
//! `MsgPropose` of many entries (one append per follower, not one per
//! proposal), and every waiting read barrier under one ReadIndex (one
//! heartbeat round for all of them, as etcd does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use raft::prelude::{Entry, Message, MessageType};
use raft::{Config, RawNode, StateRole};
use tokio::sync::watch;

use super::handle::{Msg, ProposeError, RaftOptions, ReadReply, Reply, Shared};
use super::status::{PeerProgress, RaftStatus};
use super::storage::{RaftStorage, StoreError};
use crate::metrics::Metrics;
use crate::state::{ApplyError, State};

/// Where the messages of a Ready go.
pub(super) trait Outbox {
    fn send(&mut self, msgs: Vec<Message>);
}

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

/// A leader's lease (`lease.rs`), in force until both its tick and its instant.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lease {
    pub(super) term: u64,
    pub(super) until_tick: u64,
    pub(super) until: Instant,
}

/// When a leader-started heartbeat round began: the term, this replica's
/// tick count and the instant.
#[derive(Debug, Clone, Copy)]
pub(super) struct RoundStart {
    pub(super) term: u64,
    pub(super) tick: u64,
    pub(super) at: Instant,
}

pub(super) struct Replica {
    pub(super) node: RawNode<RaftStorage>,
    pub(super) storage: RaftStorage,
    pub(super) shared: Arc<Shared>,
    pub(super) opts: RaftOptions,
    /// Proposals of this process waiting for apply, by id.
    pub(super) pending: HashMap<u64, Reply>,
    /// (term, leader) when last looked at, to notice elections.
    pub(super) era: (u64, u64),
    /// Proposals accepted since the last Ready, not yet given to Raft:
    /// (request id, entry data, the term they must be proposed in).
    pub(super) queued: Vec<(u64, Vec<u8>, Option<u64>)>,
    /// Read barriers asked for since the last Ready, not yet given to Raft.
    pub(super) read_queue: Vec<ReadReply>,
    /// ReadIndex requests waiting for their read state, by id: every
    /// barrier asked for before that request was sent.
    pub(super) reads: HashMap<u64, Vec<ReadReply>>,
    /// Read states waiting for `applied` to reach their index.
    pub(super) waiting_reads: Vec<(u64, ReadReply)>,
    pub(super) next_id: u64,
    /// Distinguishes this process's proposal ids from those of an earlier
    /// run whose entries may still be replayed.
    pub(super) incarnation: u64,
    pub(super) applied: u64,
    pub(super) last_compact_check: u64,
    /// Ticks since this replica started (what leases are measured in).
    pub(super) ticks: u64,
    /// The leader's lease, while it has one (`lease.rs`).
    pub(super) lease: Option<Lease>,
    /// This leader's ReadIndex heartbeat rounds in flight, by request id.
    pub(super) rounds: HashMap<u64, RoundStart>,
}

impl Replica {
    /// Bootstrap the storage if this is a brand-new replica of a brand-new
    /// cluster, and build the Raft node over it.
    pub(super) fn new(
        opts: RaftOptions,
        storage: RaftStorage,
        state: State,
        applied: u64,
        metrics: Metrics,
        incarnation: u64,
    ) -> Result<Replica, StoreError> {
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
            // Appends to a peer that already has one waiting in this
            // Ready are merged into it.
            batch_append: true,
            ..Default::default()
        };
        let logger = slog::Logger::root(TracingDrain, slog::o!("raft_id" => opts.id));
        let node =
            RawNode::new(&cfg, storage.clone(), &logger).map_err(|e| StoreError::Corrupt {
                what: "raft state".into(),
                detail: e.to_string(),
            })?;
        Ok(Replica {
            node,
            storage,
            shared,
            opts,
            pending: HashMap::new(),
            queued: Vec::new(),
            read_queue: Vec::new(),
            reads: HashMap::new(),
            era: (0, 0),
            waiting_reads: Vec::new(),
            next_id: 0,
            incarnation,
            applied,
            last_compact_check: applied,
            ticks: 0,
            lease: None,
            rounds: HashMap::new(),
        })
    }

    /// Handle one request from the handle or a peer. Returns true on shutdown.
    pub(super) fn handle(&mut self, m: Msg) -> bool {
        match m {
            Msg::Shutdown => true,
            Msg::Step(m) => {
                self.step_peer(*m);
                false
            }
            Msg::Unreachable(id) => {
                self.node.report_unreachable(id);
                // A snapshot on its way there may be lost with it: without
                // this, the leader would wait for that snapshot forever.
                self.node.report_snapshot(id, raft::SnapshotStatus::Failure);
                false
            }
            Msg::ReadIndex(reply) => {
                if self.node.raft.leader_id == 0 {
                    let _ = reply.send(Err(ProposeError::NotLeader { leader: None }));
                    return false;
                }
                self.read_queue.push(reply);
                false
            }
            Msg::ConfChange { cc, reply } => {
                // Keep the log in the order the requests came.
                self.flush_proposals();
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
            Msg::Propose { env, reply, term } => {
                let r = &self.node.raft;
                if r.state != StateRole::Leader || term.is_some_and(|t| t != r.term) {
                    let leader = Some(r.leader_id).filter(|l| *l != 0);
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
                self.pending.insert(id, reply);
                self.queued.push((id, data, term));
                false
            }
        }
    }

    /// Hand the queued proposals and read barriers to Raft; called before
    /// each Ready.
    pub(super) fn flush_requests(&mut self) {
        self.flush_proposals();
        self.flush_reads();
    }

    /// Propose every queued entry in one `MsgPropose`. A proposal fenced to
    /// a term this replica no longer leads in is refused instead.
    fn flush_proposals(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        let queued = std::mem::take(&mut self.queued);
        let (leader, term, leader_id) = {
            let r = &self.node.raft;
            (r.state == StateRole::Leader, r.term, r.leader_id)
        };
        let mut ids = Vec::with_capacity(queued.len());
        let mut entries = Vec::with_capacity(queued.len());
        for (id, data, fence) in queued {
            if !leader || fence.is_some_and(|t| t != term) {
                self.refuse(
                    id,
                    ProposeError::NotLeader {
                        leader: Some(leader_id).filter(|l| *l != 0),
                    },
                );
                continue;
            }
            entries.push(Entry {
                data: data.into(),
                context: self.context(id).into(),
                ..Default::default()
            });
            ids.push(id);
        }
        if entries.is_empty() {
            return;
        }
        self.shared
            .metrics
            .raft_proposals_per_batch
            .observe(entries.len() as f64);
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.node.raft.id;
        m.set_entries(entries.into());
        if let Err(e) = self.node.raft.step(m) {
            tracing::debug!("{} proposals dropped: {e}", ids.len());
            for id in ids {
                self.refuse(id, ProposeError::NotLeader { leader: None });
            }
        }
    }

    /// Answer a proposal that never reached the log.
    fn refuse(&mut self, id: u64, err: ProposeError) {
        if let Some(reply) = self.pending.remove(&id) {
            let _ = reply.send(Err(err));
        }
    }

    /// Send one ReadIndex for every read barrier queued since the last.
    /// A new leader answers none before it has committed an entry of its
    /// term (raft-rs drops such a request): the barriers wait here until
    /// it has.
    fn flush_reads(&mut self) {
        if self.read_queue.is_empty() {
            return;
        }
        let r = &self.node.raft;
        if r.leader_id == 0 {
            for reply in self.read_queue.drain(..) {
                let _ = reply.send(Err(ProposeError::NotLeader { leader: None }));
            }
            return;
        }
        if r.state == StateRole::Leader && !r.commit_to_current_term() {
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.reads.insert(id, std::mem::take(&mut self.read_queue));
        let ctx = self.context(id);
        if self.lease_valid() {
            self.read_on_lease(ctx);
            self.maybe_probe();
        } else {
            // The round renews the lease when a majority answers it.
            self.round_started(id);
            self.node.read_index(ctx);
        }
    }

    /// Request context: this process's incarnation, then the request id.
    pub(super) fn context(&self, id: u64) -> Vec<u8> {
        let mut ctx = self.incarnation.to_be_bytes().to_vec();
        ctx.extend_from_slice(&id.to_be_bytes());
        ctx
    }

    pub(super) fn request_id(&self, ctx: &[u8]) -> Option<u64> {
        if ctx.len() != 16 || ctx[..8] != self.incarnation.to_be_bytes() {
            return None;
        }
        Some(u64::from_be_bytes(ctx[8..].try_into().ok()?))
    }

    pub(super) fn take_reply(&mut self, ctx: &[u8]) -> Option<Reply> {
        let id = self.request_id(ctx)?;
        self.pending.remove(&id)
    }

    pub(super) fn fail_all(&mut self, err: ProposeError) {
        self.queued.clear();
        for (_, r) in self.pending.drain() {
            let _ = r.send(Err(err.clone()));
        }
        for r in self.read_queue.drain(..) {
            let _ = r.send(Err(err.clone()));
        }
        for (_, rs) in self.reads.drain() {
            for r in rs {
                let _ = r.send(Err(err.clone()));
            }
        }
        for (_, r) in self.waiting_reads.drain(..) {
            let _ = r.send(Err(err.clone()));
        }
    }

    /// Answer reads whose read index has been applied.
    pub(super) fn release_reads(&mut self) {
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

    pub(super) fn publish_status(&mut self) {
        let r = &self.node.raft;
        let leads_current = r.state == StateRole::Leader
            && r.raft_log.term(self.applied).is_ok_and(|t| t == r.term);
        let st = RaftStatus {
            current_term_applied: leads_current,
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
}
