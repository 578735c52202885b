//! gpuctl's benchmarks and scenario drivers.
//!
//! - `submit-latency`: on a `gpuctl dev` cluster, the time from `submit`
//!   returning to the task's process starting (p50/p99).
//! - `pipeline-overhead`: on a `gpuctl dev` cluster, the gap from a workflow
//!   step's process exiting to its dependent's starting over a 100-step chain
//!   (p50/p99), and the wall time of a 1,000-way `withItems` fan-out.
//! - `trace-replay`: the placement engine over the Alibaba openb traces, the
//!   FGD paper's method (GPU allocation ratio at 100% and 130% of capacity
//!   requested); the replay core is [`replay`], model constraints for lists
//!   without them [`gpuspec`].
//! - `store-vs-etcd`: a 3-replica gpuctl control plane and a 3-member etcd
//!   side by side: committed writes/s and p50/p99 of ~1 KiB writes at 1, 16
//!   and 64 clients, rounds interleaved; the pieces are in [`store`].
//! - `cluster-scale`: `gpuctl dev` with 1 to 5 replicas and a hollow fleet,
//!   jobs submitted by concurrent clients: jobs bound and started per
//!   second, latencies, and per replica CPU, RSS, disk, Raft metrics and
//!   the catch-up of a restarted follower ([`replicas`]).
//!
//! Results are kept in `benches/RESULTS.md`.

pub mod dev;
pub mod gpuspec;
pub mod replay;
pub mod replicas;
pub mod store;

/// Percentile (nearest-rank) of sorted samples; `p` in 0..=100.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 100.0);
        assert_eq!(percentile(&v, 99.0), 198.0);
        assert_eq!(percentile(&v, 100.0), 200.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
