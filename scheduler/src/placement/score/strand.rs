//! Score: stranding. GPU capacity on a node whose CPU or host memory is
//! nearly gone cannot be used: every GPU task also needs CPU and memory.
//! The stranded amount is the free GPU (thousandths) beyond what the node's
//! CPU and memory left could back at the ratio the workload mix asks for
//! them (its mean CPU and memory per whole GPU). A task should leave as
//! little GPU stranded as it can; the fragmentation measure sees this only
//! through the shapes that ask for much CPU, which are rare.

use crate::placement::mix::WorkloadMix;

/// CPU (thousandths) and memory (bytes) the mix asks for per whole GPU.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HostRatio {
    pub cpu_per_gpu: f64,
    pub memory_per_gpu: f64,
}

impl HostRatio {
    /// Expected CPU and memory over expected GPU, over the mix's GPU shapes
    /// (CPU-only shapes back no GPU). Zero when the mix asks for no GPU.
    pub fn of(mix: &WorkloadMix) -> HostRatio {
        let (mut cpu, mut mem, mut gpu) = (0.0, 0.0, 0.0);
        for e in mix.entries() {
            let gpus = e.shape.total_gpu_milli() as f64 / 1000.0;
            if gpus > 0.0 {
                cpu += e.weight * e.shape.cpu_milli as f64;
                mem += e.weight * e.shape.memory_bytes as f64;
                gpu += e.weight * gpus;
            }
        }
        if gpu == 0.0 {
            return HostRatio::default();
        }
        HostRatio {
            cpu_per_gpu: cpu / gpu,
            memory_per_gpu: mem / gpu,
        }
    }
}

/// Free GPU thousandths that `cpu_left` and `memory_left` cannot back at
/// ratio `r`. A ratio of zero (the mix asks for none of it) backs any amount.
pub fn stranded(free_milli: u64, cpu_left: u64, memory_left: u64, r: HostRatio) -> f64 {
    let backed = |left: u64, per_gpu: f64| {
        if per_gpu > 0.0 {
            left as f64 / per_gpu * 1000.0
        } else {
            f64::INFINITY
        }
    };
    let backed = backed(cpu_left, r.cpu_per_gpu).min(backed(memory_left, r.memory_per_gpu));
    (free_milli as f64 - backed).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::mix::MixEntry;
    use crate::placement::request::PodRequest;

    #[test]
    fn ratio_of_mix() {
        let shape = |cpu, mem, gpus, milli| PodRequest {
            cpu_milli: cpu,
            memory_bytes: mem,
            gpus,
            gpu_milli: milli,
            ..Default::default()
        };
        // (entries as (shape, weight), want cpu and memory per GPU)
        type Case = (Vec<(PodRequest, f64)>, f64, f64);
        let cases: [Case; 4] = [
            (vec![(shape(8000, 800, 1, 1000), 1.0)], 8000.0, 800.0),
            // Half the tasks take two GPUs and 4000 CPU, half a half GPU
            // and 4000 CPU: 4000 CPU over 1.25 GPU expected.
            (
                vec![
                    (shape(4000, 0, 2, 1000), 0.5),
                    (shape(4000, 0, 1, 500), 0.5),
                ],
                3200.0,
                0.0,
            ),
            // CPU-only tasks are left out.
            (
                vec![
                    (shape(6000, 60, 1, 1000), 0.5),
                    (shape(90000, 9000, 0, 0), 0.5),
                ],
                6000.0,
                60.0,
            ),
            (vec![(shape(90000, 9000, 0, 0), 1.0)], 0.0, 0.0),
        ];
        for (i, (entries, cpu, mem)) in cases.into_iter().enumerate() {
            let mix = WorkloadMix::new(
                entries
                    .into_iter()
                    .map(|(shape, weight)| MixEntry { shape, weight })
                    .collect(),
            );
            let r = HostRatio::of(&mix);
            assert!((r.cpu_per_gpu - cpu).abs() < 1e-9, "case {i}: {r:?}");
            assert!((r.memory_per_gpu - mem).abs() < 1e-9, "case {i}: {r:?}");
        }
    }

    #[test]
    fn stranded_table() {
        let r = HostRatio {
            cpu_per_gpu: 10_000.0,
            memory_per_gpu: 100.0,
        };
        // (free GPU milli, cpu left, memory left, ratio, want)
        let cases = [
            ("CPU and memory back it all", 2000, 20_000, 200, r, 0.0),
            ("CPU backs one GPU of two", 2000, 10_000, 1000, r, 1000.0),
            ("memory backs a quarter", 1000, 50_000, 25, r, 750.0),
            ("no CPU left: all of it", 1500, 0, 1000, r, 1500.0),
            ("no GPU free, nothing", 0, 0, 0, r, 0.0),
            (
                "a mix asking no memory",
                1000,
                10_000,
                0,
                HostRatio {
                    memory_per_gpu: 0.0,
                    ..r
                },
                0.0,
            ),
            ("capacity not reported", 1000, u64::MAX, u64::MAX, r, 0.0),
        ];
        for (name, free, cpu, mem, r, want) in cases {
            let got = stranded(free, cpu, mem, r);
            assert!((got - want).abs() < 1e-9, "{name}: {got} vs {want}");
        }
    }
}
