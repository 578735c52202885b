//! Scheduling scenarios, round by round, on the real state machine and the
//! leader's round ([`plan_round`]) without Raft or processes: every task
//! "runs" for a set number of rounds. Starvation of a wide gang, gang
//! deadlock, quota borrowing and reclaim, priority preemption.

use std::collections::BTreeMap;

use gpuctl_common::api::{JobPhase, TaskPhase};
use gpuctl_scheduler::placement::{plan_round, Planner, Snapshot};
use gpuctl_scheduler::state::{Command, Envelope, NodeRegistration, State, TaskReport};

/// The state, a log index, and how many more rounds each job's tasks run.
struct Sim {
    st: State,
    index: u64,
    round: u64,
    runs_for: BTreeMap<String, u64>,
    /// job → round its current attempt's tasks started.
    started: BTreeMap<String, u64>,
    preempted: Vec<String>,
    /// A leader's kept planner: every round it must decide as `plan_round`
    /// (placements, reservations and preemptions checked on its model).
    planner: Planner,
}

impl Sim {
    fn new(nodes: u32, gpus: u32) -> Sim {
        let mut s = Sim {
            st: State::default(),
            index: 0,
            round: 0,
            runs_for: BTreeMap::new(),
            started: BTreeMap::new(),
            preempted: Vec::new(),
            planner: Planner::new(),
        };
        for n in gpuctl_testkit::cluster(nodes, gpus) {
            s.apply(Command::RegisterNode {
                reg: NodeRegistration {
                    name: n.metadata.name,
                    address: n.status.address,
                    agent_endpoint: n.status.agent_endpoint,
                    inventory: n.status.inventory,
                    cpu_milli: n.status.cpu_milli,
                    memory_bytes: n.status.memory_bytes,
                    gpus: n.status.gpus,
                    labels: n.metadata.labels,
                    cordon_after_unhealthy_gpus: 0,
                },
            });
        }
        s
    }

    fn apply(&mut self, cmd: Command) {
        self.index += 1;
        let env = Envelope::new(1_000 * self.index, cmd);
        let _ = self.st.apply(self.index, &env);
    }

    fn queue(&mut self, name: &str, quota: Option<f64>, borrow: bool) {
        self.apply(Command::PutQueue {
            queue: Box::new(
                gpuctl_testkit::queue(name)
                    .quota(quota)
                    .borrow(borrow)
                    .build(),
            ),
        });
    }

    /// Submit `replicas` tasks of `gpus` each, running `rounds` rounds.
    fn submit(
        &mut self,
        name: &str,
        queue: &str,
        priority: i32,
        replicas: u32,
        gpus: f64,
        rounds: u64,
    ) {
        let j = gpuctl_testkit::job(name)
            .replicas(replicas)
            .gpus(gpus)
            .priority(priority)
            .queue(queue)
            .build();
        self.apply(Command::SubmitJob { job: Box::new(j) });
        self.runs_for.insert(name.into(), rounds);
    }

    fn report(&mut self, job: &str, phase: TaskPhase) {
        let j = &self.st.jobs[job];
        let attempt = j.status.attempt;
        let tasks: Vec<(u32, String)> = j
            .status
            .tasks
            .iter()
            .filter(|t| t.phase.holds_resources())
            .map(|t| (t.index, t.node.clone().unwrap()))
            .collect();
        for (index, node) in tasks {
            self.apply(Command::TaskReport {
                report: TaskReport {
                    node,
                    job: job.into(),
                    index,
                    attempt,
                    phase,
                    exit_code: (phase == TaskPhase::Succeeded).then_some(0),
                    message: None,
                    pid: Some(1),
                    outputs: None,
                    port: None,
                    usage: None,
                    gpu_fault: None,
                },
            });
        }
    }

    /// One round: finish what ran long enough, then schedule.
    fn step(&mut self) {
        self.round += 1;
        let running: Vec<String> = self
            .st
            .jobs
            .values()
            .filter(|j| j.status.phase == JobPhase::Running)
            .map(|j| j.metadata.name.clone())
            .collect();
        for name in running {
            let since = self.started[&name];
            if self.round - since >= self.runs_for[&name] {
                self.report(&name, TaskPhase::Succeeded);
            }
        }
        let round = plan_round(&self.st);
        assert_eq!(
            round,
            self.planner.plan_round(&self.st),
            "the kept planner decides as the stateless round"
        );
        let bound: Vec<String> = round.bindings.iter().map(|b| b.job.clone()).collect();
        if !round.bindings.is_empty() {
            self.apply(Command::Bind {
                bindings: round.bindings,
            });
        }
        for name in bound {
            self.report(&name, TaskPhase::Running);
            self.started.insert(name, self.round);
        }
        if let Some(p) = round.preemption {
            self.preempted
                .extend(p.victims.iter().map(|(j, _)| j.clone()));
            self.apply(Command::Preempt {
                victims: p.victims,
                by: p.preemptor,
                reason: p.reason,
            });
        }
        self.check_invariants();
    }

    /// No GPU share is held twice over its capacity; gangs are whole.
    fn check_invariants(&self) {
        let mut used: BTreeMap<(String, u32), u32> = BTreeMap::new();
        for j in self.st.jobs.values() {
            let holding = j
                .status
                .tasks
                .iter()
                .filter(|t| t.phase.holds_resources())
                .count();
            assert!(
                holding == 0 || holding == j.status.tasks.len(),
                "round {}: job {} holds {holding} of {} tasks",
                self.round,
                j.metadata.name,
                j.status.tasks.len()
            );
            for t in j.status.tasks.iter().filter(|t| t.phase.holds_resources()) {
                for g in &t.gpus {
                    *used.entry((t.node.clone().unwrap(), g.index)).or_default() += g.milli;
                }
            }
        }
        for (gpu, milli) in used {
            assert!(milli <= 1000, "round {}: {gpu:?} at {milli}", self.round);
        }
    }

    fn phase(&self, job: &str) -> JobPhase {
        self.st.jobs[job].status.phase
    }
}

#[test]
fn a_64_gpu_gang_behind_a_stream_of_1_gpu_jobs_starts_within_bounded_rounds() {
    let mut sim = Sim::new(8, 8);
    let mut n = 0;
    let mut gang_started = None;
    for round in 0..40 {
        // 24 one-GPU jobs of 3 rounds each arrive every round: more than the
        // 64 GPUs can keep up with, forever.
        for _ in 0..24 {
            n += 1;
            sim.submit(&format!("s{n}"), "default", 0, 1, 1.0, 3);
        }
        if round == 5 {
            sim.submit("gang", "default", 0, 8, 8.0, 2);
        }
        sim.step();
        if round < 5 {
            continue;
        }
        if gang_started.is_none() && sim.phase("gang") == JobPhase::Running {
            gang_started = Some(round);
        }
        if round == 5 {
            assert_eq!(sim.phase("gang"), JobPhase::Pending, "the cluster is full");
        }
    }
    let started = gang_started.expect("the gang started");
    // The 1-GPU jobs running when it arrived finish within 3 rounds.
    assert!(started <= 5 + 4, "the gang waited until round {started}");
    assert_eq!(sim.phase("gang"), JobPhase::Succeeded);
}

#[test]
fn two_gangs_that_cannot_both_fit_never_each_hold_part() {
    let mut sim = Sim::new(2, 4);
    sim.submit("a", "default", 0, 3, 2.0, 2);
    sim.submit("b", "default", 0, 3, 2.0, 2);
    sim.step();
    // The invariant check in step() refuses partial gangs; one runs whole.
    let running: Vec<&str> = ["a", "b"]
        .into_iter()
        .filter(|j| sim.phase(j) == JobPhase::Running)
        .collect();
    assert_eq!(running.len(), 1, "exactly one gang runs: {running:?}");
    for _ in 0..6 {
        sim.step();
    }
    assert_eq!(sim.phase("a"), JobPhase::Succeeded);
    assert_eq!(sim.phase("b"), JobPhase::Succeeded);
}

#[test]
fn idle_quota_is_borrowed_and_reclaimed_by_preemption() {
    let mut sim = Sim::new(1, 8);
    sim.queue("team", Some(4.0), false);
    // Nobody else uses the cluster: batch jobs (no quota, so every GPU they
    // hold is borrowed) take all eight GPUs for a long time.
    for i in 0..8 {
        sim.submit(&format!("batch{i}"), "default", 0, 1, 1.0, 1_000);
    }
    sim.step();
    assert!((0..8).all(|i| sim.phase(&format!("batch{i}")) == JobPhase::Running));
    // The team wants its 4 GPUs (and a fifth job beyond its quota).
    for i in 0..5 {
        sim.submit(&format!("team{i}"), "team", 0, 1, 1.0, 1_000);
    }
    for _ in 0..10 {
        sim.step();
    }
    let team_running = (0..5)
        .filter(|i| sim.phase(&format!("team{i}")) == JobPhase::Running)
        .count();
    assert_eq!(team_running, 4, "the team got its quota back, and no more");
    assert_eq!(sim.phase("team4"), JobPhase::Pending);
    assert_eq!(sim.preempted.len(), 4, "{:?}", sim.preempted);
    let requeued = sim
        .st
        .jobs
        .values()
        .filter(|j| j.status.preemptions == 1 && j.status.phase == JobPhase::Pending)
        .count();
    assert_eq!(requeued, 4, "the preempted batch jobs wait to run again");
}

#[test]
fn priority_preemption_takes_only_lower_priority_jobs() {
    let mut sim = Sim::new(1, 4);
    sim.submit("vip", "default", 10, 1, 2.0, 1_000);
    sim.submit("low", "default", 0, 1, 2.0, 1_000);
    sim.step();
    sim.submit("mid", "default", 5, 1, 2.0, 2);
    sim.submit("mid2", "default", 5, 1, 4.0, 2);
    for _ in 0..6 {
        sim.step();
    }
    assert_eq!(sim.preempted, ["low"]);
    assert_eq!(sim.phase("vip"), JobPhase::Running);
    assert_eq!(sim.phase("mid"), JobPhase::Succeeded);
    // mid2 needs all four GPUs, which would take vip: it waits.
    assert_eq!(sim.phase("mid2"), JobPhase::Pending);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// (replicas, GPUs per task, priority, queue index, rounds it runs)
    type JobGen = (u32, u32, i32, usize, u64);

    const GPU_CHOICES: [f64; 6] = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0];
    const QUEUES: [&str; 3] = ["default", "capped", "lender"];

    fn jobs() -> impl Strategy<Value = Vec<JobGen>> {
        prop::collection::vec((1u32..4, 0u32..6, 0i32..4, 0usize..3, 1u64..5), 1..24)
    }

    fn build(nodes: u32, gpus: u32, jobs: &[JobGen], first: usize) -> Sim {
        let mut sim = Sim::new(nodes, gpus);
        sim.queue("capped", Some(3.0), false);
        sim.queue("lender", Some(2.0), true);
        for (i, &(replicas, g, priority, q, rounds)) in jobs.iter().enumerate().take(first) {
            sim.submit(
                &format!("j{i}"),
                QUEUES[q],
                priority,
                replicas,
                GPU_CHOICES[g as usize],
                rounds,
            );
        }
        sim
    }

    fn held(sim: &Sim, queue: &str) -> u64 {
        sim.st
            .jobs
            .values()
            .filter(|j| j.metadata.queue.as_deref() == Some(queue))
            .flat_map(|j| &j.status.tasks)
            .filter(|t| t.phase.holds_resources())
            .flat_map(|t| &t.gpus)
            .map(|g| u64::from(g.milli))
            .sum()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Round after round with jobs arriving: nothing over-committed and
        /// gangs whole (checked in every step), the capped queue never past
        /// its quota, a preemption never takes a higher (or equal) priority
        /// job of the same queue nor one from a queue within its quota, and
        /// a round is a function of the state (a planner kept across the
        /// rounds decides the same).
        #[test]
        fn rounds_keep_the_invariants(nodes in 1u32..4, gpus in 1u32..9, jobs in jobs()) {
            let half = jobs.len() / 2;
            let mut sim = build(nodes, gpus, &jobs, half);
            let mut planner = Planner::new();
            for round in 0..12 {
                if round == 3 {
                    for (i, &(replicas, g, priority, q, rounds)) in jobs.iter().enumerate().skip(half) {
                        sim.submit(&format!("j{i}"), QUEUES[q], priority, replicas, GPU_CHOICES[g as usize], rounds);
                    }
                }
                let plan = plan_round(&sim.st);
                prop_assert_eq!(&plan, &plan_round(&sim.st.clone()), "deterministic");
                prop_assert_eq!(&plan, &planner.plan_round(&sim.st), "a kept planner decides the same");
                if !sim.st.pending_jobs().is_empty() {
                    prop_assert_eq!(planner.snapshot(), &Snapshot::of(&sim.st), "the planner's snapshot is the state's");
                }
                for b in &plan.bindings {
                    let j = &sim.st.jobs[&b.job];
                    prop_assert_eq!(b.tasks.len() as u32, j.task_count(), "a whole gang");
                }
                if let Some(p) = &plan.preemption {
                    let head = &sim.st.jobs[&p.preemptor];
                    for (v, _) in &p.victims {
                        let v = &sim.st.jobs[v];
                        let vq = v.metadata.queue.as_deref().unwrap_or("default");
                        if vq == head.metadata.queue.as_deref().unwrap_or("default") {
                            prop_assert!(v.spec.priority < head.spec.priority,
                                "{} (priority {}) preempted for {} (priority {})",
                                v.metadata.name, v.spec.priority, head.metadata.name, head.spec.priority);
                        } else {
                            let quota = match vq { "capped" => 3000, "lender" => 2000, _ => 0 };
                            prop_assert!(held(&sim, vq) > quota, "{vq} within its quota lost {}", v.metadata.name);
                        }
                    }
                }
                sim.step();
                prop_assert!(held(&sim, "capped") <= 3000, "capped queue past its quota");
            }
        }
    }
}
