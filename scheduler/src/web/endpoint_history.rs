//! Each endpoint's load and replicas over the last hour, for the Endpoints
//! page's charts. The source is this replica's applied state: the gateways
//! report requests per second, concurrency and latency to the leader every
//! second, and the leader writes an endpoint's figures into the replicated
//! state (`EndpointLoad`) when they move by a few percent, at most every two
//! seconds; replica counts and scale events are there already. So leader
//! and followers chart the same figures without asking a gateway or reading
//! every object, and the Raft log holds no time series: each replica keeps
//! its own bounded ring in memory (one that just started shows what it saw
//! since).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use gpuctl_common::api::TaskPhase;
use serde_json::{json, Value};

use super::history::SPAN_MS;
use crate::state::State;

/// How often the endpoints are looked at.
pub const EVERY: Duration = Duration::from_secs(1);
/// A point is kept at least this often while nothing changes.
const KEEP_EVERY_MS: u64 = 15_000;
/// The most points kept per endpoint (an hour at one every 5 s).
pub const MAX_POINTS: usize = 720;

/// One endpoint's figures at one time: requests per second, latency p50
/// and p99 (ms), replicas ready and desired, concurrency.
pub type Figures = [f64; 6];

/// Points `(time ms, figures)` per endpoint, oldest first.
#[derive(Debug, Default)]
pub struct EndpointHistory {
    by_name: Mutex<HashMap<String, VecDeque<(u64, Figures)>>>,
}

/// Every endpoint's figures in `st` now.
pub fn figures(st: &State) -> Vec<(String, Figures)> {
    st.endpoints
        .values()
        .map(|e| {
            let s = &e.status;
            let ready = s
                .replicas
                .iter()
                .filter(|r| !r.draining())
                .filter(|r| {
                    st.jobs
                        .get(&r.job)
                        .and_then(|j| j.status.tasks.first())
                        .is_some_and(|t| t.phase == TaskPhase::Running)
                })
                .count();
            (
                e.metadata.name.clone(),
                [
                    s.requests_per_second,
                    s.latency_p50_ms,
                    s.latency_p99_ms,
                    ready as f64,
                    f64::from(s.desired_replicas),
                    s.concurrency,
                ],
            )
        })
        .collect()
}

impl EndpointHistory {
    /// Record `now`'s figures: a point when they changed or the last one is
    /// [`KEEP_EVERY_MS`] old; endpoints not in `now` are forgotten.
    pub fn record(&self, now_ms: u64, now: Vec<(String, Figures)>) {
        let mut map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|name, _| now.iter().any(|(n, _)| n == name));
        for (name, f) in now {
            let points = map.entry(name).or_default();
            let due = points
                .back()
                .is_none_or(|(t, last)| *last != f || t + KEEP_EVERY_MS <= now_ms);
            if due {
                points.push_back((now_ms, f));
            }
            while points.len() > MAX_POINTS
                || points.front().is_some_and(|(t, _)| t + SPAN_MS < now_ms)
            {
                points.pop_front();
            }
        }
    }

    /// `name`'s points as `[[ms, rps, p50, p99, ready, desired, concurrency], ...]`.
    pub fn to_json(&self, name: &str) -> Value {
        let map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        Value::Array(
            map.get(name)
                .into_iter()
                .flatten()
                .map(|(t, f)| {
                    let mut row = vec![json!(t)];
                    row.extend(f.iter().map(|v| json!(round(*v))));
                    Value::Array(row)
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rps: f64, ready: f64) -> Vec<(String, Figures)> {
        vec![("e".into(), [rps, 1.5, 9.0, ready, 1.0, 0.5])]
    }

    #[test]
    fn a_point_is_kept_when_the_figures_change_and_the_ring_is_bounded() {
        let h = EndpointHistory::default();
        h.record(1_000, at(0.0, 0.0));
        h.record(2_000, at(0.0, 0.0));
        h.record(3_000, at(5.0, 1.0));
        let v = h.to_json("e");
        assert_eq!(v.as_array().unwrap().len(), 2, "unchanged: no point; {v}");
        assert_eq!(v[1], json!([3_000, 5.0, 1.5, 9.0, 1.0, 1.0, 0.5]));
        // Unchanged for KEEP_EVERY_MS: a point all the same.
        h.record(3_000 + KEEP_EVERY_MS, at(5.0, 1.0));
        assert_eq!(h.to_json("e").as_array().unwrap().len(), 3);
        // Never more than MAX_POINTS, nor older than the span.
        for i in 0..(2 * MAX_POINTS as u64) {
            h.record(100_000 + i, at(i as f64, 1.0));
        }
        assert_eq!(h.to_json("e").as_array().unwrap().len(), MAX_POINTS);
        h.record(100_000 + SPAN_MS * 2, at(1.0, 1.0));
        assert_eq!(h.to_json("e").as_array().unwrap().len(), 1);
        // A deleted endpoint is forgotten.
        h.record(100_001 + SPAN_MS * 2, Vec::new());
        assert_eq!(h.to_json("e"), json!([]));
    }
}
