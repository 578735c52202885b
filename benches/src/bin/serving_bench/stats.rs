//! What a load run measured, and the figures over rounds: medians, quantiles,
//! and the paired gateway-vs-nginx summary.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;

/// What one load run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct LoadResult {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// One client's latencies of answered requests, and its errors.
pub(crate) type Tally = (Vec<Duration>, u64);

/// The measured part of a load run: answers that arrive after the warm-up
/// (`start`) and before `end` count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) start: Instant,
    pub(crate) end: Instant,
}

impl Window {
    /// From now: `warmup`, then `measure`.
    pub(crate) fn new(warmup: Duration, measure: Duration) -> Window {
        let start = Instant::now() + warmup;
        Window {
            start,
            end: start + measure,
        }
    }

    /// Whether clients should keep sending.
    pub(crate) fn open(&self) -> bool {
        Instant::now() < self.end
    }

    /// The answer to a request sent at `sent`, just received: its latency when
    /// `ok`, else an error; counted only inside the window.
    pub(crate) fn record(&self, sent: Instant, ok: bool, tally: &mut Tally) {
        let done = Instant::now();
        if done >= self.start && done < self.end {
            if ok {
                tally.0.push(done - sent);
            } else {
                tally.1 += 1;
            }
        }
    }
}

impl LoadResult {
    /// The figures of every client's tally over a window of `measure`.
    pub(crate) async fn gather(
        clients: Vec<tokio::task::JoinHandle<Tally>>,
        measure: Duration,
    ) -> LoadResult {
        let (mut all, mut errors) = (Vec::new(), 0);
        for c in clients {
            if let Ok((l, e)) = c.await {
                all.extend(l);
                errors += e;
            }
        }
        all.sort();
        LoadResult {
            requests: all.len() as u64,
            errors,
            rps: all.len() as f64 / measure.as_secs_f64(),
            p50_ms: percentile(&all, 0.5),
            p99_ms: percentile(&all, 0.99),
        }
    }
}

/// Send `req` on a kept-alive HTTP/1.1 connection and read the whole answer:
/// true for a 2xx answer read to its end.
pub(crate) async fn answered_ok(
    send: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> bool {
    match send.send_request(req).await {
        Ok(resp) => {
            let good = resp.status().is_success();
            resp.into_body().collect().await.is_ok() && good
        }
        Err(_) => false,
    }
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
