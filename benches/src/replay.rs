//! Trace replay in the manner of the FGD paper (Weng et al., ATC'23, §6)
//! and its authors' simulator: per seed, the pods of a pod list in a
//! shuffled order, topped up with pods drawn with replacement until the
//! GPUs asked for reach 130% of the cluster's, placed in order with no
//! departures; report the share of GPU capacity allocated when the arrived
//! requests reach 100% and 130% of it.
//!
//! Parsing is header-driven over the openb CSVs (`sn,cpu_milli,memory_mib,
//! gpu,model` for nodes; `name,cpu_milli,memory_mib,num_gpu,gpu_milli
//! [,gpu_spec,...]` for pods). The placement itself is
//! `gpuctl_scheduler::placement::choose_node`, the code path `place` uses.

use std::time::Instant;

use anyhow::{bail, Context};
use gpuctl_scheduler::placement::{
    choose_node, ClusterModel, GpuView, NodeView, PodRequest, Policy, WorkloadMix, MILLI,
};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

const MIB: u64 = 1 << 20;

/// The columns of a CSV header, and a lookup that names the file when one is missing.
struct Header<'a> {
    file: &'a str,
    cols: Vec<&'a str>,
}

impl<'a> Header<'a> {
    fn col(&self, name: &str) -> anyhow::Result<usize> {
        self.cols
            .iter()
            .position(|c| c.trim() == name)
            .with_context(|| {
                format!(
                    "{}:1: header has no column `{name}` (columns: {})",
                    self.file,
                    self.cols.join(",")
                )
            })
    }
}

/// Data rows of a CSV: (line number, fields).
type Rows<'a> = Vec<(usize, Vec<&'a str>)>;

/// Rows of a CSV with its header.
fn rows<'a>(file: &'a str, text: &'a str) -> anyhow::Result<(Header<'a>, Rows<'a>)> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, head)) = lines.next() else {
        bail!("{file}:1: empty file, expected a CSV header");
    };
    let header = Header {
        file,
        cols: head.trim_start_matches('\u{feff}').split(',').collect(),
    };
    let width = header.cols.len();
    let mut out = Vec::new();
    for (i, l) in lines {
        let fields: Vec<&str> = l.trim_end_matches('\r').split(',').collect();
        if fields.len() != width {
            bail!(
                "{file}:{}: {} fields, the header has {width}",
                i + 1,
                fields.len()
            );
        }
        out.push((i + 1, fields));
    }
    Ok((header, out))
}

fn num(file: &str, line: usize, col: &str, v: &str) -> anyhow::Result<u64> {
    v.trim().parse::<u64>().with_context(|| {
        format!("{file}:{line}: column `{col}`: `{v}` is not a non-negative integer")
    })
}

/// Nodes of an openb node list (`sn,cpu_milli,memory_mib,gpu,model`).
/// GPUs get no NVLink domain and no memory size (the traces have neither).
pub fn parse_nodes(file: &str, text: &str) -> anyhow::Result<Vec<NodeView>> {
    let (h, rows) = rows(file, text)?;
    let (sn, cpu, mem, gpu, model) = (
        h.col("sn")?,
        h.col("cpu_milli")?,
        h.col("memory_mib")?,
        h.col("gpu")?,
        h.col("model")?,
    );
    rows.into_iter()
        .map(|(line, f)| {
            let gpus = num(file, line, "gpu", f[gpu])? as u32;
            Ok(NodeView {
                name: f[sn].trim().to_string(),
                schedulable: true,
                gpus: (0..gpus)
                    .map(|i| GpuView {
                        index: i,
                        uuid: format!("{}-gpu{i}", f[sn].trim()),
                        model: f[model].trim().to_string(),
                        memory_bytes: 0,
                        nvlink_domain: String::new(),
                        healthy: true,
                        used_milli: 0,
                    })
                    .collect(),
                cpu_milli: num(file, line, "cpu_milli", f[cpu])?,
                memory_bytes: num(file, line, "memory_mib", f[mem])? * MIB,
                cpu_used: 0,
                memory_used: 0,
            })
        })
        .collect()
}

/// Pods of an openb pod list. `gpu_milli` is the share of one GPU and
/// applies only when `num_gpu` is 1; a pod with 2 or more GPUs takes them
/// whole. `gpu_spec` (optional column) lists acceptable models, `|`-separated.
pub fn parse_pods(file: &str, text: &str) -> anyhow::Result<Vec<PodRequest>> {
    let (h, rows) = rows(file, text)?;
    let (cpu, mem, ngpu, milli) = (
        h.col("cpu_milli")?,
        h.col("memory_mib")?,
        h.col("num_gpu")?,
        h.col("gpu_milli")?,
    );
    let spec = h.col("gpu_spec").ok();
    rows.into_iter()
        .map(|(line, f)| {
            let gpus = num(file, line, "num_gpu", f[ngpu])? as u32;
            let m = num(file, line, "gpu_milli", f[milli])? as u32;
            let gpu_milli = match gpus {
                0 => 0,
                1 if (1..=MILLI).contains(&m) => m,
                1 => bail!("{file}:{line}: a 1-GPU pod with gpu_milli {m} (want 1..=1000)"),
                _ => MILLI,
            };
            let models = spec
                .map(|c| {
                    f[c].split('|')
                        .map(str::trim)
                        .filter(|s| !s.is_empty() && *s != "nan")
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            Ok(PodRequest {
                cpu_milli: num(file, line, "cpu_milli", f[cpu])?,
                memory_bytes: num(file, line, "memory_mib", f[mem])? * MIB,
                gpus,
                gpu_milli,
                models,
                gpu_memory: 0,
            })
        })
        .collect()
}

/// A pod of a pod list with its lifetime (seconds), for the timeline mode.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedPod {
    pub req: PodRequest,
    pub creation: u64,
    pub deletion: u64,
}

impl TimedPod {
    /// How long the pod runs once started: its lifetime in the trace.
    pub fn duration(&self) -> u64 {
        self.deletion.saturating_sub(self.creation)
    }
}

/// Pods with their `creation_time` and `deletion_time` columns (the
/// default and gpushare openb lists have them; multigpu20 does not).
pub fn parse_timed_pods(file: &str, text: &str) -> anyhow::Result<Vec<TimedPod>> {
    let reqs = parse_pods(file, text)?;
    let (h, rows) = rows(file, text)?;
    let (c, d) = (h.col("creation_time")?, h.col("deletion_time")?);
    reqs.into_iter()
        .zip(rows)
        .map(|(req, (line, f))| {
            Ok(TimedPod {
                req,
                creation: num(file, line, "creation_time", f[c])?,
                deletion: num(file, line, "deletion_time", f[d])?,
            })
        })
        .collect()
}

/// GPU asked for over time (Σ GPU × the part of each lifetime before the
/// last creation) over capacity × the span from the first creation to the
/// last: the mean allocation the pods would reach if none ever waited.
pub fn offered_load(pods: &[TimedPod], capacity_milli: u64) -> f64 {
    let (t0, t1) = pods.iter().fold((u64::MAX, 0), |(a, b), p| {
        (a.min(p.creation), b.max(p.creation))
    });
    if pods.is_empty() || t1 <= t0 || capacity_milli == 0 {
        return 0.0;
    }
    let area: f64 = pods
        .iter()
        .map(|p| p.req.total_gpu_milli() as f64 * p.duration().min(t1 - p.creation) as f64)
        .sum();
    area / (capacity_milli as f64 * (t1 - t0) as f64)
}

/// The pods in their creation order, evenly spaced, lifetimes kept, with
/// the spacing that makes the offered load about `load`. The openb lists
/// are samples of a cluster's pods: at their own times they offer about
/// 0.2% of the GPUs (nothing ever waits), and their creations crowd into
/// the last weeks, so squeezing the times by one factor cannot load the
/// cluster either.
pub fn space_to_load(pods: &[TimedPod], capacity_milli: u64, load: f64) -> Vec<TimedPod> {
    let mut order: Vec<usize> = (0..pods.len()).collect();
    order.sort_by_key(|&i| (pods[i].creation, i));
    let mut rank = vec![0usize; pods.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    let spaced = |gap: f64| -> Vec<TimedPod> {
        pods.iter()
            .zip(&rank)
            .map(|(p, &r)| {
                let creation = (r as f64 * gap).round() as u64;
                TimedPod {
                    req: p.req.clone(),
                    creation,
                    deletion: creation + p.duration(),
                }
            })
            .collect()
    };
    if load <= 0.0 || pods.len() < 2 {
        return pods.to_vec();
    }
    // The load falls as the gap grows; bisect on a log scale.
    let (mut lo, mut hi) = (1e-3f64, 1e9f64);
    for _ in 0..60 {
        let mid = (lo * hi).sqrt();
        if offered_load(&spaced(mid), capacity_milli) > load {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    spaced(hi)
}

/// What one timeline replay saw.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineResult {
    /// Allocated GPU / capacity, averaged over time from the first pod's
    /// creation to the last's.
    pub mean_alloc: f64,
    /// Seconds each placed pod waited between creation and start.
    pub delays_s: Vec<f64>,
    /// Pods that waited (started late or never).
    pub waited: usize,
    /// Pods still waiting when nothing was left to depart.
    pub never_placed: usize,
    pub pods: usize,
    /// Seconds each `choose_node` call took.
    pub decision_s: Vec<f64>,
}

/// Replay creation and deletion times: each pod arrives at its creation
/// time and runs for its lifetime in the trace once started. A pod that no
/// node can take waits; waiting pods are tried again, oldest first, each
/// time pods depart (a shape that failed is not tried again in the same
/// pass: the cluster only fills within it). At equal times departures come
/// before arrivals.
pub fn replay_timeline(
    nodes: &[NodeView],
    pods: &[TimedPod],
    policy: &Policy,
    mix: &WorkloadMix,
    seed: u64,
) -> anyhow::Result<TimelineResult> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    let mut model = ClusterModel::from_views(nodes);
    let capacity = model.gpu_capacity_milli() as f64;
    if capacity == 0.0 {
        bail!("the node list has no GPUs");
    }
    let mut ties = StdRng::seed_from_u64(seed ^ TIE_SEED);
    let mut order: Vec<usize> = (0..pods.len()).collect();
    order.sort_by_key(|&i| (pods[i].creation, i));
    let (t0, t_end) = match (order.first(), order.last()) {
        (Some(&a), Some(&b)) => (pods[a].creation, pods[b].creation),
        _ => bail!("no pods to replay"),
    };
    let mut out = TimelineResult {
        mean_alloc: 0.0,
        delays_s: Vec::new(),
        waited: 0,
        never_placed: 0,
        pods: pods.len(),
        decision_s: Vec::new(),
    };
    // (end time, pod) of running pods, and where each runs.
    let mut running: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut placed: Vec<Option<gpuctl_scheduler::placement::Placement>> = vec![None; pods.len()];
    let mut waiting: Vec<usize> = Vec::new();
    let (mut allocated, mut area, mut last_t, mut next) = (0u64, 0.0f64, t0, 0usize);
    // Try to start pod `i` at time `t`.
    let mut start = |i: usize,
                     t: u64,
                     model: &mut ClusterModel,
                     out: &mut TimelineResult,
                     running: &mut BinaryHeap<Reverse<(u64, usize)>>,
                     placed: &mut Vec<Option<gpuctl_scheduler::placement::Placement>>,
                     allocated: &mut u64|
     -> anyhow::Result<bool> {
        let p = &pods[i];
        let clock = Instant::now();
        let at = choose_node(model, &p.req, policy, mix, &mut ties);
        out.decision_s.push(clock.elapsed().as_secs_f64());
        let Some(at) = at else {
            return Ok(false);
        };
        model
            .commit(&p.req, &at)
            .context("a chosen placement did not commit")?;
        *allocated += p.req.total_gpu_milli();
        let delay = t - p.creation;
        out.delays_s.push(delay as f64);
        out.waited += usize::from(delay > 0);
        running.push(Reverse((t + p.duration(), i)));
        placed[i] = Some(at);
        Ok(true)
    };
    loop {
        let ta = order.get(next).map(|&i| pods[i].creation);
        let td = running.peek().map(|r| r.0 .0);
        let t = match (ta, td) {
            (None, None) => break,
            (Some(a), None) => a,
            (None, Some(d)) => d,
            (Some(a), Some(d)) => a.min(d),
        };
        if t > last_t {
            let upto = t.min(t_end);
            if upto > last_t {
                area += allocated as f64 * (upto - last_t) as f64;
            }
            last_t = t;
        }
        if td == Some(t) {
            while let Some(&Reverse((end, i))) = running.peek() {
                if end != t {
                    break;
                }
                running.pop();
                if let Some(at) = placed[i].take() {
                    model.release(&pods[i].req, &at);
                    allocated -= pods[i].req.total_gpu_milli();
                }
            }
            let mut failed: Vec<&PodRequest> = Vec::new();
            let mut still = Vec::new();
            for &i in &waiting {
                let req = &pods[i].req;
                if failed.contains(&req)
                    || !start(
                        i,
                        t,
                        &mut model,
                        &mut out,
                        &mut running,
                        &mut placed,
                        &mut allocated,
                    )?
                {
                    if !failed.contains(&req) {
                        failed.push(req);
                    }
                    still.push(i);
                }
            }
            waiting = still;
        } else {
            let i = order[next];
            next += 1;
            if !start(
                i,
                t,
                &mut model,
                &mut out,
                &mut running,
                &mut placed,
                &mut allocated,
            )? {
                waiting.push(i);
            }
        }
    }
    out.never_placed = waiting.len();
    out.waited += waiting.len();
    out.mean_alloc = if t_end > t0 {
        area / ((t_end - t0) as f64 * capacity)
    } else {
        allocated as f64 / capacity
    };
    Ok(out)
}

/// Timeline results over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineSummary {
    pub policy: String,
    pub seeds: usize,
    pub pods: usize,
    /// Means over seeds.
    pub mean_alloc: f64,
    pub waited_share: f64,
    pub never_placed: f64,
    /// Over every placed pod of every seed, seconds.
    pub delay_s_p50: f64,
    pub delay_s_p99: f64,
    pub decision_us_median: f64,
    pub decision_us_p99: f64,
}

pub fn summarize_timeline(policy: &Policy, results: &[TimelineResult]) -> TimelineSummary {
    let n = results.len().max(1) as f64;
    let mean = |f: &dyn Fn(&TimelineResult) -> f64| results.iter().map(f).sum::<f64>() / n;
    let sorted = |f: &dyn Fn(&TimelineResult) -> &[f64], scale: f64| {
        let mut v: Vec<f64> = results
            .iter()
            .flat_map(|r| f(r).iter().map(|x| x * scale))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let delays = sorted(&|r| &r.delays_s, 1.0);
    let us = sorted(&|r| &r.decision_s, 1e6);
    TimelineSummary {
        policy: policy.name().to_string(),
        seeds: results.len(),
        pods: results.first().map_or(0, |r| r.pods),
        mean_alloc: mean(&|r| r.mean_alloc),
        waited_share: mean(&|r| r.waited as f64 / r.pods.max(1) as f64),
        never_placed: mean(&|r| r.never_placed as f64),
        delay_s_p50: crate::percentile(&delays, 50.0),
        delay_s_p99: crate::percentile(&delays, 99.0),
        decision_us_median: crate::percentile(&us, 50.0),
        decision_us_p99: crate::percentile(&us, 99.0),
    }
}

/// What one seed's replay saw.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedResult {
    /// Allocated GPU / cluster GPU when the arrived GPU requests first reach 100% of capacity.
    pub alloc_at_100: f64,
    /// The same when they reach 130% (the end of the run).
    pub alloc_at_130: f64,
    /// Pods that arrived.
    pub arrived: usize,
    /// Pods no node could take when they arrived (GPU and CPU-only).
    pub failed: usize,
    /// Of those, pods asking for GPUs.
    pub failed_gpu: usize,
    /// Seconds each `choose_node` call took.
    pub decision_s: Vec<f64>,
    /// Whether each of those decisions was for a pod that names GPU models.
    pub constrained: Vec<bool>,
    /// Allocated GPU thousandths at the end (as the model counts them).
    pub allocated_milli: u64,
}

/// How a seed's arrivals are drawn from the pod list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sampling {
    /// As the FGD authors' simulator builds the workload its published
    /// figures come from (`-tune 1.3 --shuffle-pod=true`): every pod of the
    /// list once, in a shuffled order, then pods drawn with replacement
    /// until the next one would take the GPU asked for past the target; a
    /// list that already asks for more than the target loses pods at random.
    #[default]
    Simulator,
    /// Every arrival drawn with replacement, until the GPU asked for reaches
    /// the target.
    Replacement,
}

impl Sampling {
    pub fn parse(name: &str) -> Option<Sampling> {
        match name {
            "simulator" => Some(Sampling::Simulator),
            "replacement" => Some(Sampling::Replacement),
            _ => None,
        }
    }
}

/// The arrival order of one seed: indices into `pods`, whose GPU asked for
/// reaches (or, for [`Sampling::Simulator`], just stays under) `target`
/// thousandths of a GPU.
pub fn arrivals(pods: &[PodRequest], sampling: Sampling, seed: u64, target: f64) -> Vec<usize> {
    let mut draw = StdRng::seed_from_u64(seed);
    match sampling {
        Sampling::Replacement => {
            let (mut out, mut asked) = (Vec::new(), 0u64);
            while (asked as f64) < target {
                let i = draw.gen_range(0..pods.len());
                asked += pods[i].total_gpu_milli();
                out.push(i);
            }
            out
        }
        Sampling::Simulator => {
            let mut out: Vec<usize> = (0..pods.len()).collect();
            out.shuffle(&mut draw);
            let mut asked: u64 = pods.iter().map(PodRequest::total_gpu_milli).sum();
            while asked as f64 > target && !out.is_empty() {
                let i = out.remove(draw.gen_range(0..out.len()));
                asked -= pods[i].total_gpu_milli();
            }
            loop {
                let i = draw.gen_range(0..pods.len());
                let more = pods[i].total_gpu_milli();
                if (asked + more) as f64 > target {
                    break out;
                }
                asked += more;
                out.push(i);
            }
        }
    }
}

/// One seed: the arrivals [`arrivals`] draws for a GPU request of `stop` ×
/// capacity, each placed in arrival order.
pub fn replay_seed(
    nodes: &[NodeView],
    pods: &[PodRequest],
    policy: &Policy,
    mix: &WorkloadMix,
    seed: u64,
    stop: f64,
) -> anyhow::Result<SeedResult> {
    replay_seed_with(nodes, pods, policy, mix, seed, stop, Sampling::default())
}

/// [`replay_seed`] with a chosen way of sampling arrivals.
pub fn replay_seed_with(
    nodes: &[NodeView],
    pods: &[PodRequest],
    policy: &Policy,
    mix: &WorkloadMix,
    seed: u64,
    stop: f64,
    sampling: Sampling,
) -> anyhow::Result<SeedResult> {
    if pods.iter().all(|p| p.gpus == 0) {
        bail!("the pod list asks for no GPUs; nothing to replay");
    }
    let mut model = ClusterModel::from_views(nodes);
    let capacity = model.gpu_capacity_milli() as f64;
    if capacity == 0.0 {
        bail!("the node list has no GPUs");
    }
    // A separate stream for the policy's tie-breaks, so that every policy
    // sees the same arrivals for the same seed.
    let mut ties = StdRng::seed_from_u64(seed ^ TIE_SEED);
    let (mut arrived_milli, mut allocated) = (0u64, 0u64);
    let mut out = SeedResult {
        alloc_at_100: f64::NAN,
        alloc_at_130: 0.0,
        arrived: 0,
        failed: 0,
        failed_gpu: 0,
        decision_s: Vec::new(),
        constrained: Vec::new(),
        allocated_milli: 0,
    };
    for i in arrivals(pods, sampling, seed, stop * capacity) {
        let pod = &pods[i];
        out.arrived += 1;
        arrived_milli += pod.total_gpu_milli();
        let t = Instant::now();
        let at = choose_node(&model, pod, policy, mix, &mut ties);
        out.decision_s.push(t.elapsed().as_secs_f64());
        out.constrained.push(!pod.models.is_empty());
        match at {
            Some(at) => {
                model
                    .commit(pod, &at)
                    .context("a chosen placement did not commit")?;
                allocated += pod.total_gpu_milli();
            }
            None => {
                out.failed += 1;
                out.failed_gpu += usize::from(pod.gpus > 0);
            }
        }
        if out.alloc_at_100.is_nan() && arrived_milli as f64 >= capacity {
            out.alloc_at_100 = allocated as f64 / capacity;
        }
    }
    if out.alloc_at_100.is_nan() {
        out.alloc_at_100 = allocated as f64 / capacity;
    }
    out.alloc_at_130 = allocated as f64 / capacity;
    out.allocated_milli = allocated;
    Ok(out)
}

/// Mixed into the seed of the tie-break stream.
const TIE_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Results over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub policy: String,
    pub seeds: usize,
    /// Means over seeds.
    pub alloc_at_100: f64,
    pub alloc_at_130: f64,
    pub arrived: f64,
    /// Pods that failed to place, mean per seed.
    pub failed_pods: f64,
    pub failed_gpu_pods: f64,
    /// Over every decision of every seed.
    pub decision_us_median: f64,
    pub decision_us_p99: f64,
    /// Decisions for pods that name GPU models (mean per seed), and their
    /// median and p99 (NaN when there are none).
    pub constrained: f64,
    pub constrained_us_median: f64,
    pub constrained_us_p99: f64,
    /// The same over the pods that name none.
    pub unconstrained_us_median: f64,
    pub unconstrained_us_p99: f64,
}

pub fn summarize(policy: &Policy, results: &[SeedResult]) -> Summary {
    let n = results.len().max(1) as f64;
    let mean = |f: fn(&SeedResult) -> f64| results.iter().map(f).sum::<f64>() / n;
    let mut us: Vec<f64> = results
        .iter()
        .flat_map(|r| r.decision_s.iter().map(|s| s * 1e6))
        .collect();
    us.sort_by(f64::total_cmp);
    let by = |want: bool| {
        let mut v: Vec<f64> = results
            .iter()
            .flat_map(|r| {
                r.decision_s
                    .iter()
                    .zip(&r.constrained)
                    .filter(move |(_, &c)| c == want)
                    .map(|(s, _)| s * 1e6)
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (with, without) = (by(true), by(false));
    Summary {
        policy: policy.name().to_string(),
        seeds: results.len(),
        alloc_at_100: mean(|r| r.alloc_at_100),
        alloc_at_130: mean(|r| r.alloc_at_130),
        arrived: mean(|r| r.arrived as f64),
        failed_pods: mean(|r| r.failed as f64),
        failed_gpu_pods: mean(|r| r.failed_gpu as f64),
        decision_us_median: crate::percentile(&us, 50.0),
        decision_us_p99: crate::percentile(&us, 99.0),
        constrained: with.len() as f64 / n,
        constrained_us_median: crate::percentile(&with, 50.0),
        constrained_us_p99: crate::percentile(&with, 99.0),
        unconstrained_us_median: crate::percentile(&without, 50.0),
        unconstrained_us_p99: crate::percentile(&without, 99.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuctl_scheduler::placement::MixOptions;

    const NODES: &str = "sn,cpu_milli,memory_mib,gpu,model\n\
        a,8000,16384,2,T4\n\
        b,4000,8192,1,V100\n";
    const PODS: &str = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n\
        p0,1000,1024,1,500,\n\
        p1,2000,2048,2,1000,nan\n\
        p2,500,512,0,0,\n\
        p3,1000,1024,1,1000,V100|T4\n";

    #[test]
    fn parses_by_header() {
        let nodes = parse_nodes("nodes.csv", NODES).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(
            (
                nodes[0].gpus.len(),
                nodes[0].cpu_milli,
                nodes[0].memory_bytes
            ),
            (2, 8000, 16384 * MIB)
        );
        let pods = parse_pods("pods.csv", PODS).unwrap();
        let shapes: Vec<(u32, u32)> = pods.iter().map(|p| (p.gpus, p.gpu_milli)).collect();
        assert_eq!(shapes, [(1, 500), (2, 1000), (0, 0), (1, 1000)]);
        assert_eq!(pods[3].models, ["V100", "T4"]);
        assert!(pods[1].models.is_empty(), "nan means any model");
        // The multigpu20 list has no gpu_spec column.
        let short = parse_pods(
            "m.csv",
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli\nx,1,1,8,0\n",
        )
        .unwrap();
        assert_eq!((short[0].gpus, short[0].gpu_milli), (8, 1000));
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            (
                parse_nodes("n.csv", "sn,cpu_milli,memory_mib,gpu\n").err(),
                "n.csv:1: header has no column `model`",
            ),
            (
                parse_nodes("n.csv", "sn,cpu_milli,memory_mib,gpu,model\na,1,1,x,T4\n").err(),
                "n.csv:2: column `gpu`",
            ),
            (parse_pods("p.csv", "").err(), "p.csv:1: empty file"),
            (
                parse_pods(
                    "p.csv",
                    "name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1,1,1\n",
                )
                .err(),
                "p.csv:2: 4 fields",
            ),
            (
                parse_pods(
                    "p.csv",
                    "name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1,1,1,0\n",
                )
                .err(),
                "p.csv:2: a 1-GPU pod with gpu_milli 0",
            ),
        ];
        for (err, want) in cases {
            let msg = format!("{:#}", err.expect(want));
            assert!(msg.contains(want), "{msg:?} should contain {want:?}");
        }
    }

    #[test]
    fn replay_bookkeeping_on_a_tiny_cluster() {
        let nodes = parse_nodes("nodes.csv", NODES).unwrap();
        let pods = parse_pods("pods.csv", PODS).unwrap();
        let capacity = 3000.0;
        for name in Policy::NAMES {
            let policy = Policy::parse(name, 1).unwrap();
            let mix = WorkloadMix::from_requests(&pods, policy.mix_options());
            for seed in 0..5 {
                let r = replay_seed(&nodes, &pods, &policy, &mix, seed, 1.3).unwrap();
                // Ratios are allocated / capacity, never above 1, and never fall.
                assert!(r.alloc_at_100 <= r.alloc_at_130 + 1e-12, "{name}");
                assert!(r.alloc_at_130 <= 1.0, "{name}");
                assert!((r.alloc_at_130 - r.allocated_milli as f64 / capacity).abs() < 1e-12);
                assert_eq!(r.allocated_milli % 10, 0);
                assert_eq!(r.decision_s.len(), r.arrived);
                assert!(r.failed >= r.failed_gpu && r.failed < r.arrived);
                // Replaying the same draws by hand gives the same bookkeeping.
                let mut model = ClusterModel::from_views(&nodes);
                let mut ties = StdRng::seed_from_u64(seed ^ TIE_SEED);
                let mut failed = 0;
                for i in arrivals(&pods, Sampling::Simulator, seed, 1.3 * capacity) {
                    let p = &pods[i];
                    match choose_node(&model, p, &policy, &mix, &mut ties) {
                        Some(at) => model.commit(p, &at).unwrap(),
                        None => failed += 1,
                    }
                }
                assert_eq!(
                    model.gpu_used_milli(),
                    r.allocated_milli,
                    "{name} seed {seed}"
                );
                assert_eq!(failed, r.failed);
                for n in model.nodes() {
                    assert!(n.cpu_used <= n.cpu_milli && n.memory_used <= n.memory_bytes);
                    assert!(n.gpus.iter().all(|g| g.free <= MILLI));
                }
            }
        }
        let one = replay_seed(
            &nodes,
            &pods,
            &Policy::FirstFit,
            &WorkloadMix::from_requests(&pods, MixOptions::FGD),
            0,
            1.3,
        )
        .unwrap();
        let s = summarize(&Policy::FirstFit, &[one.clone(), one.clone()]);
        assert_eq!(
            (s.seeds, s.alloc_at_130, s.failed_pods),
            (2, one.alloc_at_130, one.failed as f64)
        );
        assert!(s.decision_us_median <= s.decision_us_p99);
    }

    #[test]
    fn arrivals_follow_the_sampling() {
        let pods = parse_pods("pods.csv", PODS).unwrap();
        let asked = |a: &[usize]| a.iter().map(|&i| pods[i].total_gpu_milli()).sum::<u64>();
        // The list asks for 3500m. Simulator: all of it once, then draws
        // that stay within the target; replacement: draws until it is reached.
        for seed in 0..20 {
            let a = arrivals(&pods, Sampling::Simulator, seed, 9000.0);
            let mut first: Vec<usize> = a[..pods.len()].to_vec();
            first.sort_unstable();
            assert_eq!(first, [0, 1, 2, 3], "seed {seed}");
            assert!(asked(&a) <= 9000 && asked(&a) > 9000 - 2000, "seed {seed}");
            assert_eq!(a, arrivals(&pods, Sampling::Simulator, seed, 9000.0));
            // A target under the list's request drops pods at random.
            let few = arrivals(&pods, Sampling::Simulator, seed, 2000.0);
            assert!(
                asked(&few) <= 2000 && few.len() < pods.len() + 4,
                "seed {seed}"
            );
            let r = arrivals(&pods, Sampling::Replacement, seed, 9000.0);
            assert!(asked(&r) >= 9000 && asked(&r[..r.len() - 1]) < 9000);
        }
        assert_eq!(Sampling::parse("simulator"), Some(Sampling::Simulator));
        assert_eq!(Sampling::parse("x"), None);
    }

    #[test]
    fn timeline_on_a_tiny_trace() {
        let nodes = parse_nodes(
            "n.csv",
            "sn,cpu_milli,memory_mib,gpu,model\na,8000,8192,1,T4\n",
        )
        .unwrap();
        // a: the GPU from 0 to 10; b: asks at 5, waits for it until 10,
        // runs 10 s; c: CPU only, never waits; d: half a GPU at 30 for 1 s.
        let pods = parse_timed_pods(
            "p.csv",
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time,deletion_time\n\
             a,1000,1024,1,1000,0,10\n\
             b,1000,1024,1,1000,5,15\n\
             c,1000,1024,0,0,6,100\n\
             d,1000,1024,1,500,30,31\n",
        )
        .unwrap();
        assert_eq!(pods[1].duration(), 10);
        for name in Policy::NAMES {
            let policy = Policy::parse(name, 1).unwrap();
            let mix = WorkloadMix::from_requests(pods.iter().map(|p| &p.req), policy.mix_options());
            let r = replay_timeline(&nodes, &pods, &policy, &mix, 0).unwrap();
            let mut delays = r.delays_s.clone();
            delays.sort_by(f64::total_cmp);
            assert_eq!(delays, [0.0, 0.0, 0.0, 5.0], "{name}");
            assert_eq!((r.waited, r.never_placed, r.pods), (1, 0, 4), "{name}");
            // The GPU is busy from 0 to 20 of the 30 s between first and
            // last creation.
            assert!(
                (r.mean_alloc - 20.0 / 30.0).abs() < 1e-9,
                "{name}: {}",
                r.mean_alloc
            );
            let s = summarize_timeline(&policy, &[r.clone(), r]);
            assert_eq!((s.delay_s_p50, s.delay_s_p99), (0.0, 5.0));
            assert!((s.waited_share - 0.25).abs() < 1e-12);
        }
        // A pod no node can ever take waits to the end.
        let big = parse_timed_pods(
            "p.csv",
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time,deletion_time\n\
             a,1000,1024,2,1000,0,10\n\
             b,1000,1024,1,1000,1,3\n",
        )
        .unwrap();
        let policy = Policy::default();
        let mix = WorkloadMix::from_requests(big.iter().map(|p| &p.req), policy.mix_options());
        let r = replay_timeline(&nodes, &big, &policy, &mix, 0).unwrap();
        assert_eq!((r.never_placed, r.waited, r.delays_s.len()), (1, 1, 1));
        assert!(parse_timed_pods(
            "m.csv",
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli\nx,1,1,1,1000\n"
        )
        .is_err());
    }
}
