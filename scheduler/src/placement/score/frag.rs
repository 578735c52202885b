//! Score: fragmentation, the measure of FGD (Weng et al., "Beware of
//! Fragmentation", ATC'23). For one task shape, the fragment of a node is
//! the free GPU capacity that shape cannot use there: all of it when the
//! shape does not fit the node at all (too few GPUs with room, too little
//! CPU, a model it does not accept), else the free capacity of the GPUs
//! too small for one of its GPUs. A node's fragmentation is the expected
//! fragment over the [`WorkloadMix`]; placing a task should increase it as
//! little as possible.

use crate::placement::mix::WorkloadMix;
use crate::placement::node::GpuKind;
use crate::placement::request::PodRequest;

/// One healthy GPU as the measure needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub free: u32,
    pub kind: u16,
}

/// A node's state as the measure needs it.
#[derive(Debug, Clone, Copy)]
pub struct HostLeft {
    pub cpu: u64,
    pub memory: u64,
}

/// The free capacity of `gpus` that one task of `shape` could not use.
pub fn fragment(
    gpus: &[Cap],
    host: HostLeft,
    shape: &PodRequest,
    kinds: &[GpuKind],
    memory: bool,
) -> u64 {
    let accept = shape.accept_table(kinds);
    fragment_by(gpus, host, shape, &accept, memory)
}

/// [`fragment`] with the shape's answer per GPU kind worked out already
/// (`accept[k]`: whether the shape takes kind `k`; a kind beyond the table
/// is refused by a shape with constraints), so that model constraints cost a lookup, not a string
/// comparison, per GPU.
fn fragment_by(
    gpus: &[Cap],
    host: HostLeft,
    shape: &PodRequest,
    accept: &[bool],
    memory: bool,
) -> u64 {
    let total: u64 = gpus.iter().map(|g| u64::from(g.free)).sum();
    if shape.gpus == 0 || host.cpu < shape.cpu_milli || (memory && host.memory < shape.memory_bytes)
    {
        return total;
    }
    let any_model = shape.models.is_empty() && shape.gpu_memory == 0;
    let (mut room, mut frag) = (0u32, 0u64);
    for g in gpus {
        let ok = g.free >= shape.gpu_milli
            && (any_model || accept.get(g.kind as usize).copied().unwrap_or(false));
        if ok {
            room += 1;
        } else {
            frag += u64::from(g.free);
        }
    }
    if room >= shape.gpus {
        frag
    } else {
        total
    }
}

/// Which GPU kinds each group of a mix accepts, worked out once for a
/// cluster's kinds (the model and memory constraints of a mix's shapes
/// compared with every kind once, not per GPU per node per decision), and,
/// per kind, the mix as a node of only that kind sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MixKinds {
    /// The kinds the table was worked out for.
    kinds: Vec<GpuKind>,
    /// Per group of the mix, per kind: whether the group's GPU side accepts it.
    accept: Vec<Vec<bool>>,
    /// Per kind: the mix for a node whose GPUs are all of that kind.
    by_kind: Vec<KindMix>,
}

/// (CPU, memory, weight) of each shape of a group.
type Hosts = Vec<(u64, u64, f64)>;

/// The mix as a node of one GPU kind sees it. A shape whose models the
/// kind does not serve finds every free GPU unusable whatever the node's
/// state, so those shapes are one weight (`rest`); a shape that names the
/// kind (or any kind) needs only GPUs with room, so shapes with the same GPU
/// count and share are one group, however they name models. With model
/// constraints spread over many models this keeps the work per node near
/// that of a mix without constraints.
#[derive(Debug, Clone, PartialEq, Default)]
struct KindMix {
    /// (GPUs, thousandths of each), the hosts (CPU, memory, weight) of the
    /// shapes with that GPU side, and their summed weight; in the mix's order.
    groups: Vec<((u32, u32), Hosts, f64)>,
    /// Summed weight of the shapes that do not accept the kind.
    rest: f64,
}

impl MixKinds {
    /// The table for `mix`'s groups over `kinds`.
    pub fn of(mix: &WorkloadMix, kinds: &[GpuKind]) -> MixKinds {
        let accept: Vec<Vec<bool>> = mix
            .groups()
            .iter()
            .map(|g| g.gpu.accept_table(kinds))
            .collect();
        let by_kind = (0..kinds.len())
            .map(|k| {
                let mut km = KindMix::default();
                for (g, acc) in mix.groups().iter().zip(&accept) {
                    if !acc[k] && g.gpu.gpus > 0 {
                        km.rest += g.weight;
                        continue;
                    }
                    let side = (g.gpu.gpus, g.gpu.gpu_milli);
                    match km.groups.iter_mut().find(|(s, ..)| *s == side) {
                        Some((_, hosts, w)) => {
                            hosts.extend_from_slice(&g.hosts);
                            *w += g.weight;
                        }
                        None => km.groups.push((side, g.hosts.clone(), g.weight)),
                    }
                }
                km
            })
            .collect();
        MixKinds {
            kinds: kinds.to_vec(),
            accept,
            by_kind,
        }
    }

    /// Whether the table was worked out for these kinds (and a mix of
    /// `groups` groups).
    pub fn holds_for(&self, kinds: &[GpuKind], groups: usize) -> bool {
        self.accept.len() == groups && self.kinds == kinds
    }
}

/// Expected fragment over the mix, in thousandths of a GPU. `memory`:
/// whether a shape that lacks host memory counts as not fitting (FGD only
/// looks at CPU). Equal to the weighted sum of [`fragment`] over the mix's
/// shapes, with the GPU side worked out once per group of shapes.
pub fn node_frag(
    gpus: &[Cap],
    host: HostLeft,
    mix: &WorkloadMix,
    kinds: &[GpuKind],
    memory: bool,
) -> f64 {
    node_frag_by(gpus, host, mix, &MixKinds::of(mix, kinds), memory)
}

/// [`node_frag`] with the mix's [`MixKinds`] for the cluster's kinds.
pub fn node_frag_by(
    gpus: &[Cap],
    host: HostLeft,
    mix: &WorkloadMix,
    table: &MixKinds,
    memory: bool,
) -> f64 {
    let total: u64 = gpus.iter().map(|g| u64::from(g.free)).sum();
    let one_kind = gpus
        .first()
        .map(|g| g.kind)
        .filter(|&k| gpus.iter().all(|g| g.kind == k));
    if let Some(km) = one_kind.and_then(|k| table.by_kind.get(usize::from(k))) {
        return frag_one_kind(gpus, total, host, km, memory);
    }
    let mut f = 0.0;
    for (g, accept) in mix.groups().iter().zip(&table.accept) {
        let gpu_side = fragment_by(gpus, NO_LIMIT, &g.gpu, accept, false);
        if gpu_side == total {
            f += g.weight * total as f64;
            continue;
        }
        for &(cpu, mem, w) in &g.hosts {
            let fits = host.cpu >= cpu && (!memory || host.memory >= mem);
            f += w * if fits { gpu_side } else { total } as f64;
        }
    }
    f
}

/// [`node_frag_by`] for a node whose GPUs are all of one kind.
fn frag_one_kind(gpus: &[Cap], total: u64, host: HostLeft, km: &KindMix, memory: bool) -> f64 {
    let mut f = 0.0;
    for &((count, milli), ref hosts, weight) in &km.groups {
        // The GPU side: every GPU of the node is of an accepted kind.
        let gpu_side = if count == 0 {
            total
        } else {
            let (mut room, mut frag) = (0u32, 0u64);
            for g in gpus {
                if g.free >= milli {
                    room += 1;
                } else {
                    frag += u64::from(g.free);
                }
            }
            if room >= count {
                frag
            } else {
                total
            }
        };
        if gpu_side == total {
            f += weight * total as f64;
            continue;
        }
        for &(cpu, mem, w) in hosts {
            let fits = host.cpu >= cpu && (!memory || host.memory >= mem);
            f += w * if fits { gpu_side } else { total } as f64;
        }
    }
    f + km.rest * total as f64
}

const NO_LIMIT: HostLeft = HostLeft {
    cpu: u64::MAX,
    memory: u64::MAX,
};

/// FGD's node score for a change of fragmentation `delta` (thousandths):
/// `sigmoid(-delta / 1000)` scaled to the scheduler framework's 0..=100 and
/// truncated, as the authors' simulator does. Truncation makes many nodes
/// tie; FGD breaks those ties at random.
pub fn fgd_score(delta: f64) -> i64 {
    let s = 1.0 / (1.0 + (delta / 1000.0).exp());
    (s * 100.0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::mix::MixEntry;

    fn caps(free: &[u32]) -> Vec<Cap> {
        free.iter().map(|&f| Cap { free: f, kind: 0 }).collect()
    }

    fn shape(gpus: u32, milli: u32, cpu: u64) -> PodRequest {
        PodRequest {
            cpu_milli: cpu,
            gpus,
            gpu_milli: milli,
            ..Default::default()
        }
    }

    const HOST: HostLeft = HostLeft {
        cpu: 8000,
        memory: 1 << 30,
    };

    #[test]
    fn fragment_table() {
        let kinds = [GpuKind {
            model: "T4".into(),
            memory_bytes: 16 << 30,
        }];
        let mut a100 = shape(1, 1000, 0);
        a100.models = vec!["A100".into()];
        let mut mem_hog = shape(1, 500, 0);
        mem_hog.memory_bytes = 2 << 30;
        // (name, free per GPU, shape, check memory, want)
        let cases = [
            (
                "cpu-only shape cannot use any GPU",
                vec![1000, 300],
                shape(0, 0, 1),
                false,
                1300,
            ),
            (
                "whole GPU: the partly used GPU is a fragment",
                vec![1000, 300],
                shape(1, 1000, 1),
                false,
                300,
            ),
            (
                "share of 300 fits both",
                vec![1000, 300],
                shape(1, 300, 1),
                false,
                0,
            ),
            (
                "share of 500: the 300 left is a fragment",
                vec![1000, 300],
                shape(1, 500, 1),
                false,
                300,
            ),
            (
                "two whole GPUs do not fit: all of it",
                vec![1000, 300],
                shape(2, 1000, 1),
                false,
                1300,
            ),
            (
                "not enough CPU: all of it",
                vec![1000, 300],
                shape(1, 500, 9000),
                false,
                1300,
            ),
            (
                "model not accepted: all of it",
                vec![1000],
                a100,
                false,
                1000,
            ),
            (
                "memory ignored unless asked",
                vec![1000],
                mem_hog.clone(),
                false,
                0,
            ),
            (
                "memory short when asked: all of it",
                vec![1000],
                mem_hog,
                true,
                1000,
            ),
            (
                "nothing free, no fragment",
                vec![0, 0],
                shape(1, 100, 1),
                false,
                0,
            ),
        ];
        for (name, free, s, mem, want) in cases {
            assert_eq!(
                fragment(&caps(&free), HOST, &s, &kinds, mem),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn node_frag_weights_and_fgd_choice() {
        let mix = WorkloadMix::new(vec![
            MixEntry {
                shape: shape(1, 1000, 0),
                weight: 0.5,
            },
            MixEntry {
                shape: shape(1, 500, 0),
                weight: 0.5,
            },
        ]);
        let f = |free: &[u32]| node_frag(&caps(free), HOST, &mix, &[], false);
        assert_eq!(f(&[1000, 1000]), 0.0);
        assert_eq!(f(&[1000, 600]), 300.0);
        assert_eq!(f(&[1000, 400]), 0.5 * 400.0 + 0.5 * 400.0);
        // A share of 400 on a node [1000, 600]: onto the used GPU leaves
        // [1000, 200] (frag 200), onto the free one [600, 600] (frag 600).
        let before = f(&[1000, 600]);
        assert!(f(&[1000, 200]) - before < f(&[600, 600]) - before);
        assert!(fgd_score(f(&[1000, 200]) - before) > fgd_score(f(&[600, 600]) - before));
        assert_eq!(fgd_score(0.0), 50);
        assert_eq!(fgd_score(-1e9), 100);
        assert_eq!(fgd_score(1e9), 0);
    }

    #[test]
    fn grouped_sum_equals_per_shape_sum() {
        let kinds = [GpuKind {
            model: "T4".into(),
            memory_bytes: 0,
        }];
        let mut shapes = Vec::new();
        for (gpus, milli) in [(0, 0), (1, 300), (1, 1000), (2, 1000)] {
            for cpu in [0, 4000, 9000] {
                let mut s = shape(gpus, milli, cpu);
                s.memory_bytes = cpu << 18;
                shapes.push(MixEntry {
                    shape: s,
                    weight: 1.0 / 12.0,
                });
            }
        }
        let mix = WorkloadMix::new(shapes.clone());
        for free in [vec![1000, 1000], vec![700, 0], vec![1000, 200], vec![]] {
            for mem in [false, true] {
                let host = HostLeft {
                    cpu: 5000,
                    memory: 1 << 30,
                };
                let want: f64 = shapes
                    .iter()
                    .map(|e| e.weight * fragment(&caps(&free), host, &e.shape, &kinds, mem) as f64)
                    .sum();
                let got = node_frag(&caps(&free), host, &mix, &kinds, mem);
                assert!((got - want).abs() < 1e-9, "{free:?} {mem}: {got} vs {want}");
            }
        }
    }

    /// With model constraints in the mix, the kind table gives the sum a
    /// GPU-by-GPU comparison of models gives, on nodes of mixed kinds.
    #[test]
    fn kind_table_equals_model_comparison() {
        let kind = |model: &str, gib: u64| GpuKind {
            model: model.into(),
            memory_bytes: gib << 30,
        };
        let kinds = [kind("T4", 16), kind("V100M32", 32), kind("A100-80GB", 80)];
        let mut shapes = Vec::new();
        let constraints: [(&[&str], u64); 6] = [
            (&[], 0),
            (&["T4"], 0),
            (&["v100m32", "T4"], 0),
            (&["A100"], 0),
            (&["H100"], 0),
            (&[], 40 << 30),
        ];
        for (models, gpu_memory) in constraints {
            for (gpus, milli) in [(1, 300), (1, 1000), (2, 1000)] {
                for cpu in [0, 9000] {
                    shapes.push(PodRequest {
                        cpu_milli: cpu,
                        gpus,
                        gpu_milli: milli,
                        models: models.iter().map(|m| m.to_string()).collect(),
                        gpu_memory,
                        ..Default::default()
                    });
                }
            }
        }
        let w = 1.0 / shapes.len() as f64;
        let mix = WorkloadMix::new(
            shapes
                .iter()
                .map(|s| MixEntry {
                    shape: s.clone(),
                    weight: w,
                })
                .collect(),
        );
        // What one GPU-by-GPU pass over the shapes, comparing model names,
        // says the node's fragmentation is.
        let by_names = |gpus: &[Cap], host: HostLeft| -> f64 {
            let total: u64 = gpus.iter().map(|g| u64::from(g.free)).sum();
            let mut f = 0.0;
            for s in &shapes {
                let fits_host = host.cpu >= s.cpu_milli;
                let room = gpus
                    .iter()
                    .filter(|g| g.free >= s.gpu_milli && s.accepts(&kinds[g.kind as usize]))
                    .count() as u32;
                let frag: u64 = if fits_host && room >= s.gpus {
                    gpus.iter()
                        .filter(|g| !(g.free >= s.gpu_milli && s.accepts(&kinds[g.kind as usize])))
                        .map(|g| u64::from(g.free))
                        .sum()
                } else {
                    total
                };
                f += w * frag as f64;
            }
            f
        };
        let table = MixKinds::of(&mix, &kinds);
        assert!(table.holds_for(&kinds, mix.groups().len()));
        assert!(!table.holds_for(&kinds[..2], mix.groups().len()));
        let nodes: [&[(u32, u16)]; 5] = [
            &[(1000, 0), (1000, 0)],
            &[(1000, 1), (700, 1)],
            &[(1000, 2), (300, 2), (1000, 0)],
            &[(200, 1), (1000, 2)],
            &[],
        ];
        for gpus in nodes {
            let caps: Vec<Cap> = gpus
                .iter()
                .map(|&(free, kind)| Cap { free, kind })
                .collect();
            let host = HostLeft {
                cpu: 5000,
                memory: 1 << 30,
            };
            let want = by_names(&caps, host);
            let got = node_frag_by(&caps, host, &mix, &table, false);
            assert!((got - want).abs() < 1e-9, "{gpus:?}: {got} vs {want}");
            assert_eq!(node_frag(&caps, host, &mix, &kinds, false), got);
        }
    }
}
