//! Score: best fit. How much a node has left after the task, CPU and GPU
//! weighted equally and normalised by the largest node (the FGD authors'
//! BestFit baseline); lower is tighter. Within a node, a share goes on the
//! GPU it fills most, so that already-shared GPUs fill up before whole
//! ones are broken.

use crate::placement::filter::gpu_fit;
use crate::placement::node::NodeModel;
use crate::placement::request::PodRequest;

/// Leftover in 0..=1 after `req` lands on `n` (lower is tighter).
pub fn leftover(n: &NodeModel, req: &PodRequest, max_cpu: u64, max_gpu: u64) -> f64 {
    let cpu = if n.cpu_milli == 0 || max_cpu == 0 {
        0.0
    } else {
        n.cpu_left().saturating_sub(req.cpu_milli) as f64 / max_cpu as f64
    };
    let gpu = if max_gpu == 0 {
        0.0
    } else {
        n.gpu_free_milli().saturating_sub(req.total_gpu_milli()) as f64 / max_gpu as f64
    };
    0.5 * cpu + 0.5 * gpu
}

/// The simulator's integer score (0..=100, higher is tighter).
pub fn score(leftover: f64) -> i64 {
    ((1.0 - leftover) * 100.0) as i64
}

/// The GPU with the least room that still takes `milli` (first by index on ties).
pub fn tightest_gpu(n: &NodeModel, accept: &[bool], milli: u32) -> Option<usize> {
    n.gpus
        .iter()
        .enumerate()
        .filter(|(_, g)| gpu_fit::has_room(g, accept, milli))
        .min_by_key(|(i, g)| (g.free, *i))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::filter::testutil::node;

    #[test]
    fn leftover_table() {
        let req = |cpu, gpus, milli| PodRequest {
            cpu_milli: cpu,
            gpus,
            gpu_milli: milli,
            ..Default::default()
        };
        // (node cpu, used per GPU, request, want leftover) with max 8000 CPU, 2000 GPU
        let cases = [
            (8000, vec![0, 0], req(8000, 2, 1000), 0.0),
            (8000, vec![0, 0], req(0, 0, 0), 1.0),
            (
                4000,
                vec![0, 500],
                req(2000, 1, 500),
                0.5 * 0.25 + 0.5 * 0.5,
            ),
            (0, vec![0, 0], req(2000, 1, 1000), 0.25),
        ];
        for (i, (cpu, used, r, want)) in cases.into_iter().enumerate() {
            let n = node(cpu, 0, &used);
            let got = leftover(&n, &r, 8000, 2000);
            assert!((got - want).abs() < 1e-9, "case {i}: {got} vs {want}");
        }
        assert_eq!(score(0.0), 100);
        assert_eq!(score(0.255), 74);
    }

    #[test]
    fn tightest_table() {
        // (used per GPU, share, want)
        let cases = [
            (vec![0, 500, 200], 400, Some(1)),
            (vec![0, 700, 200], 400, Some(2)),
            (vec![0, 0], 1000, Some(0)),
            (vec![900, 900], 200, None),
        ];
        for (used, milli, want) in cases {
            assert_eq!(
                tightest_gpu(&node(0, 0, &used), &[true], milli),
                want,
                "{used:?}"
            );
        }
    }
}
