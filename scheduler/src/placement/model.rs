//! The whole cluster as the placement pipeline sees it, and the one place
//! where capacity is taken (`commit`) or given back (`release`), with
//! checkpoints to roll a trial back.

use std::collections::HashMap;

use super::changes::Changes;
use super::memo::ScoreMemo;
use super::node::{GpuKind, GpuSlot, NodeModel, MILLI};
use super::request::PodRequest;
use super::snapshot::NodeView;

/// Where one task goes: a node and, for a GPU task, which of its GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Index into [`ClusterModel::nodes`].
    pub node: usize,
    /// Positions in that node's `gpus`.
    pub gpus: Vec<usize>,
    /// Thousandths taken on each of them.
    pub milli: u32,
}

/// A commit that would over-commit or does not match the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("node #{0} does not exist")]
    NoNode(usize),
    #[error("node {node}: {what}")]
    Refused { node: String, what: String },
}

/// The whole cluster, with the numbers scores normalise by.
///
/// Nodes change only through methods ([`commit`](Self::commit),
/// [`release`](Self::release), [`node_mut`](Self::node_mut), ...), which
/// record the change (see [`Changes`]) so that the memo's per-shape index
/// revisits exactly the nodes that changed, and, inside a
/// [`checkpoint`](Self::checkpoint), keep what is needed to roll back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterModel {
    nodes: Vec<NodeModel>,
    pub kinds: Vec<GpuKind>,
    /// Largest node CPU and GPU capacity (BestFit normalises leftovers by them).
    pub max_cpu_milli: u64,
    pub max_gpu_milli: u64,
    kind_ids: HashMap<GpuKind, u16>,
    /// Per-node scores remembered between decisions (never part of equality).
    pub(crate) memo: ScoreMemo,
    /// Which nodes changed when (never part of equality).
    pub(crate) changes: Changes,
    /// Nodes as they were before changes made since the oldest open
    /// checkpoint, newest last (never part of equality).
    undo: Undo,
}

/// Where the model's change record stood when a checkpoint was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a checkpoint is closed by rollback or keep"]
pub struct Checkpoint(usize);

/// Undo log: (node, its state before a change), and how many checkpoints
/// are open (nothing is recorded while none is).
#[derive(Debug, Clone, Default)]
struct Undo {
    entries: Vec<(usize, NodeModel)>,
    open: usize,
}

impl PartialEq for Undo {
    fn eq(&self, _: &Undo) -> bool {
        true
    }
}

impl ClusterModel {
    /// Build from snapshot nodes (in their order).
    pub fn from_views<'a>(views: impl IntoIterator<Item = &'a NodeView>) -> ClusterModel {
        let mut m = ClusterModel::default();
        for v in views {
            m.push_view(v);
        }
        m
    }

    fn kind_id(&mut self, model: &str, memory_bytes: u64) -> u16 {
        let k = GpuKind {
            model: model.to_string(),
            memory_bytes,
        };
        if let Some(id) = self.kind_ids.get(&k) {
            return *id;
        }
        let id = self.kinds.len() as u16;
        self.kinds.push(k.clone());
        self.kind_ids.insert(k, id);
        id
    }

    /// Add one node; returns its index.
    pub fn push_view(&mut self, v: &NodeView) -> usize {
        let mut domains: Vec<&str> = Vec::new();
        let gpus = v
            .gpus
            .iter()
            .map(|g| {
                let domain = if g.nvlink_domain.is_empty() {
                    0
                } else if let Some(p) = domains.iter().position(|d| *d == g.nvlink_domain) {
                    p as u16 + 1
                } else {
                    domains.push(&g.nvlink_domain);
                    domains.len() as u16
                };
                GpuSlot {
                    index: g.index,
                    uuid: g.uuid.clone(),
                    kind: self.kind_id(&g.model, g.memory_bytes),
                    domain,
                    healthy: g.healthy,
                    free: MILLI.saturating_sub(g.used_milli),
                }
            })
            .collect::<Vec<_>>();
        self.max_cpu_milli = self.max_cpu_milli.max(v.cpu_milli);
        self.max_gpu_milli = self.max_gpu_milli.max(gpus.len() as u64 * u64::from(MILLI));
        self.changes.touch(self.nodes.len());
        self.nodes.push(NodeModel {
            name: v.name.clone(),
            schedulable: v.schedulable,
            cpu_milli: v.cpu_milli,
            memory_bytes: v.memory_bytes,
            cpu_used: v.cpu_used,
            memory_used: v.memory_used,
            gpus,
        });
        self.nodes.len() - 1
    }

    /// The nodes, in the order they were added.
    pub fn nodes(&self) -> &[NodeModel] {
        &self.nodes
    }

    /// Node `i`, to change by hand (recorded as a change of the node).
    pub fn node_mut(&mut self, i: usize) -> &mut NodeModel {
        self.touch(i);
        &mut self.nodes[i]
    }

    /// Record that node `i` is about to change.
    fn touch(&mut self, i: usize) {
        if self.undo.open > 0 {
            self.undo.entries.push((i, self.nodes[i].clone()));
        }
        self.changes.touch(i);
    }

    /// Open a checkpoint: changes from now on can be rolled back. Nested
    /// checkpoints close innermost first.
    pub fn checkpoint(&mut self) -> Checkpoint {
        self.undo.open += 1;
        Checkpoint(self.undo.entries.len())
    }

    /// Undo every change since `cp` and close it.
    pub fn rollback(&mut self, cp: Checkpoint) {
        while self.undo.entries.len() > cp.0 {
            let Some((i, n)) = self.undo.entries.pop() else {
                break;
            };
            self.changes.touch(i);
            self.nodes[i] = n;
        }
        self.close();
    }

    /// Keep the changes since `cp` and close it (an enclosing checkpoint
    /// can still roll them back).
    pub fn keep(&mut self, cp: Checkpoint) {
        debug_assert!(cp.0 <= self.undo.entries.len());
        self.close();
    }

    fn close(&mut self) {
        self.undo.open = self.undo.open.saturating_sub(1);
        if self.undo.open == 0 {
            self.undo.entries.clear();
        }
    }

    /// Thousandths of GPU over all healthy GPUs.
    pub fn gpu_capacity_milli(&self) -> u64 {
        self.nodes
            .iter()
            .flat_map(|n| &n.gpus)
            .filter(|g| g.healthy)
            .count() as u64
            * u64::from(MILLI)
    }

    /// Thousandths of GPU taken over all healthy GPUs.
    pub fn gpu_used_milli(&self) -> u64 {
        self.nodes
            .iter()
            .flat_map(|n| &n.gpus)
            .filter(|g| g.healthy)
            .map(|g| u64::from(MILLI - g.free.min(MILLI)))
            .sum()
    }

    /// Take what `p` says for `req`. Refuses (and changes nothing) if that
    /// would over-commit a GPU, CPU or memory, or does not match `req`.
    pub fn commit(&mut self, req: &PodRequest, p: &Placement) -> Result<(), CommitError> {
        let kinds = &self.kinds;
        let n = self.nodes.get(p.node).ok_or(CommitError::NoNode(p.node))?;
        let refuse = |what: String| CommitError::Refused {
            node: n.name.clone(),
            what,
        };
        if p.gpus.len() != req.gpus as usize || (req.gpus > 0 && p.milli != req.gpu_milli) {
            return Err(refuse(format!(
                "placement of {} GPU(s) x {}m does not match a request of {} x {}m",
                p.gpus.len(),
                p.milli,
                req.gpus,
                req.gpu_milli
            )));
        }
        if req.cpu_milli > n.cpu_left() || req.memory_bytes > n.memory_left() {
            return Err(refuse("not enough CPU or memory left".into()));
        }
        for (i, &g) in p.gpus.iter().enumerate() {
            let Some(slot) = n.gpus.get(g) else {
                return Err(refuse(format!("no GPU at position {g}")));
            };
            if !slot.healthy || slot.free < p.milli || !req.accepts(&kinds[slot.kind as usize]) {
                return Err(refuse(format!(
                    "GPU {} cannot take {}m (free {}m)",
                    slot.index, p.milli, slot.free
                )));
            }
            if p.gpus[..i].contains(&g) {
                return Err(refuse(format!("GPU {} named twice", slot.index)));
            }
        }
        self.touch(p.node);
        let n = &mut self.nodes[p.node];
        for &g in &p.gpus {
            n.gpus[g].free -= p.milli;
        }
        n.cpu_used += req.cpu_milli;
        n.memory_used += req.memory_bytes;
        Ok(())
    }

    /// A copy with a memo of its own, empty (the copy `clone` makes shares it).
    pub fn with_fresh_memo(&self) -> ClusterModel {
        ClusterModel {
            memo: ScoreMemo::default(),
            ..self.clone()
        }
    }

    /// Give back what a committed placement took.
    pub fn release(&mut self, req: &PodRequest, p: &Placement) {
        if p.node < self.nodes.len() {
            self.touch(p.node);
            let n = &mut self.nodes[p.node];
            for &g in &p.gpus {
                if let Some(s) = n.gpus.get_mut(g) {
                    s.free = (s.free + p.milli).min(MILLI);
                }
            }
            n.cpu_used = n.cpu_used.saturating_sub(req.cpu_milli);
            n.memory_used = n.memory_used.saturating_sub(req.memory_bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::snapshot::node_view;

    /// `gpus` T4s (at least 2), the first two in one NVLink domain.
    fn view(cpu: u64, gpus: u32) -> NodeView {
        let n = gpuctl_testkit::node("n")
            .uuid_prefix("u")
            .gpus(2, "T4")
            .nvlink("a")
            .gpus(gpus - 2, "T4")
            .gpu_memory(16 << 30)
            .cpu_milli(cpu);
        node_view(&n.build(), None)
    }

    #[test]
    fn commit_refuses_overcommit_and_changes_nothing() {
        let mut m = ClusterModel::from_views([&view(4000, 4)]);
        assert_eq!(m.nodes[0].gpus[0].domain, 1);
        assert_eq!(m.nodes[0].gpus[3].domain, 0);
        let share = PodRequest {
            cpu_milli: 1000,
            gpus: 1,
            gpu_milli: 600,
            ..Default::default()
        };
        let on0 = Placement {
            node: 0,
            gpus: vec![0],
            milli: 600,
        };
        m.commit(&share, &on0).unwrap();
        let before = m.clone();
        assert!(m.commit(&share, &on0).is_err(), "600 + 600 > 1000");
        let twice = Placement {
            node: 0,
            gpus: vec![1, 1],
            milli: 1000,
        };
        let two = PodRequest {
            gpus: 2,
            gpu_milli: 1000,
            ..Default::default()
        };
        assert!(m.commit(&two, &twice).is_err());
        let cpu_hog = PodRequest {
            cpu_milli: 3001,
            ..Default::default()
        };
        let none = Placement {
            node: 0,
            gpus: vec![],
            milli: 0,
        };
        assert!(m.commit(&cpu_hog, &none).is_err());
        assert!(m
            .commit(
                &share,
                &Placement {
                    node: 9,
                    ..on0.clone()
                }
            )
            .is_err());
        assert_eq!(m, before);
        assert_eq!(m.gpu_used_milli(), 600);
        m.release(&share, &on0);
        assert_eq!(m.gpu_used_milli(), 0);
        assert_eq!(m.nodes[0].cpu_used, 0);
    }

    #[test]
    fn checkpoints_roll_back_and_record_changes() {
        let mut m = ClusterModel::from_views([&view(4000, 4), &view(4000, 2)]);
        let one = PodRequest {
            cpu_milli: 1000,
            gpus: 1,
            gpu_milli: 1000,
            ..Default::default()
        };
        let on = |node, g| Placement {
            node,
            gpus: vec![g],
            milli: 1000,
        };
        let start = m.clone();
        let end = m.changes.end();
        // (what, whether the inner checkpoint is kept)
        let cases = [("inner kept", true), ("inner rolled back", false)];
        for (what, keep) in cases {
            let outer = m.checkpoint();
            m.commit(&one, &on(0, 0)).unwrap();
            let inner = m.checkpoint();
            m.commit(&one, &on(1, 1)).unwrap();
            m.node_mut(0).schedulable = false;
            if keep {
                m.keep(inner);
                assert_eq!(m.gpu_used_milli(), 2000, "{what}");
                assert!(!m.nodes()[0].schedulable, "{what}");
            } else {
                m.rollback(inner);
                assert_eq!(m.gpu_used_milli(), 1000, "{what}");
                assert!(m.nodes()[0].schedulable, "{what}");
                assert_eq!(m.nodes()[1].cpu_used, 0, "{what}");
            }
            m.rollback(outer);
            assert_eq!(m, start, "{what}");
            assert_eq!(m.nodes()[0].cpu_used, 0, "{what}");
        }
        // Every change, rollbacks included, is in the log; outside a
        // checkpoint nothing is kept to undo.
        assert!(m.changes.end() > end);
        assert!(m.changes.log.iter().all(|&i| i < 2));
        m.commit(&one, &on(0, 0)).unwrap();
        assert!(m.undo.entries.is_empty());
        let v = m.changes.version[0];
        m.release(&one, &on(0, 0));
        assert!(m.changes.version[0] > v);
        assert_ne!(
            m.clone().changes.id,
            m.changes.id,
            "a clone is a model of its own"
        );
    }

    /// The memo's rank index follows the model's change record.
    #[test]
    fn stale_names_each_changed_node_once() {
        use crate::placement::memo::ScoreMemo;
        use crate::placement::testutil;
        let views: Vec<_> = (0..4)
            .map(|i| testutil::node(&format!("n{i}"), 2))
            .collect();
        let mut m = ClusterModel::from_views(&views);
        let memo = ScoreMemo::default();
        let req = PodRequest::default();
        let mut out = Vec::new();
        let mut stale = |m: &ClusterModel| {
            let mut g = memo.lock(1, 0, 4);
            let s = g.shape(&req);
            g.stale(s, &m.changes, &mut out);
            out.clone()
        };
        // (what happens before the read, the nodes to re-rank)
        type Step = fn(&mut ClusterModel);
        let steps: [(&str, Step, &[usize]); 6] = [
            ("first read: every node", |_| {}, &[0, 1, 2, 3]),
            ("nothing changed", |_| {}, &[]),
            (
                "node 2 twice, then node 0",
                |m| {
                    m.node_mut(2).cpu_used += 1;
                    m.node_mut(2).cpu_used += 1;
                    m.node_mut(0).schedulable = false;
                },
                &[2, 0],
            ),
            (
                "changes past what the log keeps: by version",
                |m| {
                    for _ in 0..5000 {
                        m.node_mut(3).cpu_used += 1;
                    }
                    m.node_mut(1).cpu_used += 1;
                },
                &[1, 3],
            ),
            (
                "a rolled-back change is a change",
                |m| {
                    let cp = m.checkpoint();
                    m.node_mut(1).cpu_used += 1;
                    m.rollback(cp);
                },
                &[1],
            ),
            (
                "another model (a clone): every node",
                |m| *m = m.clone(),
                &[0, 1, 2, 3],
            ),
        ];
        for (what, step, want) in steps {
            step(&mut m);
            assert_eq!(stale(&m), want, "{what}");
        }
    }
}
