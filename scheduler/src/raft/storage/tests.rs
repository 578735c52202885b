//! Storage tests: what survives a reopen, snapshots between replicas, and
//! compaction.

use super::*;
use raft::Storage as _;

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("e{index}").into_bytes().into(),
        ..Default::default()
    }
}

#[test]
fn log_hard_state_and_objects_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, rec) = RaftStorage::open(dir.path()).unwrap();
        assert_eq!(rec.applied, 0);
        assert!(!s.is_initialized());
        s.initialize(&[1]).unwrap();
        let hs = HardState {
            term: 2,
            vote: 1,
            ..Default::default()
        };
        assert_eq!(
            s.first_index().unwrap(),
            2,
            "the bootstrap snapshot holds index 1"
        );
        assert_eq!(s.term(1).unwrap(), 1);
        s.append(&[entry(2, 1), entry(3, 2)], Some(&hs), true)
            .unwrap();
        // A conflicting suffix replaces what was there.
        s.append(&[entry(3, 2), entry(4, 2)], None, true).unwrap();
        let job = br#"{"apiVersion":"gpuctl.io/v1","kind":"Job","metadata":{"name":"a"},"spec":{"tasks":[{"command":["true"]}]}}"#;
        s.persist_applied(3, Some(3), &[(ObjKey::Job("a".into()), Some(job.to_vec()))])
            .unwrap();
    }
    let (s, rec) = RaftStorage::open(dir.path()).unwrap();
    assert!(s.is_initialized());
    assert_eq!(rec.applied, 3);
    assert_eq!(rec.state().unwrap().jobs.len(), 1);
    assert_eq!(s.last_index().unwrap(), 4);
    assert_eq!(s.term(3).unwrap(), 2);
    let st = s.initial_state().unwrap();
    assert_eq!((st.hard_state.term, st.hard_state.commit), (2, 3));
    assert_eq!(st.conf_state.voters, vec![1]);
    let ents = s
        .entries(2, 5, None, GetEntriesContext::empty(false))
        .unwrap();
    assert_eq!(
        ents.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
}

#[test]
fn applied_is_never_above_commit_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = RaftStorage::open(dir.path()).unwrap();
        s.initialize(&[1]).unwrap();
        let hs = HardState {
            term: 1,
            commit: 2,
            ..Default::default()
        };
        s.append(&[entry(2, 1), entry(3, 1), entry(4, 1)], Some(&hs), true)
            .unwrap();
        // Applied before the Ready's hard state (commit 4) was stored: the
        // commit goes with the applied index.
        s.persist_applied(4, Some(4), &[]).unwrap();
        assert_eq!(s.hard_state().commit, 4);
    }
    {
        // What an older build could leave: applied 4 stored, commit 2.
        let (s, rec) = RaftStorage::open(dir.path()).unwrap();
        let hs = HardState {
            term: 1,
            commit: 2,
            ..Default::default()
        };
        s.append(&[], Some(&hs), true).unwrap();
        assert_eq!(rec.applied, 4);
    }
    let (s, rec) = RaftStorage::open(dir.path()).unwrap();
    assert_eq!(rec.applied, 4);
    assert_eq!(
        s.initial_state().unwrap().hard_state.commit,
        4,
        "repaired on open"
    );
}

#[test]
fn snapshot_moves_state_to_another_replica() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, _) = RaftStorage::open(d1.path()).unwrap();
    a.initialize(&[1, 2, 3]).unwrap();
    a.append(&[entry(2, 1), entry(3, 2)], None, true).unwrap();
    let job = br#"{"apiVersion":"gpuctl.io/v1","kind":"Job","metadata":{"name":"a"},"spec":{"tasks":[{"command":["true"]}]}}"#;
    a.persist_applied(3, Some(3), &[(ObjKey::Job("a".into()), Some(job.to_vec()))])
        .unwrap();
    // Not yet applied that far: ask again later.
    assert!(a.snapshot(4, 2).is_err());
    let peers: BTreeMap<u64, String> = [(1, "http://a".to_string())].into();
    a.set_peer_addresses(&peers).unwrap();
    assert_eq!(a.peer_addresses().unwrap(), peers);
    let snap = a.snapshot(2, 2).unwrap();
    assert_eq!(
        (snap.get_metadata().index, snap.get_metadata().term),
        (3, 2)
    );

    let (b, _) = RaftStorage::open(d2.path()).unwrap();
    b.append(&[entry(1, 1)], None, true).unwrap();
    let rec = b.apply_snapshot(&snap).unwrap();
    assert_eq!((rec.applied, rec.state().unwrap().jobs.len()), (3, 1));
    assert_eq!((b.first_index().unwrap(), b.last_index().unwrap()), (4, 3));
    assert_eq!(b.term(3).unwrap(), 2);
    drop(b);
    let (b, rec) = RaftStorage::open(d2.path()).unwrap();
    assert_eq!((rec.applied, rec.state().unwrap().jobs.len()), (3, 1));
    assert_eq!(b.conf_state().voters, vec![1, 2, 3]);
}

#[test]
fn workflows_survive_reopen_and_snapshot() {
    use crate::state::{Command, Envelope, State, WorkflowObject};
    let yaml = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: wf}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: a, template: t}
      - {name: b, template: t, dependencies: [a]}
  - name: t
    container: {image: x, command: ["true"]}
"#;
    let mut st = State::default();
    let env = Envelope::new(
        5,
        Command::SubmitWorkflow {
            name: "wf".into(),
            workflow: Box::new(gpuctl_pipelines::parse_workflow("wf.yaml", yaml).unwrap()),
            arguments: Default::default(),
            owner: None,
        },
    );
    st.apply(2, &env).unwrap();
    let objects: Vec<(ObjKey, Option<Vec<u8>>)> = st
        .take_dirty()
        .into_iter()
        .map(|k| {
            let v = st.object_json(&k);
            (k, v)
        })
        .collect();
    assert!(objects
        .iter()
        .any(|(k, _)| matches!(k, ObjKey::WorkflowNode(w, id) if w == "wf" && id == "wf.a")));
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    {
        let (a, _) = RaftStorage::open(d1.path()).unwrap();
        a.initialize(&[1, 2]).unwrap();
        a.append(&[entry(2, 1)], None, true).unwrap();
        a.persist_applied(2, Some(2), &objects).unwrap();
    }
    let (a, rec) = RaftStorage::open(d1.path()).unwrap();
    let stored = |w: Vec<&WorkflowObject>| serde_json::to_value(w).unwrap();
    let live = stored(st.workflows.values().collect());
    let back = rec.state().unwrap();
    assert_eq!(back.workflows.len(), 1);
    assert_eq!(stored(back.workflows.values().collect()), live);
    assert_eq!(back.workflows["wf"].jobs["wf.a"], "wf-a");
    assert!(back.workflows["wf"].running.contains_key("wf-a"));

    let snap = a.snapshot(2, 2).unwrap();
    let (b, _) = RaftStorage::open(d2.path()).unwrap();
    let rec = b.apply_snapshot(&snap).unwrap();
    assert_eq!(
        stored(rec.state().unwrap().workflows.values().collect()),
        live
    );
    drop(b);
    let (_, rec) = RaftStorage::open(d2.path()).unwrap();
    assert_eq!(
        stored(rec.state().unwrap().workflows.values().collect()),
        live
    );
}

#[test]
fn endpoints_survive_restart_and_travel_in_snapshots() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, _) = RaftStorage::open(d1.path()).unwrap();
    a.initialize(&[1, 2]).unwrap();
    a.append(&[entry(2, 1)], None, true).unwrap();
    let ep = br#"{"apiVersion":"gpuctl.io/v1","kind":"Endpoint","metadata":{"name":"lin"},"spec":{"model":{"path":"/m.onnx"}},"status":{"desiredReplicas":1,"replicas":[{"job":"lin-replica-0","port":0}],"nextReplica":1}}"#;
    a.persist_applied(
        2,
        Some(2),
        &[(ObjKey::Endpoint("lin".into()), Some(ep.to_vec()))],
    )
    .unwrap();
    let snap = a.snapshot(2, 1).unwrap();
    drop(a);
    let (_a, rec) = RaftStorage::open(d1.path()).unwrap();
    let st = rec.state().unwrap();
    assert_eq!(st.endpoints.len(), 1);
    assert_eq!(st.endpoints["lin"].status.replicas[0].job, "lin-replica-0");
    let (b, _) = RaftStorage::open(d2.path()).unwrap();
    let rec = b.apply_snapshot(&snap).unwrap();
    assert_eq!(rec.state().unwrap().endpoints.len(), 1);
    drop(b);
    let (_b, rec) = RaftStorage::open(d2.path()).unwrap();
    let st = rec.state().unwrap();
    assert_eq!(st.endpoints["lin"].metadata.name, "lin");
    assert_eq!(st.endpoints["lin"].status.desired_replicas, 1);
}

#[test]
fn compaction_keeps_term_of_last_dropped_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = RaftStorage::open(dir.path()).unwrap();
    s.append(
        &[entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 3)],
        None,
        true,
    )
    .unwrap();
    s.compact(3).unwrap();
    assert_eq!(s.first_index().unwrap(), 3);
    assert_eq!(s.term(2).unwrap(), 1);
    assert!(matches!(
        s.term(1),
        Err(raft::Error::Store(StorageError::Compacted))
    ));
    drop(s);
    let (s, _) = RaftStorage::open(dir.path()).unwrap();
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (3, 4));
    assert_eq!(s.term(2).unwrap(), 1);
}

#[test]
fn snapshots_carry_objects_as_they_are_and_read_the_older_escaped_form() {
    let job = r#"{"apiVersion":"gpuctl.io/v1","kind":"Job","metadata":{"name":"a \"quoted\" \\ name"},"spec":{"tasks":[{"command":["echo","ü \n"]}]}}"#;
    let data = SnapshotData {
        applied: 7,
        objects: vec![
            ("job/a".into(), job.into()),
            ("other/\"x\"".into(), "not an object".into()),
        ],
    };
    let bytes = encode_snapshot(&data);
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(
        text.contains(job),
        "the object is embedded, not escaped: {text}"
    );
    let back = decode_snapshot(&bytes).unwrap();
    assert_eq!(back.applied, 7);
    assert_eq!(back.objects, data.objects);
    // What replicas wrote before: every object a JSON string.
    let older = serde_json::json!({"applied": 7, "objects": [["job/a", job]]}).to_string();
    let back = decode_snapshot(older.as_bytes()).unwrap();
    assert_eq!(back.objects, vec![("job/a".to_string(), job.to_string())]);
    // Bytes that are not a snapshot are refused with a reason.
    let e = decode_snapshot(b"{\"applied\":1,\"objects\":[[\"k\",{]]}").unwrap_err();
    assert!(e.to_string().contains("snapshot from the leader"), "{e}");
}
