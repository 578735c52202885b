//! The gateway's Prometheus metrics, registered once per gateway.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

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
