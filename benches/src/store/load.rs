//! The closed-loop load both systems get: N clients, each with a connection
//! of its own, each sending one write and waiting for its answer before the
//! next, until the level's time is up or its count of writes is taken.
//! Sequence numbers come from one counter, so every write names a distinct
//! object.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::percentile;

/// One client's write of object number `seq`.
pub trait Writer: Send + 'static {
    fn write(&mut self, seq: u64) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// When a level ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// No write starts after this long.
    After(Duration),
    /// This many writes in all (across the clients).
    Count(u64),
}

/// What one level measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Writes answered with success.
    pub writes: u64,
    /// Writes that failed or were not answered within the call timeout.
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the first write sent to the last answer.
    pub elapsed: Duration,
    /// Latency of each successful write, in milliseconds.
    pub latencies_ms: Vec<f64>,
}

/// The figures a table shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    pub writes: u64,
    pub errors: u64,
    pub writes_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Outcome {
    /// Add another run of the same level (e.g. a later round).
    pub fn merge(&mut self, other: &Outcome) {
        self.writes += other.writes;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.elapsed += other.elapsed;
        self.latencies_ms.extend_from_slice(&other.latencies_ms);
    }

    pub fn figures(&self) -> Figures {
        let mut sorted = self.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let secs = self.elapsed.as_secs_f64();
        Figures {
            writes: self.writes,
            errors: self.errors,
            writes_per_s: if secs > 0.0 {
                self.writes as f64 / secs
            } else {
                0.0
            },
            p50_ms: percentile(&sorted, 50.0),
            p99_ms: percentile(&sorted, 99.0),
        }
    }
}

/// Run `writers` concurrently until `stop`, each call bounded by
/// `call_timeout`; the outcome, and the writers for another level.
pub async fn closed_loop<W: Writer>(
    writers: Vec<W>,
    stop: Stop,
    call_timeout: Duration,
) -> (Outcome, Vec<W>) {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|mut w| {
            let next = next.clone();
            tokio::spawn(async move {
                let mut out = Outcome::default();
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    let more = match stop {
                        Stop::After(d) => start.elapsed() < d,
                        Stop::Count(n) => seq < n,
                    };
                    if !more {
                        break;
                    }
                    let sent = Instant::now();
                    let r = match tokio::time::timeout(call_timeout, w.write(seq)).await {
                        Ok(r) => r,
                        Err(_) => Err(anyhow::anyhow!(
                            "write {seq}: no answer within {}s",
                            call_timeout.as_secs_f64()
                        )),
                    };
                    match r {
                        Ok(()) => {
                            out.writes += 1;
                            out.latencies_ms.push(sent.elapsed().as_secs_f64() * 1e3);
                        }
                        Err(e) => {
                            out.errors += 1;
                            if out.first_error.is_none() {
                                out.first_error = Some(format!("{e:#}"));
                            }
                        }
                    }
                }
                (out, w)
            })
        })
        .collect();
    let mut total = Outcome::default();
    let mut back = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok((o, w)) => {
                total.merge(&o);
                back.push(w);
            }
            Err(e) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert_with(|| format!("a client panicked: {e}"));
            }
        }
    }
    total.elapsed = start.elapsed();
    (total, back)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    /// Records every sequence number; fails those divisible by `fail_every`.
    struct Fake {
        seen: Arc<Mutex<Vec<u64>>>,
        fail_every: u64,
    }

    impl Writer for Fake {
        async fn write(&mut self, seq: u64) -> anyhow::Result<()> {
            self.seen.lock().unwrap().push(seq);
            tokio::task::yield_now().await;
            if seq.is_multiple_of(self.fail_every) {
                anyhow::bail!("refused {seq}");
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_count_is_shared_by_the_clients_and_every_seq_is_distinct() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let writers = (0..16)
            .map(|_| Fake {
                seen: seen.clone(),
                fail_every: 100,
            })
            .collect();
        let (out, back) = closed_loop(writers, Stop::Count(1000), Duration::from_secs(10)).await;
        assert_eq!(back.len(), 16);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1000);
        assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>().len(), 1000);
        assert_eq!(*seen.iter().max().unwrap(), 999);
        // 0, 100, ..., 900 fail.
        assert_eq!(out.errors, 10);
        assert_eq!(out.writes, 990);
        assert_eq!(out.latencies_ms.len(), 990);
        assert!(out.first_error.unwrap().starts_with("refused "));
    }

    /// Never answers.
    struct Silent;

    impl Writer for Silent {
        async fn write(&mut self, _seq: u64) -> anyhow::Result<()> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn an_unanswered_write_is_an_error_not_a_hang() {
        let (out, _) = closed_loop(
            vec![Silent, Silent],
            Stop::Count(4),
            Duration::from_millis(20),
        )
        .await;
        assert_eq!(out.writes, 0);
        assert_eq!(out.errors, 4);
        assert!(out.first_error.unwrap().contains("no answer within 0.02s"));
    }

    #[test]
    fn rounds_merge_into_one_rate_and_percentiles() {
        let a = Outcome {
            writes: 100,
            elapsed: Duration::from_secs(1),
            latencies_ms: (1..=100).map(f64::from).collect(),
            ..Default::default()
        };
        let b = Outcome {
            writes: 300,
            errors: 1,
            first_error: Some("x".into()),
            elapsed: Duration::from_secs(3),
            latencies_ms: vec![1000.0; 300],
        };
        let mut m = a.clone();
        m.merge(&b);
        let f = m.figures();
        assert_eq!(f.writes, 400);
        assert_eq!(f.errors, 1);
        assert_eq!(f.writes_per_s, 100.0);
        assert_eq!(f.p50_ms, 1000.0);
        assert_eq!(a.figures().p50_ms, 50.0);
        assert_eq!(a.figures().p99_ms, 99.0);
        assert_eq!(m.first_error.as_deref(), Some("x"));
    }
}
