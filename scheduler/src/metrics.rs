//! The scheduler's Prometheus metrics (`gpuctl_scheduler_` prefix, base units).

use std::time::Duration;

use gpuctl_common::api::NodePhase;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::raft::status::RaftStatus;
use crate::state::{State, JOB_PHASES};

/// Every metric the scheduler exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    commands: IntCounterVec,
    command_seconds: HistogramVec,
    pub placement_seconds: Histogram,
    pub bindings: IntCounterVec,
    raft_term: IntGauge,
    raft_commit: IntGauge,
    raft_applied: IntGauge,
    raft_leader: IntGauge,
    jobs: IntGaugeVec,
    nodes: IntGaugeVec,
    gpus: IntGauge,
    gpus_allocated_milli: IntGauge,
    /// Node assignment sets built for `WatchAssignments` streams: with
    /// per-node wakeups, it follows the nodes whose tasks changed.
    pub assignment_builds: IntCounter,
    read_barrier_seconds: HistogramVec,
    /// Time to persist one Ready's new entries and hard state (synced).
    pub raft_append_seconds: Histogram,
    /// Proposals handed to Raft together, in one `MsgPropose`.
    pub raft_proposals_per_batch: Histogram,
    /// ReadIndex requests (this replica's and followers') answered on the
    /// leader's lease, without a heartbeat round.
    pub raft_lease_reads: IntCounter,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let _ = gpuctl_telemetry::register_build_info(&r, "scheduler");
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
        ];
        Metrics {
            commands: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "gpuctl_scheduler_commands_total",
                        "Commands proposed through Raft, by command and result.",
                    ),
                    &["command", "result"],
                )
                .expect("valid"),
            ),
            command_seconds: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "gpuctl_scheduler_command_duration_seconds",
                        "Time from proposing a command to it being committed and applied.",
                    )
                    .buckets(buckets.clone()),
                    &["command"],
                )
                .expect("valid"),
            ),
            placement_seconds: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "gpuctl_scheduler_placement_duration_seconds",
                        "Time the placement core takes for one batch of pending jobs.",
                    )
                    .buckets(vec![1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0]),
                )
                .expect("valid"),
            ),
            bindings: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "gpuctl_scheduler_bindings_total",
                        "Gang bindings proposed, by result.",
                    ),
                    &["result"],
                )
                .expect("valid"),
            ),
            raft_term: reg(
                &r,
                IntGauge::new("gpuctl_scheduler_raft_term", "Current Raft term.").expect("valid"),
            ),
            raft_commit: reg(
                &r,
                IntGauge::new(
                    "gpuctl_scheduler_raft_commit_index",
                    "Highest committed Raft log index.",
                )
                .expect("valid"),
            ),
            raft_applied: reg(
                &r,
                IntGauge::new(
                    "gpuctl_scheduler_raft_applied_index",
                    "Highest applied Raft log index.",
                )
                .expect("valid"),
            ),
            raft_leader: reg(
                &r,
                IntGauge::new(
                    "gpuctl_scheduler_raft_is_leader",
                    "1 when this replica is the Raft leader.",
                )
                .expect("valid"),
            ),
            jobs: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("gpuctl_scheduler_jobs", "Jobs by phase."),
                    &["phase"],
                )
                .expect("valid"),
            ),
            nodes: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("gpuctl_scheduler_nodes", "Nodes by phase."),
                    &["phase"],
                )
                .expect("valid"),
            ),
            gpus: reg(
                &r,
                IntGauge::new("gpuctl_scheduler_gpus", "GPUs on Ready nodes.").expect("valid"),
            ),
            gpus_allocated_milli: reg(
                &r,
                IntGauge::new(
                    "gpuctl_scheduler_gpu_allocated_milli",
                    "Thousandths of GPUs held by bound or running tasks.",
                )
                .expect("valid"),
            ),
            assignment_builds: reg(
                &r,
                IntCounter::new(
                    "gpuctl_scheduler_assignment_builds_total",
                    "Assignment sets built for node WatchAssignments streams.",
                )
                .expect("valid"),
            ),
            read_barrier_seconds: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "gpuctl_scheduler_read_barrier_duration_seconds",
                        "Time a read barrier (Raft ReadIndex) takes, by result.",
                    )
                    .buckets(buckets.clone()),
                    &["result"],
                )
                .expect("valid"),
            ),
            raft_append_seconds: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "gpuctl_scheduler_raft_append_duration_seconds",
                        "Time to persist one Raft Ready's entries and hard state (a synced write).",
                    )
                    .buckets(buckets.clone()),
                )
                .expect("valid"),
            ),
            raft_proposals_per_batch: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "gpuctl_scheduler_raft_proposals_per_batch",
                        "Proposals handed to Raft together, as one append.",
                    )
                    .buckets(vec![
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0,
                    ]),
                )
                .expect("valid"),
            ),
            raft_lease_reads: reg(
                &r,
                IntCounter::new(
                    "gpuctl_scheduler_raft_lease_reads_total",
                    "ReadIndex requests answered on the leader's lease, without a heartbeat round.",
                )
                .expect("metric"),
            ),
            registry: r,
        }
    }

    pub fn observe_read_barrier(&self, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.read_barrier_seconds
            .with_label_values(&[result])
            .observe(took.as_secs_f64());
    }

    pub fn observe_command(&self, command: &str, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.commands.with_label_values(&[command, result]).inc();
        self.command_seconds
            .with_label_values(&[command])
            .observe(took.as_secs_f64());
    }

    pub fn observe_raft(&self, st: &RaftStatus) {
        self.raft_term.set(st.term as i64);
        self.raft_commit.set(st.commit as i64);
        self.raft_applied.set(st.applied as i64);
        self.raft_leader.set(i64::from(st.is_leader()));
    }

    /// Refresh the object gauges from the counts the state keeps as
    /// objects change (no walk over jobs or nodes).
    pub fn observe_state(&self, s: &State) {
        let c = s.counts();
        for (p, n) in JOB_PHASES.iter().zip(c.jobs) {
            self.jobs.with_label_values(&[&p.to_string()]).set(n as i64);
        }
        for (p, n) in [
            (NodePhase::Ready, c.nodes_ready),
            (NodePhase::Lost, c.nodes_lost),
        ] {
            self.nodes
                .with_label_values(&[&p.to_string()])
                .set(n as i64);
        }
        self.gpus.set(c.gpus_ready as i64);
        self.gpus_allocated_milli
            .set(s.gpu_milli_allocated() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testutil::register;
    use crate::state::{Command, Envelope};

    /// The gauges read the state's counts: the same figures as a walk
    /// over every job and node.
    #[test]
    fn gauges_match_a_scan_of_the_state() {
        let mut s = State::default();
        let mut index = 0;
        let mut apply = |s: &mut State, cmd: Command| {
            index += 1;
            s.apply(index, &Envelope::new(1000 * index, cmd))
        };
        for n in ["a", "b"] {
            let node = gpuctl_testkit::node(n).gpus(2, gpuctl_testkit::A100);
            apply(&mut s, register(&node.build())).unwrap();
        }
        for j in ["x", "y", "z"] {
            let job = Box::new(gpuctl_testkit::job(j).gpus(1.0).build());
            apply(&mut s, Command::SubmitJob { job }).unwrap();
        }
        let round = crate::placement::plan_round(&s);
        let bindings = round.bindings;
        apply(&mut s, Command::Bind { bindings }).unwrap();
        apply(&mut s, Command::CancelJob { name: "z".into() }).ok();
        apply(&mut s, Command::NodeLost { node: "b".into() }).unwrap();
        let m = Metrics::new();
        m.observe_state(&s);
        for p in JOB_PHASES {
            let want = s.jobs.values().filter(|j| j.status.phase == p).count();
            let got = m.jobs.with_label_values(&[&p.to_string()]).get();
            assert_eq!(got, want as i64, "{p} jobs");
        }
        let lost = s
            .nodes
            .values()
            .filter(|n| n.status.phase == NodePhase::Lost)
            .count();
        assert_eq!(m.nodes.with_label_values(&["Lost"]).get(), lost as i64);
        assert_eq!(lost, 1);
        assert_eq!(m.gpus.get(), 2, "GPUs on Ready nodes");
        let held: u64 = s.jobs.values().map(|j| j.gpu_milli_held()).sum();
        assert_eq!(m.gpus_allocated_milli.get(), held as i64);
        assert!(held > 0, "something runs on node a");
    }
}
