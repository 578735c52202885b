//! Leader-lease reads: a leader that a majority has recently confirmed
//! answers read barriers (its own, and followers' ReadIndex requests) from
//! its commit index at once, without a heartbeat round of its own for
//! each batch of them.
//!
//! Why it is safe: with `check_quorum`, a replica that heard from the
//! leader refuses to vote (or pre-vote) for anyone else for an election
//! timeout (`election_tick` ticks, each at least one tick interval of real
//! time, never early). When a majority acknowledges a heartbeat round the
//! leader started at tick `t` and instant `T` (a ReadIndex of its own in
//! raft-rs's `Safe` mode), no other leader can be elected before about
//! `T + election timeout` on every replica of that majority, and every
//! later leader needs a vote from it. The lease runs for less than half of
//! that, counted both in this replica's ticks and in its wall clock, so
//! neither a clock that runs at another rate nor a driver thread that
//! stalled (its ticks late) stretches it past the others' refusal.
//!
//! The lease is renewed by those same rounds: the leader's own Safe
//! ReadIndex requests, and a probe (a ReadIndex with no waiting reads) sent
//! when a read finds the lease expired or half spent. Answers given on the
//! lease never renew it. raft-rs keeps `Safe` as the option in force; it
//! is switched to `LeaseBased` only for the one step that answers a read
//! on the lease, so Safe requests in flight are never disturbed.

use std::time::{Duration, Instant};

use raft::prelude::{Message, MessageType};
use raft::{ReadOnlyOption, StateRole};

use super::replica::{Lease, Replica, RoundStart};

impl Replica {
    /// Ticks a lease lasts: under half the election timeout, less the tick
    /// that may come at once after a follower hears from the leader.
    fn lease_ticks(&self) -> u64 {
        (self.node.raft.election_timeout() as u64).saturating_sub(1) / 2
    }

    fn lease_duration(&self) -> Duration {
        self.opts.tick * self.lease_ticks() as u32
    }

    /// One clock tick: Raft's, and the count leases are measured in.
    pub(super) fn tick(&mut self) {
        self.ticks += 1;
        self.node.tick();
    }

    /// Whether this replica may answer a read from its commit index now.
    pub(super) fn lease_valid(&self) -> bool {
        let r = &self.node.raft;
        self.opts.lease_reads
            && r.state == StateRole::Leader
            && r.commit_to_current_term()
            && self.lease.is_some_and(|l| {
                l.term == r.term && self.ticks < l.until_tick && Instant::now() < l.until
            })
    }

    /// Whether the lease has less than half of its time left (or none).
    fn lease_wants_renewal(&self) -> bool {
        let half_ticks = self.lease_ticks() / 2;
        let half = self.lease_duration() / 2;
        !self.lease_valid()
            || self.lease.is_some_and(|l| {
                self.ticks + half_ticks >= l.until_tick || Instant::now() + half >= l.until
            })
    }

    /// Note that a heartbeat round for the ReadIndex request `id` starts now.
    pub(super) fn round_started(&mut self, id: u64) {
        if !self.opts.lease_reads || self.node.raft.state != StateRole::Leader {
            return;
        }
        let start = RoundStart {
            term: self.node.raft.term,
            tick: self.ticks,
            at: Instant::now(),
        };
        self.rounds.insert(id, start);
    }

    /// A ReadIndex request of this replica's was confirmed: if it was a
    /// heartbeat round this replica started as leader, in the term it still
    /// leads in, the lease runs from the round's start.
    pub(super) fn round_confirmed(&mut self, id: u64) {
        let Some(start) = self.rounds.remove(&id) else {
            return;
        };
        let r = &self.node.raft;
        if r.state != StateRole::Leader || r.term != start.term {
            return;
        }
        let lease = Lease {
            term: start.term,
            until_tick: start.tick + self.lease_ticks(),
            until: start.at + self.lease_duration(),
        };
        if self
            .lease
            .is_none_or(|l| l.term != lease.term || l.until_tick <= lease.until_tick)
        {
            self.lease = Some(lease);
        }
    }

    /// Forget rounds and the lease (leadership changed).
    pub(super) fn drop_lease(&mut self) {
        self.lease = None;
        self.rounds.clear();
    }

    /// Hand Raft a ReadIndex for `ctx` answered on the lease: read_only
    /// `LeaseBased` for this one step.
    pub(super) fn read_on_lease(&mut self, ctx: Vec<u8>) {
        self.node.raft.read_only.option = ReadOnlyOption::LeaseBased;
        self.node.read_index(ctx);
        self.node.raft.read_only.option = ReadOnlyOption::Safe;
        self.shared.metrics.raft_lease_reads.inc();
    }

    /// Step a peer's message; a follower's ReadIndex is answered on the
    /// lease when it holds.
    pub(super) fn step_peer(&mut self, m: Message) {
        let read = m.get_msg_type() == MessageType::MsgReadIndex;
        let on_lease = read && self.lease_valid();
        if on_lease {
            self.node.raft.read_only.option = ReadOnlyOption::LeaseBased;
            self.shared.metrics.raft_lease_reads.inc();
        }
        if let Err(e) = self.node.step(m) {
            tracing::debug!("dropping raft message: {e}");
        }
        if on_lease {
            self.node.raft.read_only.option = ReadOnlyOption::Safe;
        }
        if read {
            self.maybe_probe();
        }
    }

    /// Send a probe (a Safe ReadIndex nobody waits for) when this replica
    /// leads, uses leases, has no heartbeat round of its own in flight
    /// (one unanswered for an election timeout is given up on), and its
    /// lease is expired or half spent.
    pub(super) fn maybe_probe(&mut self) {
        let timeout = self.node.raft.election_timeout() as u64;
        let now = self.ticks;
        self.rounds.retain(|_, r| now <= r.tick + timeout);
        let r = &self.node.raft;
        if !self.opts.lease_reads
            || r.state != StateRole::Leader
            || !r.commit_to_current_term()
            || !self.rounds.is_empty()
            || !self.lease_wants_renewal()
        {
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.reads.insert(id, Vec::new());
        self.round_started(id);
        let ctx = self.context(id);
        self.node.read_index(ctx);
    }
}
