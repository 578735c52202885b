//! The gateway's Prometheus metrics, registered once per gateway.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

pub(super) struct Metrics {
    pub(super) registry: Registry,
    pub(super) requests: IntCounterVec,
    pub(super) duration: HistogramVec,
    pub(super) in_flight: IntGaugeVec,
    pub(super) cold_starts: IntCounterVec,
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
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(in_flight.clone()),
            Box::new(cold_starts.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            requests,
            duration,
            in_flight,
            cold_starts,
        }
    }
}
