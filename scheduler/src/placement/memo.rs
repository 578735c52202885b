//! A memo of per-node work between decisions. Placing one task changes one
//! node; the fragmentation of every other node, and how well each of them
//! would take a task of a given shape, stay what they were. The memo keeps
//! both per node, each with the node state it was worked out for, and hands
//! an entry back only while the node is still in that state, so it can
//! never be stale: nodes changed any way (commit, release, a field set by
//! hand) are simply worked out again.
//!
//! On top of that, a rank index per shape: the nodes that can take the
//! shape, ordered by the policy's rank, so that a decision reads the best
//! node instead of visiting every node. The index follows the model's
//! change log ([`Changes`]): before a read it re-ranks the nodes that
//! changed since its last read, and only those. It is tied to one model
//! (its change id); a memo used by another model rebuilds it.
//!
//! It lives in [`ClusterModel`](super::model::ClusterModel) behind a shared lock:
//! clones (the trial copy a gang is placed on) share it, which is sound for
//! the same reason. Entries hold for one workload mix and policy; another
//! empties it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use super::changes::Changes;
use super::mix::WorkloadMix;
use super::node::{GpuKind, NodeModel};
use super::request::PodRequest;
use super::score::frag::MixKinds;

/// Shapes remembered before the memo starts over (bounds its memory when
/// requests are very diverse).
const MAX_SHAPES: usize = 2048;

/// Shared, interior-mutable memo; see the module doc.
#[derive(Clone, Default)]
pub struct ScoreMemo(Arc<Mutex<Memo>>);

impl PartialEq for ScoreMemo {
    /// A memo never changes what a model is.
    fn eq(&self, _: &ScoreMemo) -> bool {
        true
    }
}

impl fmt::Debug for ScoreMemo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScoreMemo")
    }
}

impl ScoreMemo {
    /// The memo for decisions under `mix_id` and `policy` over `nodes`
    /// nodes, emptied first when it held entries for something else.
    pub(crate) fn lock(&self, mix_id: u64, policy: u8, nodes: usize) -> MutexGuard<'_, Memo> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if g.tag != Some((mix_id, policy)) || g.before.len() != nodes {
            *g = Memo {
                tag: Some((mix_id, policy)),
                before: vec![None; nodes],
                ..Memo::default()
            };
        }
        g
    }
}

/// The state of a node that the memo's entries depend on.
#[derive(Debug, Clone, PartialEq)]
struct NodeSig {
    cpu_used: u64,
    memory_used: u64,
    /// Free thousandths per GPU, 0 for an unhealthy one.
    free: Vec<u32>,
}

impl NodeSig {
    fn of(n: &NodeModel) -> NodeSig {
        NodeSig {
            cpu_used: n.cpu_used,
            memory_used: n.memory_used,
            free: n
                .gpus
                .iter()
                .map(|g| if g.healthy { g.free } else { 0 })
                .collect(),
        }
    }

    fn matches(&self, n: &NodeModel) -> bool {
        self.cpu_used == n.cpu_used
            && self.memory_used == n.memory_used
            && self.free.len() == n.gpus.len()
            && self
                .free
                .iter()
                .zip(&n.gpus)
                .all(|(&f, g)| f == if g.healthy { g.free } else { 0 })
    }
}

/// A node's best option for one shape, as the policy ranks options within
/// a node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeBest {
    /// Growth of the node's fragmentation.
    pub delta: f64,
    /// The policy's integer score, where it has one.
    pub score: i64,
    /// Room left on the chosen GPUs.
    pub tight: u32,
    pub gpus: Vec<usize>,
}

/// A node's best option for a shape (`None`: it has none), with the state
/// it holds for.
type BestEntry = (NodeSig, Option<NodeBest>);

/// A node's rank for one shape, best first, ending with the node's index
/// (the first of equals wins). The policy defines the other fields.
pub(crate) type RankKey = (i64, u32, i64, usize);

/// Per shape: the nodes that can take it, ordered by rank, kept current by
/// re-ranking the nodes the model's change log names (see [`Memo::stale`]).
#[derive(Debug, Default)]
struct ShapeIndex {
    built: bool,
    ranked: BTreeSet<RankKey>,
    /// Per node: its key in `ranked` (`None`: it cannot take the shape).
    key: Vec<Option<RankKey>>,
    /// Per node: the version it was ranked at.
    seen: Vec<u64>,
    /// The change number up to which the log has been read.
    cursor: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Memo {
    tag: Option<(u64, u8)>,
    /// Fragmentation of each node.
    before: Vec<Option<(NodeSig, f64)>>,
    shapes: HashMap<PodRequest, usize>,
    /// Per shape, per node: the node's best option (`None`: no option).
    best: Vec<Vec<Option<BestEntry>>>,
    /// Per shape: the rank index (parallel to `best`).
    index: Vec<ShapeIndex>,
    /// The model (its [`Changes::id`]) the indexes follow.
    index_model: u64,
    /// Which kinds each group of the mix accepts, for the model's kinds.
    mix_kinds: Option<Arc<MixKinds>>,
}

impl Memo {
    /// The mix's [`MixKinds`] for `kinds`, worked out again only when the
    /// kinds are not those it was worked out for (the memo holds one mix).
    pub(crate) fn mix_kinds(&mut self, mix: &WorkloadMix, kinds: &[GpuKind]) -> Arc<MixKinds> {
        match &self.mix_kinds {
            Some(t) if t.holds_for(kinds, mix.groups().len()) => t.clone(),
            _ => {
                let t = Arc::new(MixKinds::of(mix, kinds));
                self.mix_kinds = Some(t.clone());
                t
            }
        }
    }

    /// The slot of `req`'s shape.
    pub(crate) fn shape(&mut self, req: &PodRequest) -> usize {
        if let Some(&s) = self.shapes.get(req) {
            return s;
        }
        if self.shapes.len() >= MAX_SHAPES {
            self.shapes.clear();
            self.best.clear();
            self.index.clear();
        }
        let s = self.best.len();
        self.best.push(vec![None; self.before.len()]);
        self.index.push(ShapeIndex::default());
        self.shapes.insert(req.clone(), s);
        s
    }

    /// Node `i`'s fragmentation, worked out by `frag` unless remembered for
    /// its present state.
    pub(crate) fn before(&mut self, i: usize, n: &NodeModel, frag: impl FnOnce() -> f64) -> f64 {
        match &self.before[i] {
            Some((sig, f)) if sig.matches(n) => *f,
            _ => {
                let f = frag();
                self.before[i] = Some((NodeSig::of(n), f));
                f
            }
        }
    }

    /// Node `i`'s best option for `shape` if remembered for its present state.
    pub(crate) fn best(&self, shape: usize, i: usize, n: &NodeModel) -> Option<&Option<NodeBest>> {
        match &self.best[shape][i] {
            Some((sig, b)) if sig.matches(n) => Some(b),
            _ => None,
        }
    }

    pub(crate) fn set_best(&mut self, shape: usize, i: usize, n: &NodeModel, b: Option<NodeBest>) {
        self.best[shape][i] = Some((NodeSig::of(n), b));
    }

    /// The nodes whose rank for `shape` must be worked out (again) before
    /// the index can be read: every node the first time, after that the
    /// nodes that changed since the last call (each once), or every node
    /// whose version moved when the log no longer reaches back that far.
    /// They count as ranked from here on: [`Memo::rank`] each of them.
    pub(crate) fn stale(&mut self, shape: usize, ch: &Changes, out: &mut Vec<usize>) {
        let nodes = self.before.len();
        if self.index_model != ch.id {
            self.index_model = ch.id;
            for ix in &mut self.index {
                *ix = ShapeIndex::default();
            }
        }
        let ix = &mut self.index[shape];
        let version = |i: usize| ch.version.get(i).copied().unwrap_or(0);
        out.clear();
        if !ix.built {
            *ix = ShapeIndex {
                built: true,
                ranked: BTreeSet::new(),
                key: vec![None; nodes],
                seen: (0..nodes).map(version).collect(),
                cursor: ch.end(),
            };
            out.extend(0..nodes);
            return;
        }
        if ix.cursor < ch.base {
            for i in 0..nodes {
                if ix.seen[i] != version(i) {
                    ix.seen[i] = version(i);
                    out.push(i);
                }
            }
        } else {
            for &i in &ch.log[(ix.cursor - ch.base) as usize..] {
                if ix.seen[i] != version(i) {
                    ix.seen[i] = version(i);
                    out.push(i);
                }
            }
        }
        ix.cursor = ch.end();
    }

    /// Set node `i`'s rank for `shape` (`None`: it cannot take it).
    pub(crate) fn rank(&mut self, shape: usize, i: usize, key: Option<RankKey>) {
        let ix = &mut self.index[shape];
        if let Some(old) = ix.key[i].take() {
            ix.ranked.remove(&old);
        }
        if let Some(k) = key {
            debug_assert_eq!(k.3, i);
            ix.ranked.insert(k);
            ix.key[i] = Some(k);
        }
    }

    /// Node `i`'s rank for `shape`, as last set.
    pub(crate) fn rank_of(&self, shape: usize, i: usize) -> Option<RankKey> {
        self.index[shape].key.get(i).copied().flatten()
    }

    /// The best-ranked node for `shape`.
    pub(crate) fn top(&self, shape: usize) -> Option<RankKey> {
        self.index[shape].ranked.first().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::filter::testutil::node;

    #[test]
    fn entries_hold_only_for_the_state_they_were_made_for() {
        let memo = ScoreMemo::default();
        let n = node(8000, 1 << 30, &[0, 500]);
        let req = PodRequest {
            gpus: 1,
            gpu_milli: 500,
            ..Default::default()
        };
        let b = NodeBest {
            delta: 1.0,
            score: 0,
            tight: 0,
            gpus: vec![1],
        };
        {
            let mut m = memo.lock(1, 0, 1);
            let s = m.shape(&req);
            assert_eq!(m.shape(&req), s);
            assert!(m.best(s, 0, &n).is_none());
            m.set_best(s, 0, &n, Some(b.clone()));
            assert_eq!(m.best(s, 0, &n), Some(&Some(b.clone())));
            assert_eq!(m.before(0, &n, || 7.0), 7.0);
            assert_eq!(m.before(0, &n, || unreachable!()), 7.0);
        }
        // (what changes on the node, whether the entries still hold)
        type Change = fn(&mut NodeModel);
        let cases: [(&str, Change, bool); 5] = [
            ("nothing", |_| {}, true),
            ("a GPU's free share", |n| n.gpus[0].free -= 10, false),
            ("CPU used", |n| n.cpu_used += 1, false),
            ("memory used", |n| n.memory_used += 1, false),
            (
                "a GPU turned unhealthy",
                |n| n.gpus[1].healthy = false,
                false,
            ),
        ];
        for (what, change, holds) in cases {
            let mut c = n.clone();
            change(&mut c);
            let mut m = memo.lock(1, 0, 1);
            let s = m.shape(&req);
            assert_eq!(m.best(s, 0, &c).is_some(), holds, "{what}");
            assert_eq!(m.before(0, &c, || 9.0) == 7.0, holds, "{what}");
            m.before[0] = Some((NodeSig::of(&n), 7.0));
        }
        // Another mix or policy starts over; clones share the memo.
        let other = memo.clone();
        let mut m = other.lock(2, 0, 1);
        let s = m.shape(&req);
        assert!(m.best(s, 0, &n).is_none());
        assert_eq!(memo, ScoreMemo::default());
    }
}
