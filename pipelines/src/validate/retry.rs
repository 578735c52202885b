//! Retries and timeouts: `retryStrategy` (a sane limit, backoff durations
//! that parse) and `activeDeadlineSeconds`.

use super::checker::{unsupported, Validator};
use super::limits::{MAX_DEADLINE_SECONDS, MAX_RETRY_LIMIT};
use crate::spec::{parse_duration_ms, IntOrString, RetryStrategy};

/// An `activeDeadlineSeconds`: a whole number from 1 second to 30 days.
pub(super) fn positive_seconds(v: &IntOrString) -> Result<i64, String> {
    match v.as_int() {
        Some(s) if s <= 0 => Err(format!("must be at least 1 second, got {s}")),
        Some(s) if s > MAX_DEADLINE_SECONDS => Err(format!(
            "{s} seconds is more than 30 days; is the unit right?"
        )),
        Some(s) => Ok(s),
        None => Err(format!("expected a whole number of seconds, got {v}")),
    }
}

impl Validator<'_> {
    /// `retryStrategy`: a bounded limit and a backoff that parses.
    pub(super) fn retry_strategy(&mut self, p: &str, r: &RetryStrategy) {
        let rp = format!("{p}.retryStrategy");
        unsupported(
            &mut self.errors,
            &rp,
            &[("affinity", &r.affinity), ("expression", &r.expression)],
            "",
        );
        match r.limit.as_ref().map(|l| (l, l.as_int())) {
            // No limit: Argo retries until the step succeeds.
            None => {}
            Some((l, None)) => self.err(
                format!("{rp}.limit"),
                format!("expected a whole number, got {l}"),
            ),
            Some((_, Some(n))) if n < 0 => self.err(
                format!("{rp}.limit"),
                format!("must be zero or more, got {n}"),
            ),
            Some((_, Some(n))) if n > MAX_RETRY_LIMIT => self.err(
                format!("{rp}.limit"),
                format!("{n} retries is absurd (limit {MAX_RETRY_LIMIT})"),
            ),
            Some(_) => {}
        }
        if let Some(b) = &r.backoff {
            let bp = format!("{rp}.backoff");
            for (name, val) in [
                ("duration", &b.duration),
                ("maxDuration", &b.max_duration),
                ("cap", &b.cap),
            ] {
                if let Some(d) = val {
                    if let Err(e) = parse_duration_ms(&d.0) {
                        self.err(format!("{bp}.{name}"), e);
                    }
                }
            }
            if let Some(f) = &b.factor {
                match f.as_int() {
                    Some(n) if (1..=100).contains(&n) => {}
                    _ => self.err(
                        format!("{bp}.factor"),
                        format!("expected a whole number from 1 to 100, got {f}"),
                    ),
                }
            }
        }
    }
}

impl Validator<'_> {
    /// `parallelism`: a whole number of steps, at least 1.
    pub(super) fn parallelism(&mut self, path: &str, v: &IntOrString) {
        match v.as_int() {
            Some(n) if n >= 1 => {}
            _ => self.err(
                path,
                format!("expected a whole number of steps, at least 1, got {v}"),
            ),
        }
    }
}
