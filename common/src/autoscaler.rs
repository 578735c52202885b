//! The autoscaler's decision, in the style of Knative's KPA. Pure: no tokio, no clock;
//! samples and `now` are passed in as offsets from any fixed origin.
//!
//! The gateway reports observed concurrency (in-flight plus queued requests) for an
//! endpoint about once a second, zeros included. Each decision:
//!
//! 1. averages the samples in the **stable window** (default 60 s) and in the **panic
//!    window** (default 6 s), and turns each into replicas: `ceil(average / target)`;
//! 2. enters **panic mode** when the panic-window replicas are at least
//!    `panic_threshold` (default 2) times the current replicas (at least 1). In panic the
//!    autoscaler follows the panic window and never scales down; it leaves panic once a
//!    full stable window has passed since the last time the threshold was crossed;
//! 3. otherwise follows the stable window;
//! 4. applies rate limits. Up: at most `max(ceil(current × max_scale_up_rate),
//!    current + max_scale_up_step)` (defaults ×2 or +4, whichever is more, so a cold
//!    endpoint can go 0 → 4 at once and a large one doubles). Down: at least
//!    `floor(current / max_scale_down_rate)` (default: at most halve per decision), and
//!    never below 1 by rate alone;
//! 5. scales to zero when `min_replicas` is 0 and no sample has shown traffic for
//!    `scale_to_zero_after`, even while older traffic is still in the stable window
//!    (so an endpoint goes `scaleToZeroAfterSeconds` after its last request, as the
//!    field says); until then the last replica is kept warm;
//! 6. clamps to `[min_replicas, max_replicas]`.
//!
//! Every decision carries a [`Reason`] so that `gpuctl describe endpoint` can say why.

use std::collections::VecDeque;
use std::time::Duration;

/// An endpoint's `autoscaling` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalerConfig {
    /// Concurrent requests one replica should handle.
    pub target_concurrency: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub stable_window: Duration,
    pub panic_window: Duration,
    /// Panic when the panic window asks for this many times the current replicas.
    pub panic_threshold: f64,
    pub max_scale_up_rate: f64,
    pub max_scale_up_step: u32,
    pub max_scale_down_rate: f64,
    /// How long without traffic before the last replica goes.
    pub scale_to_zero_after: Duration,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        AutoscalerConfig {
            target_concurrency: 1.0,
            min_replicas: 0,
            max_replicas: 10,
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            max_scale_up_rate: 2.0,
            max_scale_up_step: 4,
            max_scale_down_rate: 2.0,
            scale_to_zero_after: Duration::from_secs(30),
        }
    }
}

/// Why the autoscaler chose its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The stable window asks for what is running.
    Steady,
    /// The stable window asks for more (or fewer) replicas.
    ScaleUp,
    ScaleDown,
    /// In panic mode: following the panic window, not scaling down.
    Panic,
    /// The rate limit held a scale-up or scale-down back.
    RateLimitedUp,
    RateLimitedDown,
    /// Traffic arrived at an endpoint with no replicas.
    ColdStart,
    /// No traffic, but not yet for `scale_to_zero_after`: the last replica stays.
    HoldingLastReplica,
    /// No traffic for `scale_to_zero_after`: the last replica goes.
    ScaleToZero,
    /// The bounds decided.
    AtMinReplicas,
    AtMaxReplicas,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Steady => "load matches the current replicas",
            Reason::ScaleUp => "stable-window load needs more replicas",
            Reason::ScaleDown => "stable-window load needs fewer replicas",
            Reason::Panic => "panic mode: a burst exceeded twice the current capacity",
            Reason::RateLimitedUp => "scale-up limited by the maximum scale-up rate",
            Reason::RateLimitedDown => "scale-down limited by the maximum scale-down rate",
            Reason::ColdStart => "traffic arrived with no replicas",
            Reason::HoldingLastReplica => {
                "idle, keeping the last replica until scaleToZeroAfterSeconds"
            }
            Reason::ScaleToZero => "idle for scaleToZeroAfterSeconds: scaling to zero",
            Reason::AtMinReplicas => "held at minReplicas",
            Reason::AtMaxReplicas => "held at maxReplicas",
        })
    }
}

/// One decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub desired: u32,
    pub reason: Reason,
    pub panicking: bool,
    pub stable_average: f64,
    pub panic_average: f64,
}

/// The autoscaler state for one endpoint.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    config: AutoscalerConfig,
    /// (time, observed concurrency), oldest first, pruned to the stable window.
    samples: VecDeque<(Duration, f64)>,
    /// When the panic threshold was last crossed, while in panic mode.
    panic_since: Option<Duration>,
    /// The most replicas asked for during the current panic (never scale down in panic).
    panic_peak: u32,
    /// The last time a sample showed traffic; `None` before any.
    last_traffic: Option<Duration>,
}

impl Autoscaler {
    pub fn new(config: AutoscalerConfig) -> Self {
        Autoscaler {
            config,
            samples: VecDeque::new(),
            panic_since: None,
            panic_peak: 0,
            last_traffic: None,
        }
    }

    pub fn config(&self) -> &AutoscalerConfig {
        &self.config
    }

    /// Records the concurrency observed at `at`. Samples should come in time order;
    /// an out-of-order one is dropped.
    pub fn record(&mut self, at: Duration, concurrency: f64) {
        if self.samples.back().is_some_and(|(t, _)| *t > at) {
            return;
        }
        let concurrency = concurrency.max(0.0);
        if concurrency > 0.0 {
            self.last_traffic = Some(at);
        }
        self.samples.push_back((at, concurrency));
    }

    /// Records that requests were answered in the period ending at `at`, whatever the
    /// concurrency samples saw: short requests between two samples of the in-flight
    /// count are traffic too, and keep the last replica from scaling to zero.
    pub fn record_requests(&mut self, at: Duration) {
        if self.last_traffic.is_none_or(|t| t < at) {
            self.last_traffic = Some(at);
        }
    }

    fn average(&self, now: Duration, window: Duration) -> f64 {
        let from = now.saturating_sub(window);
        let (sum, n) = self
            .samples
            .iter()
            .filter(|(t, _)| *t > from && *t <= now)
            .fold((0.0, 0usize), |(s, n), (_, c)| (s + c, n + 1));
        if n == 0 {
            0.0
        } else {
            sum / n as f64
        }
    }

    /// Decides the desired replicas at `now` given `current` ready replicas.
    pub fn decide(&mut self, now: Duration, current: u32) -> Decision {
        let cfg = &self.config;
        let from = now.saturating_sub(cfg.stable_window);
        while self.samples.front().is_some_and(|(t, _)| *t <= from) {
            self.samples.pop_front();
        }
        let target = if cfg.target_concurrency > 0.0 {
            cfg.target_concurrency
        } else {
            1.0
        };
        let stable_average = self.average(now, cfg.stable_window);
        let panic_average = self.average(now, cfg.panic_window);
        let stable_want = (stable_average / target).ceil() as u32;
        let panic_want = (panic_average / target).ceil() as u32;

        // 2. panic mode.
        let over_threshold =
            panic_average / target >= cfg.panic_threshold * f64::from(current.max(1));
        if over_threshold {
            self.panic_since = Some(now);
        } else if self
            .panic_since
            .is_some_and(|since| now.saturating_sub(since) >= cfg.stable_window)
        {
            self.panic_since = None;
            self.panic_peak = 0;
        }
        let panicking = self.panic_since.is_some();

        let (mut desired, mut reason) = if panicking {
            let want = panic_want.max(current).max(self.panic_peak);
            self.panic_peak = want;
            (want, Reason::Panic)
        } else if stable_want > current {
            (
                stable_want,
                if current == 0 {
                    Reason::ColdStart
                } else {
                    Reason::ScaleUp
                },
            )
        } else if stable_want < current {
            (stable_want, Reason::ScaleDown)
        } else {
            (stable_want, Reason::Steady)
        };

        // 4. rate limits.
        let up_limit = ((f64::from(current) * cfg.max_scale_up_rate).ceil() as u32)
            .max(current.saturating_add(cfg.max_scale_up_step));
        if desired > up_limit {
            desired = up_limit;
            if reason != Reason::Panic && reason != Reason::ColdStart {
                reason = Reason::RateLimitedUp;
            }
        }
        if desired < current {
            let rate = cfg.max_scale_down_rate.max(1.0);
            let down_limit = ((f64::from(current) / rate).floor() as u32).max(1);
            if desired < down_limit {
                desired = down_limit;
                if desired < current {
                    reason = Reason::RateLimitedDown;
                }
            }
        }

        // 5. no traffic for scale_to_zero_after: every replica goes, whatever
        // older samples still in the stable window say; until then the last
        // replica stays.
        let idle_for = match self.last_traffic {
            Some(t) => now.saturating_sub(t),
            None => now,
        };
        if current >= 1 && !panicking {
            if cfg.min_replicas == 0 && idle_for >= cfg.scale_to_zero_after {
                desired = 0;
                reason = Reason::ScaleToZero;
            } else if stable_want == 0 && desired <= 1 && current == 1 {
                desired = 1;
                reason = Reason::HoldingLastReplica;
            }
        }

        // 6. bounds.
        if desired < cfg.min_replicas {
            desired = cfg.min_replicas;
            reason = Reason::AtMinReplicas;
        }
        if desired > cfg.max_replicas {
            desired = cfg.max_replicas;
            reason = Reason::AtMaxReplicas;
        }
        Decision {
            desired,
            reason,
            panicking,
            stable_average,
            panic_average,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Drives one autoscaler over a load timeline: one sample per second from `load(t)`,
    /// a decision every `every` seconds, and the replicas follow the decision at once (a
    /// perfect scheduler). Returns (time, decision) for every decision.
    fn simulate(
        cfg: AutoscalerConfig,
        start_replicas: u32,
        seconds: u64,
        every: u64,
        load: impl Fn(u64) -> f64,
    ) -> Vec<(u64, Decision)> {
        let mut a = Autoscaler::new(cfg);
        let mut replicas = start_replicas;
        let mut out = Vec::new();
        for t in 1..=seconds {
            a.record(secs(t), load(t));
            if t % every == 0 {
                let d = a.decide(secs(t), replicas);
                replicas = d.desired;
                out.push((t, d));
            }
        }
        out
    }

    fn at(trace: &[(u64, Decision)], t: u64) -> &Decision {
        &trace
            .iter()
            .find(|(s, _)| *s == t)
            .expect("decision at t")
            .1
    }

    fn cfg(target: f64, min: u32, max: u32) -> AutoscalerConfig {
        AutoscalerConfig {
            target_concurrency: target,
            min_replicas: min,
            max_replicas: max,
            ..AutoscalerConfig::default()
        }
    }

    #[test]
    fn table_of_timelines() {
        struct Case {
            name: &'static str,
            cfg: AutoscalerConfig,
            start: u32,
            seconds: u64,
            load: fn(u64) -> f64,
            /// (time, desired, reason) checkpoints.
            expect: &'static [(u64, u32, Reason)],
        }
        let cases = [
            Case {
                name: "steady load holds",
                cfg: cfg(10.0, 0, 10),
                start: 3,
                seconds: 120,
                load: |_| 25.0,
                expect: &[
                    (1, 3, Reason::Steady),
                    (60, 3, Reason::Steady),
                    (120, 3, Reason::Steady),
                ],
            },
            Case {
                name: "cold start from zero",
                cfg: cfg(1.0, 0, 10),
                start: 0,
                seconds: 2,
                load: |_| 1.0,
                expect: &[(1, 1, Reason::ColdStart), (2, 1, Reason::Steady)],
            },
            Case {
                name: "burst panics, doubles per step, then holds through the stable window",
                cfg: cfg(1.0, 1, 100),
                start: 1,
                seconds: 200,
                load: |t| if (10..40).contains(&t) { 40.0 } else { 1.0 },
                expect: &[
                    (9, 1, Reason::Steady),
                    // 1 sample of 40 in the 6 s window: avg (5×1+40)/6 = 7.5 ≥ 2×1: panic.
                    (10, 5, Reason::Panic),
                    (11, 10, Reason::Panic),
                    (12, 20, Reason::Panic),
                    (13, 27, Reason::Panic),
                    (15, 40, Reason::Panic),
                    // The burst ends at 40 s; panic (last crossed at 12 s) holds the peak
                    // for a stable window...
                    (60, 40, Reason::Panic),
                    (71, 40, Reason::Panic),
                    // ...then the stable window decides, halving at most per step.
                    (72, 20, Reason::RateLimitedDown),
                    (73, 18, Reason::ScaleDown),
                    (100, 1, Reason::Steady),
                    (200, 1, Reason::Steady),
                ],
            },
            Case {
                name: "decay to zero: the stable window drains, then the last replica goes",
                cfg: cfg(1.0, 0, 10),
                start: 4,
                seconds: 200,
                load: |t| if t <= 30 { 4.0 } else { 0.0 },
                expect: &[
                    (30, 4, Reason::Steady),
                    (40, 3, Reason::ScaleDown),
                    (59, 3, Reason::Steady),
                    // The last traffic was at 30 s: 30 s later the endpoint goes to
                    // zero, though that traffic is still in the 60 s stable window.
                    (60, 0, Reason::ScaleToZero),
                    (200, 0, Reason::Steady),
                ],
            },
            Case {
                name: "scale_to_zero_after longer than the window keeps the last replica",
                cfg: AutoscalerConfig {
                    scale_to_zero_after: secs(120),
                    ..cfg(1.0, 0, 10)
                },
                start: 4,
                seconds: 200,
                load: |t| if t <= 30 { 4.0 } else { 0.0 },
                expect: &[
                    (90, 1, Reason::HoldingLastReplica),
                    (149, 1, Reason::HoldingLastReplica),
                    (150, 0, Reason::ScaleToZero),
                    (200, 0, Reason::Steady),
                ],
            },
            Case {
                name: "minReplicas keeps a floor",
                cfg: cfg(1.0, 2, 10),
                start: 2,
                seconds: 200,
                load: |_| 0.0,
                expect: &[(200, 2, Reason::AtMinReplicas)],
            },
            Case {
                name: "maxReplicas caps",
                cfg: cfg(1.0, 0, 3),
                start: 3,
                seconds: 60,
                load: |_| 50.0,
                expect: &[(60, 3, Reason::AtMaxReplicas)],
            },
        ];
        for c in cases {
            let trace = simulate(c.cfg.clone(), c.start, c.seconds, 1, c.load);
            for &(t, desired, reason) in c.expect {
                let d = at(&trace, t);
                assert_eq!(
                    (d.desired, d.reason),
                    (desired, reason),
                    "{}: at {t}s got {d:?}",
                    c.name
                );
            }
        }
    }

    #[test]
    fn flapping_load_does_not_flap_replicas() {
        // Load alternates 10 s at 8 and 10 s at 2 (mean 5, below the panic threshold for
        // 5 replicas). The 60 s window smooths it.
        let trace = simulate(cfg(1.0, 0, 20), 5, 600, 2, |t| {
            if (t / 10) % 2 == 0 {
                8.0
            } else {
                2.0
            }
        });
        let changes = trace
            .windows(2)
            .filter(|w| w[0].1.desired != w[1].1.desired)
            .count();
        let after_warmup: Vec<u32> = trace
            .iter()
            .filter(|(t, _)| *t > 120)
            .map(|(_, d)| d.desired)
            .collect();
        assert!(
            after_warmup.iter().all(|r| (5..=6).contains(r)),
            "{after_warmup:?}"
        );
        assert!(changes <= 30, "{changes} changes in 300 decisions");
    }

    #[test]
    fn scale_up_is_rate_limited_without_panic() {
        // A huge panic threshold disables panic; stable window asks 100 at once.
        let mut c = cfg(1.0, 0, 1000);
        c.panic_threshold = f64::INFINITY;
        let mut a = Autoscaler::new(c);
        a.record(secs(1), 100.0);
        let d = a.decide(secs(1), 10);
        assert_eq!((d.desired, d.reason), (20, Reason::RateLimitedUp));
        let d = a.decide(secs(1), 1);
        assert_eq!((d.desired, d.reason), (5, Reason::RateLimitedUp));
    }

    #[test]
    fn out_of_order_samples_are_dropped_and_no_samples_mean_idle() {
        let mut a = Autoscaler::new(cfg(1.0, 0, 10));
        a.record(secs(10), 3.0);
        a.record(secs(5), 100.0);
        let d = a.decide(secs(10), 3);
        assert_eq!(d.desired, 3);
        // Nothing recorded for longer than the stable window and the grace: zero.
        let d = a.decide(secs(100), 1);
        assert_eq!((d.desired, d.reason), (0, Reason::ScaleToZero));
    }

    #[test]
    fn requests_between_samples_keep_the_last_replica() {
        let mut a = Autoscaler::new(cfg(1.0, 0, 10));
        // Every sample of the in-flight count saw 0, but requests were answered.
        for t in 1..=100 {
            a.record(secs(t), 0.0);
            a.record_requests(secs(t));
        }
        let d = a.decide(secs(100), 1);
        assert_eq!((d.desired, d.reason), (1, Reason::HoldingLastReplica));
        // When the requests stop, the grace runs from the last one.
        for t in 101..=200 {
            a.record(secs(t), 0.0);
        }
        let d = a.decide(secs(200), 1);
        assert_eq!((d.desired, d.reason), (0, Reason::ScaleToZero));
    }
}
