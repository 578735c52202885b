//! Replication through the real per-Ready processing, without sockets:
//! elections, commit and apply everywhere, read barriers, partitions and
//! healing, lost messages, restarts from storage, catch-up by snapshot,
//! and adding and removing replicas. Bounds are in rounds (one tick per replica, then every message
//! delivered); an election timeout is 12 to 23 ticks.

use raft::prelude::MessageType;
use tokio::sync::oneshot;

use super::Cluster;
use crate::raft::handle::{ProposeError, RaftOptions};
use crate::state::{testutil, Command};

fn register(name: &str) -> Command {
    let n = gpuctl_testkit::node(name)
        .cpu_milli(8_000)
        .memory_bytes(16 << 30);
    testutil::register(&n.build())
}

fn submit(name: &str) -> Command {
    let job = gpuctl_testkit::job(name).build();
    Command::SubmitJob { job: Box::new(job) }
}

/// The answer, if the replica has given one.
fn answered<T>(a: &mut oneshot::Receiver<T>) -> Option<T> {
    a.try_recv().ok()
}

/// Run rounds until the replica answers, at most `max`.
fn await_answer<T>(c: &mut Cluster, a: &mut oneshot::Receiver<T>, max: usize) -> T {
    c.deliver_all();
    for _ in 0..max {
        if let Some(r) = answered(a) {
            return r;
        }
        c.round();
    }
    answered(a).unwrap_or_else(|| panic!("no answer within {max} rounds"))
}

/// Propose on the leader and run until the answer comes; it must be a success.
fn commit(c: &mut Cluster, leader: u64, cmd: Command) {
    let mut a = c.propose(leader, cmd);
    await_answer(c, &mut a, 50).expect("committed and applied");
}

fn job_names(c: &Cluster, id: u64) -> Vec<String> {
    c.with_state(id, |s| s.jobs.keys().cloned().collect())
}

/// The voters replica `id` reports, sorted (Raft keeps them in a set).
fn voters(c: &Cluster, id: u64) -> Vec<u64> {
    let mut v = c.status(id).voters;
    v.sort_unstable();
    v
}

fn assert_all_equal(c: &Cluster) {
    let ids = c.ids();
    let first = c.fingerprint(ids[0]);
    for id in &ids {
        assert_eq!(
            c.applied(*id),
            c.applied(ids[0]),
            "replica {id} applied as far"
        );
        assert_eq!(c.fingerprint(*id), first, "replica {id} has the same state");
    }
}

#[test]
fn three_replicas_elect_one_leader() {
    let mut c = Cluster::new(3);
    assert!(c.leaders().is_empty(), "no leader before any tick");
    let rounds = c.run_until(100, "an agreed leader", |c| c.leader().is_some());
    let leader = c.leader().unwrap();
    assert!(rounds >= 12, "not before an election timeout: {rounds}");
    assert_eq!(c.leaders(), vec![leader], "exactly one leader");
    // It stays leader while nothing fails, and the others follow it.
    c.rounds(50);
    assert_eq!(c.leaders(), vec![leader]);
    let term = c.status(leader).term;
    for id in c.ids() {
        let st = c.status(id);
        assert_eq!((st.leader_id, st.term), (leader, term), "replica {id}");
        assert_eq!(voters(&c, id), vec![1, 2, 3]);
    }
    assert_eq!(c.status(leader).progress.len(), 3);
}

#[test]
fn a_command_commits_and_applies_on_every_replica() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();

    // A follower refuses and names the leader.
    let mut a = c.propose(follower, register("n1"));
    match answered(&mut a) {
        Some(Err(ProposeError::NotLeader { leader: l })) => assert_eq!(l, Some(leader)),
        other => panic!("expected NotLeader, got {other:?}"),
    }

    commit(&mut c, leader, register("n1"));
    commit(&mut c, leader, submit("a"));
    // Followers learn the commit index with the next heartbeat.
    c.run_until(10, "every replica applied the job", |c| {
        c.ids().iter().all(|id| job_names(c, *id) == ["a"])
    });
    assert_all_equal(&c);
    for id in c.ids() {
        assert!(c.with_state(id, |s| s.nodes.contains_key("n1")));
        assert_eq!(c.status(id).applied, c.applied(id), "status is published");
    }

    // A command the state machine refuses is refused the same way everywhere.
    let mut a = c.propose(leader, submit("a"));
    c.deliver_all();
    assert!(matches!(
        answered(&mut a),
        Some(Err(ProposeError::Rejected(_)))
    ));
    c.run_until(10, "the refusal applied everywhere", |c| {
        c.ids().iter().all(|id| c.applied(*id) == c.applied(leader))
    });
    assert_all_equal(&c);
}

#[test]
fn read_barriers_wait_for_the_commit_and_fail_when_cut_off() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let f = c.ids().into_iter().find(|id| *id != leader).unwrap();
    // A write the follower misses: its read barrier must wait for it.
    c.isolate(f);
    commit(&mut c, leader, register("n1"));
    c.heal();
    assert!(c.with_state(f, |s| s.nodes.is_empty()));
    let mut read = c.read_barrier(f);
    assert!(answered(&mut read).is_none());
    await_answer(&mut c, &mut read, 5).expect("read index");
    assert!(c.with_state(f, |s| s.nodes.contains_key("n1")));

    // Cut off, the follower cannot confirm a read index; once it stops
    // following the leader the read fails instead of waiting out its
    // timeout.
    c.isolate(f);
    let mut read = c.read_barrier(f);
    match await_answer(&mut c, &mut read, 60) {
        Err(ProposeError::NotLeader { .. }) => {}
        other => panic!("a read cut off from the leader: {other:?}"),
    }
    // With no leader known, a read is refused at once.
    assert_eq!(c.status(f).leader_id, 0);
    let mut read = c.read_barrier(f);
    assert!(matches!(
        answered(&mut read),
        Some(Err(ProposeError::NotLeader { leader: None }))
    ));
}

#[test]
fn a_cut_off_leader_cannot_commit_and_the_majority_moves_on() {
    let mut c = Cluster::new(3);
    let old = c.elect();
    commit(&mut c, old, register("n1"));
    c.run_until(10, "replicated", |c| {
        c.ids().iter().all(|id| c.applied(*id) == c.applied(old))
    });
    let commit_before = c.commit(old);

    c.isolate(old);
    let mut stranded = c.propose(old, submit("stranded"));
    let majority: Vec<u64> = c.ids().into_iter().filter(|id| *id != old).collect();
    let new = {
        c.run_until(100, "a leader among the majority", |c| {
            c.leader_of(&majority).is_some()
        });
        c.leader_of(&majority).unwrap()
    };
    assert_ne!(new, old);
    // The old leader never committed its entry; with check-quorum it has
    // stepped down, which fails the proposal instead of leaving it hanging.
    assert_eq!(c.commit(old), commit_before);
    c.run_until(30, "the old leader steps down", |c| {
        !c.leaders().contains(&old)
    });
    match answered(&mut stranded) {
        Some(Err(ProposeError::NotLeader { .. })) => {}
        other => panic!("the stranded proposal: {other:?}"),
    }

    for name in ["m1", "m2", "m3"] {
        commit(&mut c, new, submit(name));
    }
    c.run_until(10, "the majority applied", |c| {
        job_names(c, majority[0]) == ["m1", "m2", "m3"]
            && job_names(c, majority[1]) == ["m1", "m2", "m3"]
    });
    assert!(job_names(&c, old).is_empty());

    // Healed, the old leader drops its uncommitted entry and catches up;
    // pre-vote keeps it from disturbing the leader.
    let term = c.status(new).term;
    c.heal();
    c.run_until(30, "the old leader caught up", |c| {
        job_names(c, old) == ["m1", "m2", "m3"]
    });
    assert_eq!(c.leader(), Some(new));
    assert_eq!(c.status(new).term, term);
    c.run_until(10, "equal applied", |c| {
        c.ids().iter().all(|id| c.applied(*id) == c.applied(new))
    });
    assert_all_equal(&c);
}

#[test]
fn lost_messages_still_converge() {
    let mut c = Cluster::new(3);
    c.set_drop_rate(0.2);
    let mut leader = c.elect();
    let names: Vec<String> = (0..20).map(|i| format!("n{i:02}")).collect();
    // Registering is idempotent, so a proposal that may or may not have
    // taken effect is simply proposed again.
    let mut rounds = 0;
    for name in &names {
        loop {
            let mut a = c.propose(leader, register(name));
            c.deliver_all();
            let done = (0..40).find_map(|_| {
                if let Some(r) = answered(&mut a) {
                    return Some(r.is_ok());
                }
                c.round();
                rounds += 1;
                None
            });
            if done == Some(true) {
                break;
            }
            leader = c.elect();
        }
    }
    let settle = c.run_until(200, "every replica has every node", |c| {
        c.ids()
            .iter()
            .all(|id| c.with_state(*id, |s| s.nodes.len()) == names.len())
    });
    c.set_drop_rate(0.0);
    c.run_until(20, "equal applied", |c| {
        let a = c.applied(c.ids()[0]);
        c.ids().iter().all(|id| c.applied(*id) == a)
    });
    assert_all_equal(&c);
    assert!(c.dropped >= 20, "the network lost {} messages", c.dropped);
    assert!(
        rounds + settle <= 100,
        "took {rounds} rounds beyond the first try to commit, {settle} to settle"
    );
}

#[test]
fn replicas_restart_from_their_storage() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    commit(&mut c, leader, register("n1"));
    for name in ["a", "b"] {
        commit(&mut c, leader, submit(name));
    }
    c.run_until(10, "replicated", |c| {
        c.ids().iter().all(|id| job_names(c, *id) == ["a", "b"])
    });

    // A follower stops, misses writes, and comes back with what it stored.
    let f = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let applied = c.applied(f);
    let before = c.fingerprint(f);
    c.stop(f);
    assert_eq!(c.stored(f), (applied, before.clone()));
    commit(&mut c, leader, submit("c"));
    c.start(f, false);
    assert_eq!(c.applied(f), applied, "recovered at its stored index");
    assert_eq!(c.fingerprint(f), before);
    c.run_until(30, "the follower caught up", |c| {
        job_names(c, f) == ["a", "b", "c"]
    });

    // The whole cluster restarts: the same state everywhere, a new
    // election, and writes go on.
    c.run_until(10, "equal applied", |c| {
        c.ids().iter().all(|id| c.applied(*id) == c.applied(leader))
    });
    let expect = c.fingerprint(leader);
    for id in c.ids() {
        c.restart(id);
        assert_eq!(c.fingerprint(id), expect, "replica {id} after restart");
    }
    let leader = c.elect();
    commit(&mut c, leader, submit("d"));
    c.run_until(10, "replicated after restart", |c| {
        c.ids()
            .iter()
            .all(|id| job_names(c, *id) == ["a", "b", "c", "d"])
    });
    assert_all_equal(&c);
}

#[test]
fn a_lagging_replica_catches_up_by_snapshot() {
    let opts = RaftOptions {
        compact_after: 10,
        ..Default::default()
    };
    let mut c = Cluster::with_options(3, opts);
    let leader = c.elect();
    commit(&mut c, leader, register("n1"));
    let lagging = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.isolate(lagging);
    let names: Vec<String> = (0..30).map(|i| format!("j{i:02}")).collect();
    for name in &names {
        commit(&mut c, leader, submit(name));
    }
    // The leader has compacted its log past what the lagging replica has.
    assert!(
        c.first_log_index(leader) > c.applied(lagging) + 1,
        "leader log starts at {}, lagging replica applied {}",
        c.first_log_index(leader),
        c.applied(lagging)
    );
    assert_eq!(c.snapshots_delivered, 0);

    c.heal();
    c.run_until(50, "the lagging replica caught up", |c| {
        job_names(c, lagging) == names
    });
    assert!(c.snapshots_delivered >= 1, "caught up by a snapshot");
    c.run_until(10, "equal applied", |c| {
        c.ids().iter().all(|id| c.applied(*id) == c.applied(leader))
    });
    assert_all_equal(&c);

    // What it installed is durable.
    c.restart(lagging);
    assert_eq!(job_names(&c, lagging), names);
    assert_eq!(c.fingerprint(lagging), c.fingerprint(leader));
}

#[test]
fn a_joining_replica_is_added_and_a_voter_removed() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    commit(&mut c, leader, register("n1"));
    commit(&mut c, leader, submit("early"));

    c.start(4, true);
    assert!(
        c.status(4).voters.is_empty(),
        "a joining replica starts empty"
    );
    let mut a = c.change_membership(leader, 4, true);
    // A second change while the first is unapplied is refused clearly.
    let mut again = c.change_membership(leader, 5, true);
    assert!(matches!(
        answered(&mut again),
        Some(Err(ProposeError::ChangeInProgress))
    ));
    c.deliver_all();
    c.rounds(5);
    assert!(matches!(answered(&mut a), Some(Ok(_))), "added");
    c.run_until(50, "the new replica caught up", |c| {
        job_names(c, 4) == ["early"] && voters(c, 4) == [1, 2, 3, 4]
    });
    assert!(
        c.snapshots_delivered >= 1,
        "a new replica starts from a snapshot"
    );
    for id in c.ids() {
        assert_eq!(voters(&c, id), vec![1, 2, 3, 4], "replica {id}");
    }

    // Remove a follower other than the new one; writes go on.
    let gone = c
        .ids()
        .into_iter()
        .find(|id| *id != leader && *id != 4)
        .unwrap();
    let mut a = c.change_membership(leader, gone, false);
    c.deliver_all();
    c.rounds(5);
    assert!(matches!(answered(&mut a), Some(Ok(_))), "removed");
    c.stop(gone);
    commit(&mut c, leader, submit("late"));
    c.run_until(10, "replicated among the rest", |c| {
        c.ids()
            .iter()
            .all(|id| job_names(c, *id) == ["early", "late"])
    });
    assert_all_equal(&c);
}

#[test]
fn proposals_that_arrive_together_are_one_append_per_follower() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    commit(&mut c, leader, register("n1"));
    c.rounds(2);
    let names: Vec<String> = (0..20).map(|i| format!("j{i:02}")).collect();
    let cmds = names.iter().map(|n| (submit(n), None)).collect();
    let mut answers = c.propose_together(leader, cmds);
    let appends = c.in_flight_from(leader, MessageType::MsgAppend);
    assert_eq!(appends.len(), 2, "one append per follower");
    assert!(appends.iter().all(|m| m.entries.len() == names.len()));
    for a in &mut answers {
        await_answer(&mut c, a, 10).expect("committed and applied");
    }
    c.run_until(10, "every replica applied every job", |c| {
        c.ids().iter().all(|id| job_names(c, *id) == names)
    });
    assert_all_equal(&c);
}

#[test]
fn read_barriers_asked_together_share_one_read_index_and_see_acknowledged_writes() {
    // Without leases, so that the leader's reads are heartbeat rounds too
    // (with them: `lease_tests.rs`).
    let mut c = Cluster::with_options(
        3,
        RaftOptions {
            lease_reads: false,
            ..Default::default()
        },
    );
    let leader = c.elect();
    let f = c.ids().into_iter().find(|id| *id != leader).unwrap();
    // A write acknowledged by the leader that the follower has not seen.
    c.isolate(f);
    commit(&mut c, leader, register("n1"));
    c.heal();
    assert!(c.with_state(f, |s| s.nodes.is_empty()));
    let mut reads = c.read_barriers_together(f, 5);
    assert_eq!(
        c.in_flight_from(f, MessageType::MsgReadIndex).len(),
        1,
        "one ReadIndex for five barriers"
    );
    for r in &mut reads {
        assert!(answered(r).is_none(), "not before the leader confirms");
    }
    for r in &mut reads {
        await_answer(&mut c, r, 5).expect("read index");
    }
    // Every barrier answered means the acknowledged write is visible.
    assert!(c.with_state(f, |s| s.nodes.contains_key("n1")));

    // On the leader: one heartbeat round (one per follower) for them all.
    c.deliver_all();
    let mut reads = c.read_barriers_together(leader, 5);
    let rounds = c
        .in_flight_from(leader, MessageType::MsgHeartbeat)
        .iter()
        .filter(|m| !m.context.is_empty())
        .count();
    assert_eq!(
        rounds, 2,
        "one heartbeat with the read's context per follower"
    );
    for r in &mut reads {
        await_answer(&mut c, r, 5).expect("read index");
    }
}

#[test]
fn a_fenced_proposal_commits_only_in_its_term() {
    let mut c = Cluster::new(3);
    let old = c.elect();
    c.run_until(10, "the leader applied an entry of its term", |c| {
        c.status(old).current_term_applied
    });
    for id in c.ids().into_iter().filter(|id| *id != old) {
        assert!(!c.status(id).current_term_applied, "a follower never is");
    }
    let term = c.status(old).term;
    commit(&mut c, old, register("n1"));
    let mut a = c.propose_together(old, vec![(submit("fenced"), Some(term))]);
    await_answer(&mut c, &mut a[0], 10).expect("fenced to the current term");
    // Fenced to another term: refused without reaching the log.
    let before = c.commit(old);
    let mut a = c.propose_together(old, vec![(submit("stale"), Some(term - 1))]);
    assert!(matches!(
        answered(&mut a[0]),
        Some(Err(ProposeError::NotLeader { .. }))
    ));

    // A deposed leader that does not know it yet: the majority elects a new
    // one, which acknowledges a write; the old one's fenced entry (checked
    // on state without that write) never commits.
    c.isolate(old);
    let majority: Vec<u64> = c.ids().into_iter().filter(|id| *id != old).collect();
    c.run_until(100, "a leader among the majority", |c| {
        c.leader_of(&majority).is_some()
    });
    let new = c.leader_of(&majority).unwrap();
    commit(&mut c, new, submit("acknowledged"));
    assert!(c.status(old).is_leader() && c.status(old).current_term_applied);
    let mut late = c.propose_together(old, vec![(submit("late"), Some(term))]);
    c.heal();
    match await_answer(&mut c, &mut late[0], 60) {
        Err(ProposeError::NotLeader { .. }) => {}
        other => panic!("the deposed leader's fenced proposal: {other:?}"),
    }
    c.run_until(30, "every replica applied the same", |c| {
        c.ids().iter().all(|id| c.applied(*id) == c.applied(new))
    });
    for id in c.ids() {
        assert_eq!(
            job_names(&c, id),
            ["acknowledged", "fenced"],
            "replica {id}"
        );
    }
    assert!(c.commit(new) > before);
    assert_all_equal(&c);
}
