//! One decision: filters → options (which GPUs on each feasible node) →
//! scores → choose. `place` runs this per task; the trace replay calls it
//! per pod.

use std::sync::Arc;

use rand::Rng;

use super::filter::gpu_fit;
use super::fit;
use super::memo::{Memo, NodeBest, RankKey};
use super::mix::WorkloadMix;
use super::model::{ClusterModel, Placement};
use super::node::NodeModel;
use super::policy::Policy;
use super::request::PodRequest;
use super::score::frag::{self, Cap, HostLeft, MixKinds};
use super::score::strand::{self, HostRatio};
use super::score::{bestfit, topology};

/// Where one task should go, or `None` when no node can take it now.
/// Does not change `m`: [`ClusterModel::commit`] the answer to take it.
pub fn choose_node<R: Rng + ?Sized>(
    m: &ClusterModel,
    req: &PodRequest,
    policy: &Policy,
    mix: &WorkloadMix,
    rng: &mut R,
) -> Option<Placement> {
    choose_node_near(m, req, policy, mix, rng, &[])
}

/// [`choose_node`] for a task of a gang whose earlier tasks hold
/// `gang_nodes` (the topology score keeps the gang on those when it can).
pub fn choose_node_near<R: Rng + ?Sized>(
    m: &ClusterModel,
    req: &PodRequest,
    policy: &Policy,
    mix: &WorkloadMix,
    rng: &mut R,
    gang_nodes: &[usize],
) -> Option<Placement> {
    let accept = req.accept_table(&m.kinds);
    let feasible = m
        .nodes()
        .iter()
        .enumerate()
        .filter(|(_, n)| fit::passes(n, req, &accept));
    let at = |node: usize, gpus: Vec<usize>| Placement {
        node,
        gpus,
        milli: req.gpu_milli,
    };
    match policy {
        Policy::FirstFit => feasible
            .map(|(i, n)| (i, first_gpus(n, req, &accept)))
            .find_map(|(i, g)| g.map(|g| at(i, g))),
        Policy::Random { .. } => {
            let mut pick: Ties = Ties::default();
            for (i, _) in feasible {
                pick.offer(0, i, rng);
            }
            let node = pick.best?.1;
            default_gpus(&m.nodes()[node], req, &accept).map(|g| at(node, g))
        }
        Policy::BestFit => {
            let mut pick: Ties = Ties::default();
            for (i, n) in feasible {
                let left = bestfit::leftover(n, req, m.max_cpu_milli, m.max_gpu_milli);
                pick.offer(bestfit::score(left), i, rng);
            }
            let node = pick.best?.1;
            default_gpus(&m.nodes()[node], req, &accept).map(|g| at(node, g))
        }
        Policy::Fgd => {
            let mut memo = m.memo.lock(mix.id(), MEMO_FGD, m.nodes().len());
            let shape = memo.shape(req);
            let mut pick: Ties<Vec<usize>> = Ties::default();
            let mut scratch = Scratch::new(memo.mix_kinds(mix, &m.kinds));
            for (i, n) in feasible {
                if memo.best(shape, i, n).is_none() {
                    let b = fgd_best(i, n, req, &accept, mix, &mut memo, &mut scratch);
                    memo.set_best(shape, i, n, b);
                }
                if let Some(Some(b)) = memo.best(shape, i, n) {
                    pick.offer_with(b.score, i, rng, || b.gpus.clone());
                }
            }
            let (_, node, gpus) = pick.best_with()?;
            Some(at(node, gpus))
        }
        Policy::FragAware => {
            let mut memo = m.memo.lock(mix.id(), MEMO_FRAG_AWARE, m.nodes().len());
            let slots = Slots::of(&mut memo, req);
            let shape = slots.shape;
            let mut scratch = Scratch::new(memo.mix_kinds(mix, &m.kinds));
            let ratio = HostRatio::of(mix);
            let mut stale = Vec::new();
            memo.stale(shape, &m.changes, &mut stale);
            for i in stale {
                let key = frag_aware_rank(
                    m,
                    i,
                    slots,
                    req,
                    &accept,
                    mix,
                    ratio,
                    &mut memo,
                    &mut scratch,
                );
                memo.rank(shape, i, key);
            }
            // A packed gang's own nodes rank ahead of every other node
            // (`topology::gang_spread`): the best of them if any can take
            // the task, else the best node of the index.
            let near = gang_nodes
                .iter()
                .filter_map(|&i| memo.rank_of(shape, i))
                .min();
            let (.., node) = near.or_else(|| memo.top(shape))?;
            let n = &m.nodes()[node];
            let gpus = match memo.best(slots.for_node(n, &accept), node, n) {
                Some(Some(b)) => b.gpus.clone(),
                _ => return None,
            };
            Some(at(node, gpus))
        }
    }
}

/// Where FragAware remembers a node's best option for a request: the
/// request's own shape, or, on a node whose every GPU satisfies the
/// request's model and memory constraints, the same request without them
/// (on such a node the constraints change nothing: the same GPUs have
/// room, the same options score alike). A constrained shape then reads
/// what its unconstrained twin, and every other constraint that node
/// satisfies, has worked out, instead of working each node out again.
#[derive(Debug, Clone, Copy)]
struct Slots {
    shape: usize,
    base: usize,
}

impl Slots {
    fn of(memo: &mut Memo, req: &PodRequest) -> Slots {
        if req.models.is_empty() && req.gpu_memory == 0 {
            let shape = memo.shape(req);
            return Slots { shape, base: shape };
        }
        let base = PodRequest {
            models: Vec::new(),
            gpu_memory: 0,
            ..req.clone()
        };
        memo.shape(&base);
        let shape = memo.shape(req);
        // Looked up again: the memo may have started over to add `req`.
        let base = memo.shape(&base);
        Slots { shape, base }
    }

    /// The slot for node `n` (`accept`: the request's answer per kind).
    fn for_node(self, n: &NodeModel, accept: &[bool]) -> usize {
        let all = n
            .gpus
            .iter()
            .all(|g| accept.get(usize::from(g.kind)).copied().unwrap_or(false));
        if all {
            self.base
        } else {
            self.shape
        }
    }
}

/// FragAware by visiting every feasible node: what the index in
/// [`choose_node_near`] must agree with (the reference its tests compare
/// against).
#[cfg(test)]
pub(crate) fn frag_aware_scan(
    m: &ClusterModel,
    req: &PodRequest,
    mix: &WorkloadMix,
    gang_nodes: &[usize],
) -> Option<Placement> {
    let accept = req.accept_table(&m.kinds);
    let mut memo = m.memo.lock(mix.id(), MEMO_FRAG_AWARE, m.nodes().len());
    let shape = memo.shape(req);
    // Each shape on its own: what sharing a twin's work must agree with.
    let slots = Slots { shape, base: shape };
    let mut scratch = Scratch::new(memo.mix_kinds(mix, &m.kinds));
    let ratio = HostRatio::of(mix);
    let mut best: Option<(u32, RankKey)> = None;
    for i in 0..m.nodes().len() {
        let Some(key) = frag_aware_rank(
            m,
            i,
            slots,
            req,
            &accept,
            mix,
            ratio,
            &mut memo,
            &mut scratch,
        ) else {
            continue;
        };
        let key = (topology::gang_spread(i, gang_nodes), key);
        if best.is_none_or(|b| key < b) {
            best = Some(key);
        }
    }
    let (_, (.., node)) = best?;
    let gpus = match memo.best(shape, node, &m.nodes()[node]) {
        Some(Some(b)) => b.gpus.clone(),
        _ => return None,
    };
    Some(Placement {
        node,
        gpus,
        milli: req.gpu_milli,
    })
}

/// FragAware's rank of node `i` for `req` (lower is better; `None`: the
/// node cannot take it), its best option remembered in the memo. Compared
/// in this order: growth of the node's fragmentation plus `STRAND_WEIGHT`
/// × growth of its stranded GPU plus `WASTE_WEIGHT` × growth of the chosen
/// GPUs' gap waste (thousandths of a GPU, in steps of [`DELTA_EPS`]); room
/// left on the chosen GPUs (tighter first); the node's best-fit leftover
/// (in steps of [`LEFTOVER_EPS`]); the node's index. A packed gang's task
/// ranks the nodes the gang holds first.
#[allow(clippy::too_many_arguments)]
fn frag_aware_rank(
    m: &ClusterModel,
    i: usize,
    slots: Slots,
    req: &PodRequest,
    accept: &[bool],
    mix: &WorkloadMix,
    ratio: HostRatio,
    memo: &mut Memo,
    s: &mut Scratch,
) -> Option<RankKey> {
    let n = &m.nodes()[i];
    if !fit::passes(n, req, accept) {
        return None;
    }
    let shape = slots.for_node(n, accept);
    if memo.best(shape, i, n).is_none() {
        let b = frag_aware_best(i, n, req, accept, mix, ratio, memo, s);
        memo.set_best(shape, i, n, b);
    }
    let Some(Some(b)) = memo.best(shape, i, n) else {
        return None;
    };
    let leftover = bestfit::leftover(n, req, m.max_cpu_milli, m.max_gpu_milli);
    Some((
        steps(b.delta, DELTA_EPS),
        b.tight,
        steps(leftover, LEFTOVER_EPS),
        i,
    ))
}

/// `x` in whole steps of `eps` (nearest): values closer than about `eps`
/// compare equal, and the order is total.
fn steps(x: f64, eps: f64) -> i64 {
    (x / eps).round() as i64
}

/// Weight of a thousandth of GPU stranded (see [`strand`]) against a
/// thousandth of expected fragment. Allocation on the openb traces is flat
/// from 1 to 8 (2 is in the middle) and lower at 0.1–0.3.
const STRAND_WEIGHT: f64 = 2.0;

/// Weight of a thousandth of gap waste (see [`waste`](super::score::waste))
/// against a thousandth of expected fragment. Large enough that a share
/// mostly goes where its GPU's gap is left fillable, small enough that
/// breaking a whole GPU (which FGD's measure prices at about the share of
/// whole-GPU tasks × 1000) still costs more than a gap difference of a few
/// tens of milli. On the openb default trace: 95.96% without, 96.12 / 96.13
/// / 96.21 / 96.28 / 96.30% at 2 / 5 / 10 / 50 / 100.
const WASTE_WEIGHT: f64 = 10.0;

/// Memo tags of the policies that remember per-node work.
const MEMO_FGD: u8 = 1;
const MEMO_FRAG_AWARE: u8 = 2;

/// Scratch space reused across the nodes of one decision.
struct Scratch {
    before: Before,
    opts: Vec<Vec<usize>>,
}

impl Scratch {
    fn new(table: Arc<MixKinds>) -> Scratch {
        Scratch {
            before: Before::new(table),
            opts: Vec::new(),
        }
    }
}

/// FGD's best option on node `i`: the highest score, the first of equals.
#[allow(clippy::too_many_arguments)]
fn fgd_best(
    i: usize,
    n: &NodeModel,
    req: &PodRequest,
    accept: &[bool],
    mix: &WorkloadMix,
    memo: &mut Memo,
    s: &mut Scratch,
) -> Option<NodeBest> {
    fgd_options(n, req, accept, &mut s.opts);
    s.before.load(i, n, mix, false, memo);
    let mut best: Option<NodeBest> = None;
    for gpus in &s.opts {
        let delta = s.before.delta(req, gpus, mix, false);
        let score = frag::fgd_score(delta);
        if best.as_ref().is_none_or(|b| score > b.score) {
            best = Some(NodeBest {
                delta,
                score,
                tight: 0,
                gpus: gpus.clone(),
            });
        }
    }
    best
}

/// FragAware's best option on node `i`: the least growth of fragmentation
/// plus stranded GPU plus gap waste, then the tightest GPUs, the first of
/// equals.
#[allow(clippy::too_many_arguments)]
fn frag_aware_best(
    i: usize,
    n: &NodeModel,
    req: &PodRequest,
    accept: &[bool],
    mix: &WorkloadMix,
    ratio: HostRatio,
    memo: &mut Memo,
    s: &mut Scratch,
) -> Option<NodeBest> {
    frag_aware_options(n, req, accept, &mut s.opts);
    s.before.load(i, n, mix, true, memo);
    let mut best: Option<NodeBest> = None;
    // Stranding depends on the node's totals, not on which GPUs: the same
    // for every option.
    let free = n.gpu_free_milli();
    let strand_delta = strand::stranded(
        free.saturating_sub(req.total_gpu_milli()),
        n.cpu_left().saturating_sub(req.cpu_milli),
        n.memory_left().saturating_sub(req.memory_bytes),
        ratio,
    ) - strand::stranded(free, n.cpu_left(), n.memory_left(), ratio);
    for gpus in &s.opts {
        // Growth of the chosen GPUs' gap waste: zero for whole GPUs (a
        // whole free GPU and a full one both waste nothing).
        let waste: i64 = gpus
            .iter()
            .map(|&g| {
                let free = n.gpus[g].free;
                i64::from(mix.gap_waste(free - req.gpu_milli)) - i64::from(mix.gap_waste(free))
            })
            .sum();
        let delta = s.before.delta(req, gpus, mix, true)
            + STRAND_WEIGHT * strand_delta
            + WASTE_WEIGHT * waste as f64;
        let tight = gpus.iter().map(|&g| n.gpus[g].free - req.gpu_milli).sum();
        let better = best.as_ref().is_none_or(|b| {
            if (delta - b.delta).abs() > DELTA_EPS {
                delta < b.delta
            } else {
                tight < b.tight
            }
        });
        if better {
            best = Some(NodeBest {
                delta,
                score: 0,
                tight,
                gpus: gpus.clone(),
            });
        }
    }
    best
}

/// Fragmentation deltas (thousandths of a GPU) are ranked in steps of this,
/// and a node's options closer than this are equal.
const DELTA_EPS: f64 = 1e-6;

/// Best-fit leftovers (0..=1) are ranked in steps of this.
const LEFTOVER_EPS: f64 = 1e-12;

/// One node's fragmentation now, with the scratch state to try options on.
struct Before {
    caps: Vec<Cap>,
    host: HostLeft,
    frag: f64,
    /// The mix's groups' answers per GPU kind of the model.
    table: Arc<MixKinds>,
}

impl Before {
    fn new(table: Arc<MixKinds>) -> Before {
        Before {
            caps: Vec::new(),
            host: HostLeft { cpu: 0, memory: 0 },
            frag: 0.0,
            table,
        }
    }

    /// Load node `i` (`n`) and its fragmentation, from the memo when it
    /// holds it for the node's present state.
    fn load(&mut self, i: usize, n: &NodeModel, mix: &WorkloadMix, memory: bool, memo: &mut Memo) {
        self.caps.clear();
        self.caps.extend(n.gpus.iter().map(|g| Cap {
            free: if g.healthy { g.free } else { 0 },
            kind: g.kind,
        }));
        self.host = HostLeft {
            cpu: n.cpu_left(),
            memory: n.memory_left(),
        };
        let (caps, host, table) = (&self.caps, self.host, &self.table);
        self.frag = memo.before(i, n, || {
            if mix.entries().is_empty() {
                0.0
            } else {
                frag::node_frag_by(caps, host, mix, table, memory)
            }
        });
    }

    /// Growth of the loaded node's fragmentation if `req` took `gpus` there.
    fn delta(&mut self, req: &PodRequest, gpus: &[usize], mix: &WorkloadMix, memory: bool) -> f64 {
        if mix.entries().is_empty() {
            return 0.0;
        }
        for &g in gpus {
            self.caps[g].free -= req.gpu_milli;
        }
        let host = HostLeft {
            cpu: self.host.cpu.saturating_sub(req.cpu_milli),
            memory: self.host.memory.saturating_sub(req.memory_bytes),
        };
        let after = frag::node_frag_by(&self.caps, host, mix, &self.table, memory);
        for &g in gpus {
            self.caps[g].free += req.gpu_milli;
        }
        after - self.frag
    }
}

/// First fit: the first GPUs with room, by index.
fn first_gpus(n: &NodeModel, req: &PodRequest, accept: &[bool]) -> Option<Vec<usize>> {
    let g: Vec<usize> = n
        .gpus
        .iter()
        .enumerate()
        .filter(|(_, g)| gpu_fit::has_room(g, accept, req.gpu_milli))
        .map(|(i, _)| i)
        .take(req.gpus as usize)
        .collect();
    (g.len() == req.gpus as usize).then_some(g)
}

/// The tightest GPU for a share, topology's pick for whole GPUs.
fn default_gpus(n: &NodeModel, req: &PodRequest, accept: &[bool]) -> Option<Vec<usize>> {
    if req.gpus == 0 {
        Some(Vec::new())
    } else if req.is_share() {
        bestfit::tightest_gpu(n, accept, req.gpu_milli).map(|g| vec![g])
    } else {
        topology::pick_whole(n, accept, req.gpus as usize)
    }
}

/// FGD's options: a share may go on any GPU with room; whole GPUs are the
/// first free ones by index.
fn fgd_options(n: &NodeModel, req: &PodRequest, accept: &[bool], out: &mut Vec<Vec<usize>>) {
    out.clear();
    if req.is_share() {
        out.extend(
            (0..n.gpus.len())
                .filter(|&g| gpu_fit::has_room(&n.gpus[g], accept, req.gpu_milli))
                .map(|g| vec![g]),
        );
    } else if let Some(g) = first_gpus(n, req, accept) {
        out.push(g);
    }
}

/// FragAware's options: a share may go on any GPU with room, one per
/// distinct (free, kind) since equal GPUs score alike; whole GPUs are
/// topology's pick.
fn frag_aware_options(n: &NodeModel, req: &PodRequest, accept: &[bool], out: &mut Vec<Vec<usize>>) {
    out.clear();
    if req.is_share() {
        for (i, g) in n.gpus.iter().enumerate() {
            if gpu_fit::has_room(g, accept, req.gpu_milli)
                && !out.iter().any(|o| {
                    let h = &n.gpus[o[0]];
                    h.free == g.free && h.kind == g.kind
                })
            {
                out.push(vec![i]);
            }
        }
    } else if let Some(g) = default_gpus(n, req, accept) {
        out.push(g);
    }
}

/// The highest score seen, ties broken uniformly at random (reservoir
/// sampling), as the Kubernetes scheduler framework does.
struct Ties<T = ()> {
    best: Option<(i64, usize)>,
    payload: Option<T>,
    count: u32,
}

impl<T> Default for Ties<T> {
    fn default() -> Self {
        Ties {
            best: None,
            payload: None,
            count: 0,
        }
    }
}

impl<T> Ties<T> {
    fn offer<R: Rng + ?Sized>(&mut self, score: i64, node: usize, rng: &mut R) -> bool {
        match self.best {
            Some((b, _)) if score < b => false,
            Some((b, _)) if score == b => {
                self.count += 1;
                if rng.gen_range(0..self.count) == 0 {
                    self.best = Some((score, node));
                    true
                } else {
                    false
                }
            }
            _ => {
                self.best = Some((score, node));
                self.count = 1;
                true
            }
        }
    }

    fn offer_with<R: Rng + ?Sized>(
        &mut self,
        score: i64,
        node: usize,
        rng: &mut R,
        payload: impl FnOnce() -> T,
    ) {
        if self.offer(score, node, rng) {
            self.payload = Some(payload());
        }
    }

    fn best_with(self) -> Option<(i64, usize, T)> {
        let (s, n) = self.best?;
        Some((s, n, self.payload?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::snapshot::{node_view, NodeView};
    use rand::{rngs::StdRng, SeedableRng};

    fn view(i: usize) -> NodeView {
        let (gpus, model, cpu) =
            [(8, "G2", 96_000), (2, "T4", 104_000), (2, "P100", 16_000)][i % 3];
        let name = format!("n{i}");
        let n = gpuctl_testkit::node(&name)
            .uuid_prefix(&name)
            .gpus(gpus, model)
            .gpu_memory(0)
            .cpu_milli(cpu)
            .memory_bytes(256 << 30);
        node_view(&n.build(), None)
    }

    /// The memo never changes a decision: a long run of placements and
    /// releases decides exactly as a model that remembers nothing.
    #[test]
    fn memo_decides_as_without_it() {
        let reqs: Vec<PodRequest> = [
            (0, 0, 8000),
            (1, 810, 3152),
            (1, 470, 8000),
            (1, 1000, 11300),
            (2, 1000, 16000),
            (8, 1000, 88000),
            (1, 160, 4000),
        ]
        .into_iter()
        .map(|(gpus, milli, cpu)| PodRequest {
            cpu_milli: cpu,
            memory_bytes: cpu << 20,
            gpus,
            gpu_milli: milli,
            ..Default::default()
        })
        .collect();
        for policy in [Policy::Fgd, Policy::FragAware] {
            let mix = WorkloadMix::from_requests(&reqs, policy.mix_options());
            let views: Vec<NodeView> = (0..12).map(view).collect();
            let mut m = ClusterModel::from_views(&views);
            let mut draw = StdRng::seed_from_u64(7);
            let mut rng = StdRng::seed_from_u64(8);
            let mut placed: Vec<(PodRequest, Placement)> = Vec::new();
            for step in 0..400 {
                if step % 5 == 4 && !placed.is_empty() {
                    let (r, p) = placed.swap_remove(draw.gen_range(0..placed.len()));
                    m.release(&r, &p);
                    continue;
                }
                let req = &reqs[draw.gen_range(0..reqs.len())];
                let mut fresh_rng = rng.clone();
                let want = choose_node(&m.with_fresh_memo(), req, &policy, &mix, &mut fresh_rng);
                let got = choose_node(&m, req, &policy, &mix, &mut rng);
                assert_eq!(got, want, "{policy} step {step}");
                if let Some(p) = got {
                    m.commit(req, &p).unwrap();
                    placed.push((req.clone(), p));
                }
            }
        }
    }

    /// The per-shape index decides exactly as visiting every node does,
    /// over random clusters (many identical nodes, so many ties; three GPU
    /// models) and random runs of commits, releases, cordons, GPU health
    /// changes, gang tasks and trials kept or rolled back, with half the
    /// requests naming GPU models (so the workload mix has constrained
    /// shapes too).
    #[test]
    fn index_decides_as_the_scan() {
        let mut draw = StdRng::seed_from_u64(11);
        let policy = Policy::FragAware;
        for round in 0..24 {
            let views: Vec<NodeView> = (0..draw.gen_range(1..30))
                .map(|i| {
                    let mut v = view(draw.gen_range(0..4));
                    v.name = format!("n{i}");
                    for g in &mut v.gpus {
                        g.nvlink_domain = format!("d{}", g.index / 4);
                        if draw.gen_bool(0.1) {
                            g.used_milli = [300, 500, 1000][draw.gen_range(0..3)];
                        }
                    }
                    v
                })
                .collect();
            let reqs: Vec<PodRequest> = (0..8)
                .map(|_| {
                    let (gpus, gpu_milli) = match draw.gen_range(0..5) {
                        0 => (0, 0),
                        1 => (1, [250, 500, 700][draw.gen_range(0..3)]),
                        2 => (1, 1000),
                        3 => (2, 1000),
                        _ => (draw.gen_range(3..9), 1000),
                    };
                    PodRequest {
                        cpu_milli: draw.gen_range(0..5) * 4000,
                        memory_bytes: draw.gen_range(0..4) << 32,
                        gpus,
                        gpu_milli,
                        // Model constraints as requests write them: one
                        // model, alternatives, another case, none served.
                        models: match draw.gen_range(0..10) {
                            0 => vec!["T4".into()],
                            1 => vec!["G2".into()],
                            2 => vec!["P100".into(), "t4".into()],
                            3 => vec!["g2".into(), "P100".into()],
                            4 => vec!["H100".into()],
                            _ => vec![],
                        },
                        gpu_memory: 0,
                    }
                })
                .collect();
            let mix = WorkloadMix::from_requests(&reqs, policy.mix_options());
            let mut m = ClusterModel::from_views(&views);
            let mut rng = StdRng::seed_from_u64(round);
            let mut placed: Vec<(PodRequest, Placement)> = Vec::new();
            // An open trial: its checkpoint, how many were placed before it,
            // and the nodes its gang holds.
            let mut trial: Option<(crate::placement::model::Checkpoint, usize, Vec<usize>)> = None;
            let mut decided = 0;
            for step in 0..160 {
                let nodes = m.nodes().len();
                match draw.gen_range(0..12) {
                    0 if trial.is_none() && !placed.is_empty() => {
                        let (r, p) = placed.swap_remove(draw.gen_range(0..placed.len()));
                        m.release(&r, &p);
                    }
                    1 => {
                        let n = m.node_mut(draw.gen_range(0..nodes));
                        n.schedulable = !n.schedulable;
                    }
                    2 => {
                        let n = m.node_mut(draw.gen_range(0..nodes));
                        if !n.gpus.is_empty() {
                            let g = draw.gen_range(0..n.gpus.len());
                            n.gpus[g].healthy = !n.gpus[g].healthy;
                        }
                    }
                    3 if trial.is_none() => {
                        trial = Some((m.checkpoint(), placed.len(), Vec::new()))
                    }
                    4 => {
                        if let Some((cp, before, _)) = trial.take() {
                            if draw.gen_bool(0.5) {
                                m.rollback(cp);
                                placed.truncate(before);
                            } else {
                                m.keep(cp);
                            }
                        }
                    }
                    _ => {
                        let req = &reqs[draw.gen_range(0..reqs.len())];
                        let near = trial.as_ref().map(|t| t.2.clone()).unwrap_or_default();
                        let want = frag_aware_scan(&m.with_fresh_memo(), req, &mix, &near);
                        let got = choose_node_near(&m, req, &policy, &mix, &mut rng, &near);
                        assert_eq!(got, want, "round {round} step {step}");
                        if let Some(p) = got {
                            decided += 1;
                            m.commit(req, &p).unwrap();
                            if let Some((_, _, gang)) = &mut trial {
                                if !gang.contains(&p.node) {
                                    gang.push(p.node);
                                }
                            }
                            placed.push((req.clone(), p));
                        }
                    }
                }
            }
            assert!(decided > 0, "round {round} placed nothing");
        }
    }
}
