//! What a load run measured, and the figures over rounds: medians, quantiles,
//! and the paired gateway-vs-nginx summary.

use std::time::Duration;

/// What one load run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct LoadResult {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// Medians over rounds of each figure (each on its own).
pub(crate) struct Medians {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) cpu_us: f64,
}

/// The `q` quantile of `v` (0.5: the median), between the two nearest values;
/// NaN for none.
pub(crate) fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let x = q * (v.len() - 1) as f64;
    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
}

pub(crate) fn median(v: Vec<f64>) -> f64 {
    quantile(v, 0.5)
}

pub(crate) fn medians(runs: &[(LoadResult, f64)]) -> Medians {
    Medians {
        rps: median(runs.iter().map(|r| r.0.rps).collect()),
        p50_ms: median(runs.iter().map(|r| r.0.p50_ms).collect()),
        p99_ms: median(runs.iter().map(|r| r.0.p99_ms).collect()),
        cpu_us: median(runs.iter().map(|r| r.1).collect()),
    }
}

/// The rounds of the proxy comparison taken in pairs (gateway and nginx of one round).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PairedRounds {
    pub(crate) rounds: usize,
    /// Median over the rounds of gateway requests/s ÷ nginx requests/s.
    pub(crate) median_rps_ratio: f64,
    /// Its lower and upper quartiles.
    pub(crate) rps_ratio_quartiles: (f64, f64),
    /// Rounds where the gateway answered more requests per second.
    pub(crate) gateway_ahead: usize,
    /// Median over the rounds of gateway p99 − nginx p99, in ms.
    pub(crate) median_p99_difference_ms: f64,
}

impl PairedRounds {
    /// From (rps ratio, p99 difference) per round.
    pub(crate) fn of(pairs: &[(f64, f64)]) -> PairedRounds {
        let ratios: Vec<f64> = pairs.iter().map(|p| p.0).collect();
        PairedRounds {
            rounds: pairs.len(),
            median_rps_ratio: median(ratios.clone()),
            rps_ratio_quartiles: (quantile(ratios.clone(), 0.25), quantile(ratios, 0.75)),
            gateway_ahead: pairs.iter().filter(|p| p.0 > 1.0).count(),
            median_p99_difference_ms: median(pairs.iter().map(|p| p.1).collect()),
        }
    }
}

impl std::fmt::Display for PairedRounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "paired rounds: gateway / nginx requests per second, median {:.3} (quartiles {:.3}-{:.3}), gateway ahead in {} of {}; p99 gateway - nginx, median {:+.3} ms",
            self.median_rps_ratio,
            self.rps_ratio_quartiles.0,
            self.rps_ratio_quartiles.1,
            self.gateway_ahead,
            self.rounds,
            self.median_p99_difference_ms
        )
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}
