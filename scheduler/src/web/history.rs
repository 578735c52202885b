//! GPUs allocated over the last hour, for the Cluster page's chart: a
//! sample every [`EVERY`] of this replica's applied state, kept in memory
//! (a replica that just started shows only what it saw since).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

/// How often a sample is taken.
pub const EVERY: Duration = Duration::from_secs(30);
/// How far back the chart goes.
pub const SPAN_MS: u64 = 3_600_000;

/// Samples `(time ms, GPUs allocated, GPUs on Ready nodes)`, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<(u64, f64, u64)>>,
}

impl History {
    /// Record a sample at `now_ms`, forgetting those older than the span.
    pub fn record(&self, now_ms: u64, allocated: f64, total: u64) {
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        s.push_back((now_ms, allocated, total));
        while s.front().is_some_and(|(t, _, _)| t + SPAN_MS < now_ms) {
            s.pop_front();
        }
    }

    /// The samples as `[[ms, allocated, total], ...]`.
    pub fn to_json(&self) -> Value {
        let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        Value::Array(s.iter().map(|(t, a, n)| json!([t, a, n])).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_older_than_an_hour_are_forgotten() {
        let h = History::default();
        h.record(1_000, 1.0, 8);
        h.record(1_000 + SPAN_MS / 2, 2.5, 8);
        h.record(2_000 + SPAN_MS, 3.0, 16);
        assert_eq!(
            h.to_json(),
            json!([[1_000 + SPAN_MS / 2, 2.5, 8], [2_000 + SPAN_MS, 3.0, 16]])
        );
    }
}
