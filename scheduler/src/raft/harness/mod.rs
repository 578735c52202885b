//! An in-process Raft cluster for tests, in the manner of raft-rs's
//! `harness/`: N replicas of the real [`Replica`] (the driver's per-Ready
//! processing, RocksDB storage in a temporary folder, `State::apply`) that
//! exchange Raft messages through a network this file controls. No
//! threads, sockets or wall clock: time is a count of ticks, and the only
//! randomness (dropped messages, election timeouts) comes from a seed, so
//! a failing test fails the same way twice.
//!
//! The network delivers messages in the order they were sent. A message
//! is lost when its link is cut ([`Cluster::cut`], [`Cluster::isolate`]),
//! when its receiver is stopped, or by the drop rate
//! ([`Cluster::set_drop_rate`]); like the gRPC transport's cut-off, a lost
//! message is not reported to Raft as unreachable.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use raft::prelude::{ConfChange, ConfChangeType, Message, MessageType};
use raft::StateRole;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;

use super::handle::{Msg, ProposeError, RaftOptions};
use super::replica::{Outbox, Replica};
use super::status::RaftStatus;
use super::storage::RaftStorage;
use crate::metrics::Metrics;
use crate::state::{Applied, Command, Envelope, State};

mod lease_tests;
mod tests;

/// The answer to a proposal, once it is applied (or refused).
pub(super) type Answer = oneshot::Receiver<Result<Applied, ProposeError>>;

/// Messages in flight, oldest first.
impl Outbox for VecDeque<Message> {
    fn send(&mut self, msgs: Vec<Message>) {
        self.extend(msgs);
    }
}

/// Most messages one [`Cluster::deliver_all`] handles: far more than any
/// test needs, so reaching it means replicas keep answering each other.
const MAX_DELIVERIES: usize = 100_000;

pub(super) struct Cluster {
    /// One data folder per replica, `r<id>`, kept across restarts.
    root: tempfile::TempDir,
    /// Options every replica starts with (its id and voters set per replica).
    template: RaftOptions,
    voters: Vec<u64>,
    running: BTreeMap<u64, Replica>,
    /// How many times each replica was started, to give every start its own
    /// proposal ids, as a restarted process has.
    starts: BTreeMap<u64, u64>,
    in_flight: VecDeque<Message>,
    /// Directed links (from, to) whose messages are lost.
    cut: BTreeSet<(u64, u64)>,
    drop_rate: f64,
    rng: StdRng,
    /// Snapshot messages that reached their replica.
    pub(super) snapshots_delivered: usize,
    /// Messages lost to the drop rate.
    pub(super) dropped: usize,
}

impl Cluster {
    /// A brand-new cluster of `n` voters, 1..=n, with the driver's default
    /// options.
    pub(super) fn new(n: u64) -> Cluster {
        Cluster::with_options(n, RaftOptions::default())
    }

    pub(super) fn with_options(n: u64, template: RaftOptions) -> Cluster {
        let mut c = Cluster {
            root: tempfile::tempdir().expect("temporary folder"),
            template,
            voters: (1..=n).collect(),
            running: BTreeMap::new(),
            starts: BTreeMap::new(),
            in_flight: VecDeque::new(),
            cut: BTreeSet::new(),
            drop_rate: 0.0,
            rng: StdRng::seed_from_u64(7),
            snapshots_delivered: 0,
            dropped: 0,
        };
        for id in 1..=n {
            c.start(id, false);
        }
        c
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("r{id}"))
    }

    /// Start replica `id` from what its folder holds, as `server.rs` does;
    /// with `join`, an empty replica that waits to be added.
    pub(super) fn start(&mut self, id: u64, join: bool) {
        assert!(!self.running.contains_key(&id), "replica {id} is running");
        let (storage, rec) = RaftStorage::open(&self.dir(id)).expect("open storage");
        let state = rec.state().expect("stored state");
        let opts = RaftOptions {
            id,
            initial_voters: self.voters.clone(),
            join,
            ..self.template.clone()
        };
        let starts = self.starts.entry(id).or_default();
        *starts += 1;
        let incarnation = (id << 32) | *starts;
        let replica = Replica::new(
            opts,
            storage,
            state,
            rec.applied,
            Metrics::new(),
            incarnation,
        )
        .expect("start replica");
        self.running.insert(id, replica);
    }

    /// Stop replica `id` as the driver stops: pending callers are told.
    pub(super) fn stop(&mut self, id: u64) {
        let mut r = self.running.remove(&id).expect("replica is running");
        r.fail_all(ProposeError::Shutdown);
    }

    pub(super) fn restart(&mut self, id: u64) {
        self.stop(id);
        self.start(id, false);
    }

    pub(super) fn ids(&self) -> Vec<u64> {
        self.running.keys().copied().collect()
    }

    fn replica(&self, id: u64) -> &Replica {
        self.running
            .get(&id)
            .unwrap_or_else(|| panic!("replica {id} is not running"))
    }

    fn replica_mut(&mut self, id: u64) -> &mut Replica {
        self.running
            .get_mut(&id)
            .unwrap_or_else(|| panic!("replica {id} is not running"))
    }

    // ---- the network ----

    /// Lose every message between `a` and `b`, both ways.
    pub(super) fn cut(&mut self, a: u64, b: u64) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Cut `id` off from every other replica, running or not.
    pub(super) fn isolate(&mut self, id: u64) {
        let others: BTreeSet<u64> = self
            .voters
            .iter()
            .chain(self.starts.keys())
            .copied()
            .filter(|o| *o != id)
            .collect();
        for o in others {
            self.cut(id, o);
        }
    }

    /// Restore every cut link (the drop rate stays).
    pub(super) fn heal(&mut self) {
        self.cut.clear();
    }

    /// Lose each message with probability `p`, drawn from the seeded RNG.
    pub(super) fn set_drop_rate(&mut self, p: f64) {
        self.drop_rate = p;
    }

    /// Deliver messages, and those they cause, until none is in flight.
    pub(super) fn deliver_all(&mut self) {
        for _ in 0..MAX_DELIVERIES {
            let Some(m) = self.in_flight.pop_front() else {
                return;
            };
            if self.cut.contains(&(m.from, m.to)) || !self.running.contains_key(&m.to) {
                continue;
            }
            if self.drop_rate > 0.0 && self.rng.gen_bool(self.drop_rate) {
                self.dropped += 1;
                continue;
            }
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshots_delivered += 1;
            }
            let to = m.to;
            self.replica_mut(to).handle(Msg::Step(Box::new(m)));
            self.process_ready(to);
        }
        panic!("the network did not go quiet after {MAX_DELIVERIES} messages");
    }

    /// Run the replica's Ready processing until it has nothing left, as
    /// the driver's loop would on its next turns (the first hands Raft the
    /// requests queued since the last).
    fn process_ready(&mut self, id: u64) {
        let r = self
            .running
            .get_mut(&id)
            .unwrap_or_else(|| panic!("replica {id} is not running"));
        r.on_ready(&mut self.in_flight).expect("storage");
        while r.node.has_ready() {
            r.on_ready(&mut self.in_flight).expect("storage");
        }
    }

    // ---- time ----

    /// One tick on every running replica, then every message delivered.
    pub(super) fn round(&mut self) {
        for id in self.ids() {
            self.pin_election_timeout(id);
            self.replica_mut(id).tick();
            self.process_ready(id);
        }
        self.deliver_all();
    }

    pub(super) fn rounds(&mut self, n: usize) {
        for _ in 0..n {
            self.round();
        }
    }

    /// Run rounds until `done` holds, at most `max`; returns how many it took.
    pub(super) fn run_until(
        &mut self,
        max: usize,
        what: &str,
        done: impl Fn(&Cluster) -> bool,
    ) -> usize {
        for n in 0..=max {
            if done(self) {
                return n;
            }
            if n < max {
                self.round();
            }
        }
        panic!("{what}: not within {max} rounds; {:?}", self.statuses());
    }

    /// raft-rs draws election timeouts from an unseeded RNG; redraw each
    /// freshly reset one from the cluster's seeded RNG (any value in
    /// raft-rs's range is a valid timeout).
    fn pin_election_timeout(&mut self, id: u64) {
        let Some(r) = self.running.get_mut(&id) else {
            return;
        };
        let raft = &mut r.node.raft;
        if raft.election_elapsed == 0 {
            let t = raft.election_timeout();
            raft.set_randomized_election_timeout(self.rng.gen_range(t..2 * t));
        }
    }

    // ---- requests ----

    /// Propose a command on replica `id`, as its handle would.
    pub(super) fn propose(&mut self, id: u64, cmd: Command) -> Answer {
        let (reply, answer) = oneshot::channel();
        let env = Box::new(Envelope::new(1_000, cmd));
        self.replica_mut(id).handle(Msg::Propose {
            env,
            reply,
            term: None,
        });
        self.process_ready(id);
        answer
    }

    /// Hand replica `id` several proposals (each with the term it is
    /// fenced to, if any) before its next Ready, as the driver does with
    /// requests that arrive together.
    pub(super) fn propose_together(
        &mut self,
        id: u64,
        cmds: Vec<(Command, Option<u64>)>,
    ) -> Vec<Answer> {
        let r = self.replica_mut(id);
        let answers = cmds
            .into_iter()
            .map(|(cmd, term)| {
                let (reply, answer) = oneshot::channel();
                let env = Box::new(Envelope::new(1_000, cmd));
                r.handle(Msg::Propose { env, reply, term });
                answer
            })
            .collect();
        self.process_ready(id);
        answers
    }

    /// Ask replica `id` for `n` read barriers before its next Ready.
    pub(super) fn read_barriers_together(
        &mut self,
        id: u64,
        n: usize,
    ) -> Vec<oneshot::Receiver<Result<(), ProposeError>>> {
        let r = self.replica_mut(id);
        let answers = (0..n)
            .map(|_| {
                let (reply, answer) = oneshot::channel();
                r.handle(Msg::ReadIndex(reply));
                answer
            })
            .collect();
        self.process_ready(id);
        answers
    }

    /// The messages in flight from `from` of type `t`.
    pub(super) fn in_flight_from(&self, from: u64, t: MessageType) -> Vec<&Message> {
        self.in_flight
            .iter()
            .filter(|m| m.from == from && m.get_msg_type() == t)
            .collect()
    }

    /// Ask replica `id` for a read barrier (ReadIndex), as its handle would.
    pub(super) fn read_barrier(&mut self, id: u64) -> oneshot::Receiver<Result<(), ProposeError>> {
        let (reply, answer) = oneshot::channel();
        self.replica_mut(id).handle(Msg::ReadIndex(reply));
        self.process_ready(id);
        answer
    }

    /// Propose adding (`add`) or removing replica `node` on replica `id`.
    pub(super) fn change_membership(&mut self, id: u64, node: u64, add: bool) -> Answer {
        let (reply, answer) = oneshot::channel();
        let mut cc = ConfChange::default();
        cc.set_change_type(if add {
            ConfChangeType::AddNode
        } else {
            ConfChangeType::RemoveNode
        });
        cc.node_id = node;
        if add {
            cc.context = format!("http://replica-{node}").into_bytes().into();
        }
        self.replica_mut(id).handle(Msg::ConfChange {
            cc: Box::new(cc),
            reply,
        });
        self.process_ready(id);
        answer
    }

    // ---- what the replicas say ----

    pub(super) fn status(&self, id: u64) -> RaftStatus {
        self.replica(id).shared.status()
    }

    fn statuses(&self) -> Vec<(u64, String, u64, u64, u64)> {
        self.running
            .iter()
            .map(|(id, r)| {
                let raft = &r.node.raft;
                let role = format!("{:?}", raft.state);
                (*id, role, raft.term, raft.leader_id, r.applied)
            })
            .collect()
    }

    /// The replicas that consider themselves leader.
    pub(super) fn leaders(&self) -> Vec<u64> {
        self.running
            .iter()
            .filter(|(_, r)| r.node.raft.state == StateRole::Leader)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The leader, if every replica of `among` is running and follows the
    /// same one, and it is one of them and leads.
    pub(super) fn leader_of(&self, among: &[u64]) -> Option<u64> {
        let first = self.running.get(among.first()?)?.node.raft.leader_id;
        let agreed = among.iter().all(|id| {
            self.running
                .get(id)
                .is_some_and(|r| r.node.raft.leader_id == first)
        });
        let leads = self
            .running
            .get(&first)
            .is_some_and(|r| r.node.raft.state == StateRole::Leader);
        (first != 0 && agreed && leads && among.contains(&first)).then_some(first)
    }

    /// The leader every running replica agrees on.
    pub(super) fn leader(&self) -> Option<u64> {
        self.leader_of(&self.ids())
    }

    /// Run until all running replicas agree on a leader; returns it.
    pub(super) fn elect(&mut self) -> u64 {
        self.run_until(100, "an agreed leader", |c| c.leader().is_some());
        self.leader().expect("agreed above")
    }

    /// Whether replica `id` holds a leader's lease now (`lease.rs`).
    pub(super) fn lease_valid(&self, id: u64) -> bool {
        self.replica(id).lease_valid()
    }

    pub(super) fn applied(&self, id: u64) -> u64 {
        self.replica(id).applied
    }

    pub(super) fn commit(&self, id: u64) -> u64 {
        self.replica(id).node.raft.raft_log.committed
    }

    /// The index of the first entry replica `id` still holds in its log.
    pub(super) fn first_log_index(&self, id: u64) -> u64 {
        raft::Storage::first_index(&self.replica(id).storage).expect("in memory")
    }

    /// A read of replica `id`'s state machine.
    pub(super) fn with_state<T>(&self, id: u64, f: impl FnOnce(&State) -> T) -> T {
        f(&self.replica(id).shared.read())
    }

    /// Replica `id`'s objects, in a form to compare between replicas.
    pub(super) fn fingerprint(&self, id: u64) -> String {
        self.with_state(id, |s| {
            serde_json::to_string(&(&s.jobs, &s.nodes, &s.queues, &s.endpoints))
                .expect("objects serialize")
        })
    }

    /// What replica `id` would recover from its folder now: the stored
    /// applied index and the stored objects' fingerprint.
    pub(super) fn stored(&self, id: u64) -> (u64, String) {
        assert!(!self.running.contains_key(&id), "stop replica {id} first");
        let (_, rec) = RaftStorage::open(&self.dir(id)).expect("open storage");
        let s = rec.state().expect("stored state");
        let fp = serde_json::to_string(&(&s.jobs, &s.nodes, &s.queues, &s.endpoints))
            .expect("objects serialize");
        (rec.applied, fp)
    }
}
