//! The gateway's Prometheus metrics, registered once per gateway.

use prometheus::core::Metric;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

pub(super) struct Metrics {
    pub(super) registry: Registry,
    pub(super) requests: IntCounterVec,
    pub(super) duration: HistogramVec,
    pub(super) in_flight: IntGaugeVec,
    pub(super) cold_starts: IntCounterVec,
    pub(super) cold_start_duration: HistogramVec,
    pub(super) queued: IntGaugeVec,
    pub(super) ready_replicas: IntGaugeVec,
    pub(super) desired_replicas: IntGaugeVec,
    pub(super) upstream_errors: IntCounterVec,
    /// OpenAI routes: time to the first streamed chunk, tokens by kind
    /// (prompt, completion) and completion tokens per second, from `usage`.
    pub(super) ttft: HistogramVec,
    pub(super) tokens: IntCounterVec,
    pub(super) tokens_per_second: HistogramVec,
}

impl Metrics {
    pub(super) fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "gpuctl_gateway_requests_total",
                "Requests answered by the gateway, by endpoint and HTTP status code.",
            ),
            &["endpoint", "code"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "gpuctl_gateway_request_duration_seconds",
                "Time from request received to response ready, queueing included.",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 18).expect("valid buckets")),
            &["endpoint"],
        )
        .expect("valid metric");
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "gpuctl_gateway_in_flight_requests",
                "Requests being handled (queued or forwarded), by endpoint.",
            ),
            &["endpoint"],
        )
        .expect("valid metric");
        let cold_starts = IntCounterVec::new(
            Opts::new(
                "gpuctl_gateway_cold_starts_total",
                "Times a request found an endpoint with no replica and asked for a scale-up.",
            ),
            &["endpoint"],
        )
        .expect("valid metric");
        let cold_start_duration = HistogramVec::new(
            HistogramOpts::new(
                "gpuctl_gateway_cold_start_duration_seconds",
                "Time a request held for an endpoint with no ready replica waited until one was ready.",
            )
            .buckets(prometheus::exponential_buckets(0.005, 2.0, 16).expect("valid buckets")),
            &["endpoint"],
        )
        .expect("valid metric");
        let queued = gauge(
            "gpuctl_gateway_queued_requests",
            "Requests held waiting for a ready replica (the activator queue), by endpoint.",
            &["endpoint"],
        );
        let ready_replicas = gauge(
            "gpuctl_gateway_ready_replicas",
            "Replicas the gateway routes to (ready, not draining), by endpoint.",
            &["endpoint"],
        );
        let desired_replicas = gauge(
            "gpuctl_gateway_desired_replicas",
            "Replicas the autoscaler wants, by endpoint, as last read from the scheduler.",
            &["endpoint"],
        );
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "gpuctl_gateway_upstream_errors_total",
                "Requests a replica failed, by endpoint, replica and kind: connect (no connection; retried elsewhere), failed (broken off or malformed; 502) or timeout (no answer in time; 504).",
            ),
            &["endpoint", "replica", "kind"],
        )
        .expect("valid metric");
        let ttft = HistogramVec::new(
            HistogramOpts::new(
                "gpuctl_gateway_time_to_first_token_seconds",
                "OpenAI routes, streamed responses: time from request received to the first chunk of the answer.",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 16).expect("valid buckets")),
            &["endpoint"],
        )
        .expect("valid metric");
        let tokens = IntCounterVec::new(
            Opts::new(
                "gpuctl_gateway_tokens_total",
                "OpenAI routes: tokens reported in responses' usage, by endpoint and kind (prompt, completion).",
            ),
            &["endpoint", "kind"],
        )
        .expect("valid metric");
        let tokens_per_second = HistogramVec::new(
            HistogramOpts::new(
                "gpuctl_gateway_tokens_per_second",
                "OpenAI routes: completion tokens of one response (from its usage) over its duration.",
            )
            .buckets(prometheus::exponential_buckets(1.0, 2.0, 14).expect("valid buckets")),
            &["endpoint"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(ttft.clone()),
            Box::new(tokens.clone()),
            Box::new(tokens_per_second.clone()),
            Box::new(duration.clone()),
            Box::new(in_flight.clone()),
            Box::new(cold_starts.clone()),
            Box::new(cold_start_duration.clone()),
            Box::new(queued.clone()),
            Box::new(ready_replicas.clone()),
            Box::new(desired_replicas.clone()),
            Box::new(upstream_errors.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        let _ = gpuctl_telemetry::register_build_info(&registry, "gateway");
        Metrics {
            registry,
            requests,
            duration,
            in_flight,
            cold_starts,
            cold_start_duration,
            queued,
            ready_replicas,
            desired_replicas,
            upstream_errors,
            ttft,
            tokens,
            tokens_per_second,
        }
    }
}

/// A histogram's buckets: upper bound (seconds) and cumulative count.
pub(super) fn buckets(h: &Histogram) -> Vec<(f64, u64)> {
    h.metric()
        .get_histogram()
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect()
}

/// The `q` quantile (0..1) in milliseconds of the requests counted between
/// two readings of one histogram's buckets (`before`, `now`: upper bound in
/// seconds, cumulative count), interpolated linearly inside its bucket as
/// Prometheus' `histogram_quantile` does; `None` when no request was counted.
pub fn quantile_ms(before: &[(f64, u64)], now: &[(f64, u64)], q: f64) -> Option<f64> {
    let count = |i: usize| {
        let b = before.get(i).map_or(0, |b| b.1);
        now[i].1.saturating_sub(b)
    };
    let total = count(now.len().checked_sub(1)?);
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut lower = (0.0, 0);
    for (i, &(bound, _)) in now.iter().enumerate() {
        let c = count(i);
        if c as f64 >= rank {
            let (lo, below) = lower;
            let inside = (c - below).max(1) as f64;
            let at = lo + (bound - lo) * (rank - below as f64) / inside;
            return Some(at * 1000.0);
        }
        lower = (bound, c);
    }
    Some(lower.0 * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets_counted_between_two_readings() {
        let before = [(0.001, 10), (0.002, 10), (0.004, 10)];
        // Since `before`: 50 requests under 1 ms, 49 in 1-2 ms, 1 in 2-4 ms.
        let now = [(0.001, 60), (0.002, 109), (0.004, 110)];
        let p50 = quantile_ms(&before, &now, 0.5).unwrap();
        assert!((p50 - 1.0).abs() < 1e-9, "{p50}");
        let p99 = quantile_ms(&before, &now, 0.99).unwrap();
        assert!((p99 - 2.0).abs() < 1e-9, "{p99}");
        assert!(quantile_ms(&now, &now, 0.5).is_none(), "nothing new");
        assert!(quantile_ms(&[], &[], 0.5).is_none());
        assert_eq!(quantile_ms(&[], &now, 1.0), Some(4.0));
    }
}
