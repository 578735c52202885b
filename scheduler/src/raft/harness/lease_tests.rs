//! Leader-lease reads (`raft/lease.rs`) through the real per-Ready
//! processing: a leader a majority confirmed answers reads without a
//! heartbeat round, and a leader cut off stops doing so before the
//! others can elect a new one.

use raft::prelude::MessageType;
use tokio::sync::oneshot;

use super::Cluster;
use crate::raft::handle::ProposeError;
use crate::state::{testutil, Command};

fn register(name: &str) -> Command {
    testutil::register(&gpuctl_testkit::node(name).build())
}

fn answered<T>(a: &mut oneshot::Receiver<T>) -> Option<T> {
    a.try_recv().ok()
}

/// Heartbeats from `id` in flight that carry a ReadIndex context.
fn read_rounds(c: &Cluster, id: u64) -> usize {
    c.in_flight_from(id, MessageType::MsgHeartbeat)
        .iter()
        .filter(|m| !m.context.is_empty())
        .count()
}

/// Propose on `leader` and run until it is applied everywhere.
fn commit(c: &mut Cluster, leader: u64, cmd: Command) {
    commit_on_majority(c, leader, cmd);
    c.run_until(20, "applied everywhere", |c| {
        c.ids().iter().all(|id| c.applied(*id) == c.applied(leader))
    });
}

#[test]
fn a_confirmed_leader_answers_reads_on_its_lease_without_a_heartbeat_round() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let f = c.ids().into_iter().find(|id| *id != leader).unwrap();
    commit(&mut c, leader, register("n0"));
    // The first read is a heartbeat round; once a majority confirms it,
    // the leader holds a lease.
    assert!(!c.lease_valid(leader));
    let mut first = c.read_barrier(leader);
    assert_eq!(read_rounds(&c, leader), 2, "one heartbeat per follower");
    c.deliver_all();
    answered(&mut first).expect("answered").expect("read index");
    assert!(c.lease_valid(leader), "confirmed by a majority");
    assert!(!c.lease_valid(f), "a follower never holds one");

    // Now the leader's reads are answered from its commit index at once.
    let mut reads = c.read_barriers_together(leader, 3);
    assert_eq!(read_rounds(&c, leader), 0, "no heartbeat round");
    for r in &mut reads {
        answered(r).expect("answered at once").expect("read index");
    }

    // A follower's read: one ReadIndex to the leader, answered without a
    // round, and it sees a write the follower had missed.
    c.isolate(f);
    commit_on_majority(&mut c, leader, register("n1"));
    c.heal();
    assert!(c.with_state(f, |s| !s.nodes.contains_key("n1")));
    let mut read = c.read_barrier(f);
    assert_eq!(c.in_flight_from(f, MessageType::MsgReadIndex).len(), 1);
    c.deliver_all();
    assert_eq!(read_rounds(&c, leader), 0, "answered on the lease");
    let mut got = answered(&mut read);
    for _ in 0..5 {
        if got.is_some() {
            break;
        }
        c.round();
        got = answered(&mut read);
    }
    got.expect("answered").expect("read index");
    assert!(c.with_state(f, |s| s.nodes.contains_key("n1")));
}

/// Propose on `leader` and run until it answers (a majority without the
/// isolated replica suffices).
fn commit_on_majority(c: &mut Cluster, leader: u64, cmd: Command) {
    let mut a = c.propose(leader, cmd);
    c.deliver_all();
    for _ in 0..20 {
        if let Some(r) = answered(&mut a) {
            r.expect("committed");
            return;
        }
        c.round();
    }
    panic!("not committed within 20 rounds");
}

#[test]
fn a_cut_off_leader_stops_reading_on_its_lease_before_a_new_leader_can_commit() {
    let mut c = Cluster::new(3);
    let old = c.elect();
    commit(&mut c, old, register("n0"));
    let mut first = c.read_barrier(old);
    c.deliver_all();
    answered(&mut first).expect("answered").expect("read index");
    assert!(c.lease_valid(old));

    c.isolate(old);
    let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != old).collect();
    // Round by round until the others have a leader and a write of its:
    // from the first round in which the majority could have moved on, the
    // old leader must no longer answer on its lease.
    let mut rounds = 0;
    let new = loop {
        c.round();
        rounds += 1;
        assert!(rounds <= 100, "no new leader in 100 rounds");
        if let Some(new) = c.leader_of(&others) {
            break new;
        }
        // Before the others elect, the lease may still hold; it must be
        // over well before they could (an election timeout is 12 ticks).
        if rounds >= 6 {
            assert!(!c.lease_valid(old), "lease held {rounds} rounds cut off");
        }
    };
    assert!(
        rounds >= 12,
        "the majority refused votes for an election timeout"
    );
    assert!(!c.lease_valid(old));
    commit_on_majority(&mut c, new, register("n2"));
    // The old leader, still cut off, never answers a read of its stale state.
    let mut stale = c.read_barrier(old);
    let mut got = answered(&mut stale);
    for _ in 0..30 {
        if got.is_some() {
            break;
        }
        c.round();
        got = answered(&mut stale);
    }
    match got {
        None | Some(Err(ProposeError::NotLeader { .. })) => {}
        Some(other) => panic!("a cut-off old leader answered a read: {other:?}"),
    }
    assert!(c.with_state(old, |s| !s.nodes.contains_key("n2")));
}
