//! How the loops that talk to the scheduler wait between tries and log their
//! failures: a capped doubling delay, one log line per distinct error, and
//! statuses shortened to one line.

use std::time::Duration;

use tonic::Status;

/// First retry delay of every loop that talks to the scheduler.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Doubling retry delay, capped.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The delay to wait now; the next one is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d
    }
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Logs a failing loop once per distinct error, and once when it recovers.
#[derive(Debug, Default)]
pub(super) struct Quiet {
    last: Option<String>,
}

impl Quiet {
    pub fn failed(&mut self, what: &str, err: impl std::fmt::Display) {
        let msg = err.to_string();
        if self.last.as_deref() != Some(msg.as_str()) {
            tracing::warn!("{what} failed: {msg} (retrying)");
            self.last = Some(msg);
        }
    }
    pub fn ok(&mut self, what: &str) {
        if self.last.take().is_some() {
            tracing::info!("{what} works again");
        }
    }
}

/// A status in one line: code, message and the root cause of a transport
/// error ("unavailable: tcp connect error (Connection refused ...)").
pub fn brief(s: &Status) -> String {
    let mut root: Option<&dyn std::error::Error> = std::error::Error::source(s);
    while let Some(next) = root.and_then(|e| e.source()) {
        root = Some(next);
    }
    let code = format!("{:?}", s.code()).to_lowercase();
    match root {
        Some(r) if !s.message().contains(&r.to_string()) => {
            format!("{code}: {} ({r})", s.message())
        }
        _ => format!("{code}: {}", s.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let mut b = Backoff::default();
        let got: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_MIN);
    }
}
