//! Durable storage for one scheduler replica, in one RocksDB database:
//!
//! | column family | key | value |
//! |---|---|---|
//! | `raft_log`  | entry index (u64 big-endian) | `eraftpb::Entry` (protobuf) |
//! | `raft_meta` | `hard_state`, `conf_state`, `snapshot_meta` | protobuf |
//! | `state`     | `applied`, `job/<name>`, `node/<name>`, `workflow/<name>`, `wfnode/<workflow>/<node>`, `memo/<key>` | u64 BE / JSON objects |
//!
//! Log entries and the hard state are written in one synced batch before
//! anything that depends on them is acknowledged. Applied objects and the
//! applied index are written together in one batch, so after a crash the
//! state column family is exactly the state at `applied`, and Raft replays
//! the committed entries after it.
//!
//! [`RaftStorage`] implements raft-rs's `Storage` trait over an in-memory
//! mirror of the uncompacted log (reads never touch disk).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

use crate::state::ObjKey;

const CF_LOG: &str = "raft_log";
const CF_META: &str = "raft_meta";
const CF_STATE: &str = "state";
const KEY_HARD_STATE: &[u8] = b"hard_state";
const KEY_CONF_STATE: &[u8] = b"conf_state";
const KEY_SNAPSHOT_META: &[u8] = b"snapshot_meta";
const KEY_APPLIED: &[u8] = b"applied";
const KEY_PEERS: &[u8] = b"peer_addresses";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("RocksDB at {path}: {source}")]
    Rocks {
        path: String,
        source: rocksdb::Error,
    },
    #[error("corrupt {what} in the scheduler's data folder: {detail}")]
    Corrupt { what: String, detail: String },
}

/// What was stored when the replica last stopped.
pub struct Recovered {
    /// Every object in the state column family: (storage key, JSON), for
    /// [`crate::state::State::from_stored`].
    pub objects: Vec<(String, Vec<u8>)>,
    pub applied: u64,
}

impl Recovered {
    /// Decode the objects into the state machine.
    pub fn state(&self) -> Result<crate::state::State, StoreError> {
        crate::state::State::from_stored(&self.objects).map_err(|e| corrupt("state", e))
    }
}

struct Core {
    db: Arc<DB>,
    path: String,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot_meta: SnapshotMetadata,
    /// entries[i].index == first_index + i
    entries: Vec<Entry>,
}

/// raft-rs storage over RocksDB. Cheap to clone (shared core).
#[derive(Clone)]
pub struct RaftStorage {
    core: Arc<RwLock<Core>>,
}

fn rocks(path: &str) -> impl Fn(rocksdb::Error) -> StoreError + '_ {
    move |source| StoreError::Rocks {
        path: path.to_string(),
        source,
    }
}

fn corrupt(what: &str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

impl RaftStorage {
    /// Open (or create) the database in `dir` and load everything.
    pub fn open(dir: &Path) -> Result<(RaftStorage, Recovered), StoreError> {
        let path = dir.display().to_string();
        std::fs::create_dir_all(dir).map_err(|e| corrupt("data folder", format!("{path}: {e}")))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs =
            [CF_LOG, CF_META, CF_STATE].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(rocks(&path))?;
        let db = Arc::new(db);

        let meta = db.cf_handle(CF_META).expect("created above");
        let load = |key: &[u8]| db.get_cf(meta, key).map_err(rocks(&path));
        let hard_state = match load(KEY_HARD_STATE)? {
            Some(b) => HardState::parse_from_bytes(&b).map_err(|e| corrupt("hard state", e))?,
            None => HardState::default(),
        };
        let conf_state = match load(KEY_CONF_STATE)? {
            Some(b) => ConfState::parse_from_bytes(&b).map_err(|e| corrupt("conf state", e))?,
            None => ConfState::default(),
        };
        let snapshot_meta = match load(KEY_SNAPSHOT_META)? {
            Some(b) => SnapshotMetadata::parse_from_bytes(&b)
                .map_err(|e| corrupt("snapshot metadata", e))?,
            None => SnapshotMetadata::default(),
        };

        let log = db.cf_handle(CF_LOG).expect("created above");
        let mut entries = Vec::new();
        for item in db.iterator_cf(log, rocksdb::IteratorMode::Start) {
            let (_, v) = item.map_err(rocks(&path))?;
            let e = Entry::parse_from_bytes(&v).map_err(|e| corrupt("log entry", e))?;
            if let Some(prev) = entries.last() {
                let prev: &Entry = prev;
                if e.index != prev.index + 1 {
                    return Err(corrupt(
                        "raft log",
                        format!("gap after index {}", prev.index),
                    ));
                }
            }
            entries.push(e);
        }

        let state = db.cf_handle(CF_STATE).expect("created above");
        let SnapshotData { applied, objects } =
            read_state(db.iterator_cf(state, rocksdb::IteratorMode::Start), &path)?;
        // Everything up to the last snapshot is applied by definition.
        let applied = applied.max(snapshot_meta.index);
        // Applied entries are committed. An older build could store the
        // applied index before the hard state that commits it (killed in
        // between); Raft refuses to start with applied above commit.
        let mut hard_state = hard_state;
        if applied > hard_state.commit
            && applied <= entries.last().map_or(snapshot_meta.index, |e| e.index)
        {
            hard_state.commit = applied;
        }
        let core = Core {
            db,
            path,
            hard_state,
            conf_state,
            snapshot_meta,
            entries,
        };
        Ok((
            RaftStorage {
                core: Arc::new(RwLock::new(core)),
            },
            Recovered {
                objects: objects
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect(),
                applied,
            },
        ))
    }

    fn rl(&self) -> RwLockReadGuard<'_, Core> {
        self.core.read().unwrap_or_else(|p| p.into_inner())
    }

    fn wl(&self) -> RwLockWriteGuard<'_, Core> {
        self.core.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a configuration was ever stored (the replica was bootstrapped).
    pub fn is_initialized(&self) -> bool {
        let c = self.rl();
        !c.conf_state.voters.is_empty() || !c.conf_state.learners.is_empty()
    }

    /// Bootstrap a brand-new replica of a brand-new cluster with the
    /// initial voters. The log starts after a snapshot at index 1 that holds
    /// the configuration, so a replica added later (with an empty log) is
    /// brought up by a snapshot, which carries the configuration, instead of
    /// replaying a log that does not.
    pub fn initialize(&self, voters: &[u64]) -> Result<(), StoreError> {
        let cs = ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        };
        let mut meta = SnapshotMetadata {
            index: 1,
            term: 1,
            ..Default::default()
        };
        meta.set_conf_state(cs.clone());
        let hs = HardState {
            term: 1,
            commit: 1,
            ..Default::default()
        };
        let mut c = self.wl();
        let meta_cf = c.db.cf_handle(CF_META).expect("exists");
        let state = c.db.cf_handle(CF_STATE).expect("exists");
        let mut b = WriteBatch::default();
        b.put_cf(
            meta_cf,
            KEY_CONF_STATE,
            cs.write_to_bytes().map_err(|e| corrupt("conf state", e))?,
        );
        b.put_cf(
            meta_cf,
            KEY_SNAPSHOT_META,
            meta.write_to_bytes()
                .map_err(|e| corrupt("snapshot metadata", e))?,
        );
        b.put_cf(
            meta_cf,
            KEY_HARD_STATE,
            hs.write_to_bytes().map_err(|e| corrupt("hard state", e))?,
        );
        b.put_cf(state, KEY_APPLIED, 1u64.to_be_bytes());
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        c.db.write_opt(b, &wo).map_err(rocks(&c.path))?;
        c.conf_state = cs;
        c.snapshot_meta = meta;
        c.hard_state = hs;
        c.entries.clear();
        Ok(())
    }

    /// Replica addresses agreed through membership changes (id → gRPC URL).
    pub fn peer_addresses(&self) -> Result<BTreeMap<u64, String>, StoreError> {
        let c = self.rl();
        let meta = c.db.cf_handle(CF_META).expect("exists");
        match c.db.get_cf(meta, KEY_PEERS).map_err(rocks(&c.path))? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| corrupt("peer addresses", e)),
            None => Ok(BTreeMap::new()),
        }
    }

    pub fn set_peer_addresses(&self, peers: &BTreeMap<u64, String>) -> Result<(), StoreError> {
        let c = self.rl();
        let meta = c.db.cf_handle(CF_META).expect("exists");
        let v = serde_json::to_vec(peers).map_err(|e| corrupt("peer addresses", e))?;
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        c.db.put_cf_opt(meta, KEY_PEERS, v, &wo)
            .map_err(rocks(&c.path))
    }

    pub fn set_conf_state(&self, cs: ConfState) -> Result<(), StoreError> {
        let mut c = self.wl();
        let bytes = cs.write_to_bytes().map_err(|e| corrupt("conf state", e))?;
        let meta = c.db.cf_handle(CF_META).expect("exists");
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        let mut b = WriteBatch::default();
        b.put_cf(meta, KEY_CONF_STATE, bytes);
        c.db.write_opt(b, &wo).map_err(rocks(&c.path))?;
        c.conf_state = cs;
        Ok(())
    }

    pub fn conf_state(&self) -> ConfState {
        self.rl().conf_state.clone()
    }

    pub fn hard_state(&self) -> HardState {
        self.rl().hard_state.clone()
    }

    /// Append entries (replacing any conflicting suffix) and store the hard
    /// state, in one batch; synced when `sync`.
    pub fn append(
        &self,
        ents: &[Entry],
        hs: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError> {
        let mut c = self.wl();
        let log = c.db.cf_handle(CF_LOG).expect("exists");
        let meta = c.db.cf_handle(CF_META).expect("exists");
        let mut b = WriteBatch::default();
        if let Some(first) = ents.first() {
            let first_index = c.first_index();
            if first.index < first_index {
                return Err(corrupt(
                    "append",
                    format!(
                        "entry {} is before the log start {first_index}",
                        first.index
                    ),
                ));
            }
            let last = c.last_index();
            if first.index <= last {
                // Drop the conflicting suffix [first.index, last].
                b.delete_range_cf(log, first.index.to_be_bytes(), (last + 1).to_be_bytes());
            }
            for e in ents {
                b.put_cf(
                    log,
                    e.index.to_be_bytes(),
                    e.write_to_bytes().map_err(|e| corrupt("entry", e))?,
                );
            }
        }
        if let Some(hs) = hs {
            b.put_cf(
                meta,
                KEY_HARD_STATE,
                hs.write_to_bytes().map_err(|e| corrupt("hard state", e))?,
            );
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        c.db.write_opt(b, &wo).map_err(rocks(&c.path))?;
        if let Some(first) = ents.first() {
            let offset = c.first_index();
            c.entries.truncate((first.index - offset) as usize);
            c.entries.extend_from_slice(ents);
        }
        if let Some(hs) = hs {
            c.hard_state = hs.clone();
        }
        Ok(())
    }

    /// Store the objects changed by applying entries up to `applied`, the
    /// applied index itself and the commit index, in one batch. Not synced:
    /// the log is already durable and is replayed from the stored `applied`.
    pub fn persist_applied(
        &self,
        applied: u64,
        commit: Option<u64>,
        objects: &[(ObjKey, Option<Vec<u8>>)],
    ) -> Result<(), StoreError> {
        let mut c = self.wl();
        let state = c.db.cf_handle(CF_STATE).expect("exists");
        let meta = c.db.cf_handle(CF_META).expect("exists");
        let mut b = WriteBatch::default();
        for (k, v) in objects {
            match v {
                Some(v) => b.put_cf(state, k.storage_key(), v),
                None => b.delete_cf(state, k.storage_key()),
            }
        }
        b.put_cf(state, KEY_APPLIED, applied.to_be_bytes());
        let mut hs = c.hard_state.clone();
        if let Some(commit) = commit {
            if commit > hs.commit {
                hs.commit = commit;
                b.put_cf(
                    meta,
                    KEY_HARD_STATE,
                    hs.write_to_bytes().map_err(|e| corrupt("hard state", e))?,
                );
            }
        }
        c.db.write(b).map_err(rocks(&c.path))?;
        c.hard_state = hs;
        Ok(())
    }

    /// Drop log entries before `index` (all of them applied and stored in
    /// the state column family).
    pub fn compact(&self, index: u64) -> Result<(), StoreError> {
        let mut c = self.wl();
        let first = c.first_index();
        if index <= first || index > c.last_index() + 1 {
            return Ok(());
        }
        let keep_from = (index - first) as usize;
        let term = c.entries[keep_from - 1].term;
        let mut meta = c.snapshot_meta.clone();
        meta.index = index - 1;
        meta.term = term;
        meta.set_conf_state(c.conf_state.clone());
        let log = c.db.cf_handle(CF_LOG).expect("exists");
        let meta_cf = c.db.cf_handle(CF_META).expect("exists");
        let mut b = WriteBatch::default();
        b.delete_range_cf(log, first.to_be_bytes(), index.to_be_bytes());
        b.put_cf(
            meta_cf,
            KEY_SNAPSHOT_META,
            meta.write_to_bytes()
                .map_err(|e| corrupt("snapshot metadata", e))?,
        );
        c.db.write(b).map_err(rocks(&c.path))?;
        c.entries.drain(..keep_from);
        c.snapshot_meta = meta;
        Ok(())
    }

    /// Number of entries held in the log.
    pub fn log_len(&self) -> usize {
        self.rl().entries.len()
    }

    /// A snapshot of the applied state, for a follower that fell behind the
    /// compacted log: the state column family as of its `applied` index.
    fn build_snapshot(&self, request_index: u64) -> Result<Option<Snapshot>, StoreError> {
        let c = self.rl();
        let state = c.db.cf_handle(CF_STATE).expect("exists");
        let snap = c.db.snapshot();
        let data = read_state(
            snap.iterator_cf(state, rocksdb::IteratorMode::Start),
            &c.path,
        )?;
        if data.applied < request_index || data.applied < c.snapshot_meta.index {
            return Ok(None);
        }
        let term = if data.applied == c.snapshot_meta.index {
            c.snapshot_meta.term
        } else {
            let offset = c.first_index();
            match c.entries.get((data.applied - offset) as usize) {
                Some(e) => e.term,
                None => return Ok(None),
            }
        };
        let mut s = Snapshot {
            data: encode_snapshot(&data).into(),
            ..Default::default()
        };
        let m = s.mut_metadata();
        m.index = data.applied;
        m.term = term;
        m.set_conf_state(c.conf_state.clone());
        Ok(Some(s))
    }

    /// Replace everything with a snapshot from the leader: the state column
    /// family, the applied index, the log (emptied) and the configuration.
    /// (A replica does the two halves side by side: `Replica::install_snapshot`.)
    #[cfg(test)]
    pub fn apply_snapshot(&self, snap: &Snapshot) -> Result<Recovered, StoreError> {
        let rec = read_snapshot(snap)?;
        self.store_snapshot(snap.get_metadata(), &rec.objects)?;
        Ok(rec)
    }

    /// Replace everything stored with a snapshot already read with
    /// [`read_snapshot`]: the state column family, the applied index, the
    /// log (emptied) and the configuration. A caller may decode the objects
    /// into state on another thread meanwhile.
    pub fn store_snapshot(
        &self,
        meta: &SnapshotMetadata,
        objects: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let mut c = self.wl();
        let log = c.db.cf_handle(CF_LOG).expect("exists");
        let meta_cf = c.db.cf_handle(CF_META).expect("exists");
        let state = c.db.cf_handle(CF_STATE).expect("exists");
        let mut b = WriteBatch::default();
        b.delete_range_cf(log, 0u64.to_be_bytes(), u64::MAX.to_be_bytes());
        // Remove every stored object, then write the snapshot's.
        for item in c.db.iterator_cf(state, rocksdb::IteratorMode::Start) {
            let (k, _) = item.map_err(rocks(&c.path))?;
            b.delete_cf(state, k);
        }
        for (k, v) in objects {
            b.put_cf(state, k, v);
        }
        b.put_cf(state, KEY_APPLIED, meta.index.to_be_bytes());
        let mut hs = c.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        b.put_cf(
            meta_cf,
            KEY_HARD_STATE,
            hs.write_to_bytes().map_err(|e| corrupt("hard state", e))?,
        );
        b.put_cf(
            meta_cf,
            KEY_CONF_STATE,
            meta.get_conf_state()
                .write_to_bytes()
                .map_err(|e| corrupt("conf state", e))?,
        );
        b.put_cf(
            meta_cf,
            KEY_SNAPSHOT_META,
            meta.write_to_bytes()
                .map_err(|e| corrupt("snapshot metadata", e))?,
        );
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        c.db.write_opt(b, &wo).map_err(rocks(&c.path))?;
        c.entries.clear();
        c.hard_state = hs;
        c.conf_state = meta.get_conf_state().clone();
        c.snapshot_meta = meta.clone();
        Ok(())
    }
}

/// A leader's snapshot as the objects it holds and the index it was taken at.
pub fn read_snapshot(snap: &Snapshot) -> Result<Recovered, StoreError> {
    let data = decode_snapshot(&snap.data)?;
    Ok(Recovered {
        objects: data
            .objects
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect(),
        applied: snap.get_metadata().index,
    })
}

/// Decode the state column family: the applied index and every object.
fn read_state<I>(items: I, path: &str) -> Result<SnapshotData, StoreError>
where
    I: Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
{
    let mut data = SnapshotData::default();
    for item in items {
        let (k, v) = item.map_err(rocks(path))?;
        if &*k == KEY_APPLIED {
            let bytes = v
                .as_ref()
                .try_into()
                .map_err(|_| corrupt("applied index", "length"))?;
            data.applied = u64::from_be_bytes(bytes);
        } else {
            // Objects are JSON under "kind/name" keys; the state machine
            // decodes them (State::from_stored).
            let key = String::from_utf8(k.to_vec()).map_err(|e| corrupt("state key", e))?;
            let value = String::from_utf8(v.to_vec())
                .map_err(|e| corrupt(&format!("stored object {key}"), e))?;
            data.objects.push((key, value));
        }
    }
    Ok(data)
}

/// What a snapshot carries: every object at `applied`, as (storage key,
/// JSON text) pairs.
#[derive(Debug, Default)]
struct SnapshotData {
    applied: u64,
    objects: Vec<(String, String)>,
}

/// A snapshot's bytes: `{"applied":N,"objects":[["KEY",OBJECT],...]}`, each
/// stored object's JSON written as it is (a value that is not a JSON object
/// as a JSON string, as every object was before). Escaping every object into
/// a string made a snapshot of 100,000 jobs about a second slower to build
/// and as much to read.
fn encode_snapshot(data: &SnapshotData) -> Vec<u8> {
    use std::io::Write as _;
    let size: usize = data
        .objects
        .iter()
        .map(|(k, v)| k.len() + v.len() + 8)
        .sum();
    let mut out = Vec::with_capacity(size + 64);
    let _ = write!(out, "{{\"applied\":{},\"objects\":[", data.applied);
    for (i, (k, v)) in data.objects.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        // Writing a string to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, k);
        out.push(b',');
        if v.starts_with('{') {
            out.extend_from_slice(v.as_bytes());
        } else {
            let _ = serde_json::to_writer(&mut out, v);
        }
        out.push(b']');
    }
    out.extend_from_slice(b"]}");
    out
}

/// Read a snapshot's bytes ([`encode_snapshot`]); objects written as JSON
/// strings (by older replicas) are read too.
fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotData, StoreError> {
    #[derive(serde::Deserialize)]
    struct Wire<'a> {
        applied: u64,
        #[serde(borrow)]
        objects: Vec<(std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue)>,
    }
    let bad = |e| corrupt("snapshot from the leader", e);
    let wire: Wire = serde_json::from_slice(bytes).map_err(bad)?;
    let mut objects = Vec::with_capacity(wire.objects.len());
    for (k, raw) in wire.objects {
        let v = match raw.get() {
            text if text.starts_with('"') => serde_json::from_str::<String>(text).map_err(bad)?,
            text => text.to_string(),
        };
        objects.push((k.into_owned(), v));
    }
    Ok(SnapshotData {
        applied: wire.applied,
        objects,
    })
}

impl Core {
    fn first_index(&self) -> u64 {
        self.entries
            .first()
            .map(|e| e.index)
            .unwrap_or(self.snapshot_meta.index + 1)
    }
    fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map(|e| e.index)
            .unwrap_or(self.snapshot_meta.index)
    }
}

impl raft::Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.rl();
        Ok(RaftState::new(c.hard_state.clone(), c.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let c = self.rl();
        if low < c.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > c.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let offset = c.first_index();
        let mut ents = c.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        if let Some(max) = max_size.into() {
            let mut size = 0u64;
            let mut keep = 0;
            for e in &ents {
                size += u64::from(e.compute_size());
                if keep > 0 && size > max {
                    break;
                }
                keep += 1;
            }
            ents.truncate(keep);
        }
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let c = self.rl();
        if idx == c.snapshot_meta.index {
            return Ok(c.snapshot_meta.term);
        }
        let offset = c.first_index();
        if idx < offset {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > c.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(c.entries[(idx - offset) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.rl().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.rl().last_index())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let start = std::time::Instant::now();
        match self.build_snapshot(request_index) {
            Ok(Some(s)) => {
                tracing::info!(
                    "built a snapshot at index {} for replica {to} ({} MiB in {:.2} s)",
                    s.get_metadata().index,
                    s.data.len() >> 20,
                    start.elapsed().as_secs_f64()
                );
                Ok(s)
            }
            Ok(None) => Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            )),
            Err(e) => {
                tracing::error!("building a snapshot: {e}");
                Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests;
