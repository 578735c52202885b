//! The cluster as the placement pipeline sees it: compact per-node state
//! that filters and scores read without allocating, and the one place where
//! capacity is taken (`commit`) or given back (`release`).

use std::collections::HashMap;

use gpuctl_common::api::{model_matches, Resources};

use super::memo::ScoreMemo;
use super::NodeView;

/// Thousandths of a GPU in one whole GPU.
pub const MILLI: u32 = 1000;

/// A distinct (model, memory) pair. GPUs refer to kinds by number so that a
/// request's model constraints are matched once per kind, not once per GPU.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GpuKind {
    pub model: String,
    pub memory_bytes: u64,
}

/// One GPU of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSlot {
    /// Device index reported by the node.
    pub index: u32,
    pub uuid: String,
    /// Index into [`ClusterModel::kinds`].
    pub kind: u16,
    /// NVLink domain number within the node; GPUs reporting no domain share 0.
    pub domain: u16,
    pub healthy: bool,
    /// Thousandths still free.
    pub free: u32,
}

/// One node: capacity, use, and its GPUs.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeModel {
    pub name: String,
    /// Ready and not cordoned.
    pub schedulable: bool,
    /// Capacity; 0 means "not reported" and is not enforced.
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub cpu_used: u64,
    pub memory_used: u64,
    pub gpus: Vec<GpuSlot>,
}

impl NodeModel {
    /// CPU still free (`u64::MAX` when capacity is not enforced).
    pub fn cpu_left(&self) -> u64 {
        if self.cpu_milli == 0 {
            u64::MAX
        } else {
            self.cpu_milli.saturating_sub(self.cpu_used)
        }
    }

    /// Memory still free (`u64::MAX` when capacity is not enforced).
    pub fn memory_left(&self) -> u64 {
        if self.memory_bytes == 0 {
            u64::MAX
        } else {
            self.memory_bytes.saturating_sub(self.memory_used)
        }
    }

    /// Free thousandths over healthy GPUs.
    pub fn gpu_free_milli(&self) -> u64 {
        self.gpus
            .iter()
            .filter(|g| g.healthy)
            .map(|g| u64::from(g.free))
            .sum()
    }
}

/// What one task (one pod of a trace) asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PodRequest {
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    /// Number of GPUs; 0 for a CPU-only task.
    pub gpus: u32,
    /// Thousandths taken on each of those GPUs: below 1000 only when `gpus`
    /// is 1 (a shared GPU), else 1000.
    pub gpu_milli: u32,
    /// Acceptable GPU models; empty: any.
    pub models: Vec<String>,
    /// Least memory each GPU must have; 0: any.
    pub gpu_memory: u64,
}

impl PodRequest {
    /// The request of one task of a job. A whole-GPU count with a fraction
    /// (2.5) takes the whole part, as the first-fit engine did.
    pub fn from_resources(r: &Resources) -> PodRequest {
        let milli = r.gpu_milli();
        let (gpus, gpu_milli) = match milli {
            0 => (0, 0),
            m if m < u64::from(MILLI) => (1, m as u32),
            m => ((m / u64::from(MILLI)) as u32, MILLI),
        };
        PodRequest {
            cpu_milli: r.cpu.map(|c| c.0).unwrap_or(0),
            memory_bytes: r.memory.map(|m| m.0).unwrap_or(0),
            gpus,
            gpu_milli,
            models: r
                .gpu_model
                .as_deref()
                .map(|m| {
                    m.split('|')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            gpu_memory: r.gpu_memory.map(|m| m.0).unwrap_or(0),
        }
    }

    /// Thousandths of GPU asked for in all.
    pub fn total_gpu_milli(&self) -> u64 {
        u64::from(self.gpus) * u64::from(self.gpu_milli)
    }

    /// A share of one GPU, which may sit next to other shares.
    pub fn is_share(&self) -> bool {
        self.gpus == 1 && self.gpu_milli < MILLI
    }

    /// Whether a GPU of `kind` satisfies the model and memory constraints.
    pub fn accepts(&self, kind: &GpuKind) -> bool {
        (self.gpu_memory == 0 || kind.memory_bytes >= self.gpu_memory)
            && (self.models.is_empty() || self.models.iter().any(|m| model_matches(m, &kind.model)))
    }

    /// `accepts` for every kind of the cluster, by kind number.
    pub fn accept_table(&self, kinds: &[GpuKind]) -> Vec<bool> {
        if self.gpu_memory == 0 && self.models.is_empty() {
            return vec![true; kinds.len()];
        }
        kinds.iter().map(|k| self.accepts(k)).collect()
    }
}

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

/// Record of node changes: a version per node, bumped on every change, and
/// the log of changed nodes since `base`. Each model has an id of its own
/// (a clone gets a new one), so that a memo shared by clones never takes
/// one model's versions for another's.
#[derive(Debug)]
pub(crate) struct Changes {
    pub id: u64,
    /// Per node: the clock when it last changed (0: never).
    pub version: Vec<u64>,
    clock: u64,
    /// Nodes changed, oldest first; entry `k` is change number `base + k`.
    pub log: Vec<usize>,
    pub base: u64,
}

impl Changes {
    fn fresh_id() -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Change number of the next change: the log holds `base..end()`.
    pub fn end(&self) -> u64 {
        self.base + self.log.len() as u64
    }

    fn touch(&mut self, i: usize) {
        self.clock += 1;
        if self.version.len() <= i {
            self.version.resize(i + 1, 0);
        }
        self.version[i] = self.clock;
        // Bounded: a reader that fell behind `base` revisits every node.
        if self.log.len() >= 4096 && self.log.len() >= 2 * self.version.len() {
            self.base += self.log.len() as u64;
            self.log.clear();
        }
        self.log.push(i);
    }
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            id: Changes::fresh_id(),
            version: Vec::new(),
            clock: 0,
            log: Vec::new(),
            base: 0,
        }
    }
}

impl Clone for Changes {
    /// Same versions, but a model of its own.
    fn clone(&self) -> Self {
        Changes {
            id: Changes::fresh_id(),
            version: self.version.clone(),
            clock: self.clock,
            log: self.log.clone(),
            base: self.base,
        }
    }
}

impl PartialEq for Changes {
    fn eq(&self, _: &Changes) -> bool {
        true
    }
}

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
    use crate::placement::GpuView;

    fn view(cpu: u64, gpus: u32) -> NodeView {
        NodeView {
            name: "n".into(),
            schedulable: true,
            gpus: (0..gpus)
                .map(|i| GpuView {
                    index: i,
                    uuid: format!("u{i}"),
                    model: "T4".into(),
                    memory_bytes: 16 << 30,
                    nvlink_domain: if i < 2 { "a".into() } else { String::new() },
                    healthy: true,
                    used_milli: 0,
                })
                .collect(),
            cpu_milli: cpu,
            memory_bytes: 0,
            cpu_used: 0,
            memory_used: 0,
        }
    }

    #[test]
    fn request_shapes() {
        let r = |gpus: f64| {
            PodRequest::from_resources(&Resources {
                gpus,
                gpu_model: Some("A100 | H100".into()),
                ..Default::default()
            })
        };
        let cases = [(0.0, 0, 0), (0.25, 1, 250), (1.0, 1, 1000), (4.0, 4, 1000)];
        for (gpus, n, m) in cases {
            let p = r(gpus);
            assert_eq!((p.gpus, p.gpu_milli), (n, m), "{gpus}");
            assert_eq!(p.models, vec!["A100".to_string(), "H100".to_string()]);
        }
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
}
