//! Scheduling (leader only): order the pending jobs by queue fair share,
//! hold back what a queue's quota does not allow, place what fits (the
//! first gang that does not fit reserves nodes), and return the placements
//! as one `Bind` batch; then, if that first gang may preempt running jobs
//! to fit, a `Preempt`. The placement core decides; this only turns its
//! round into commands.

use gpuctl_common::api::JobPhase;

use crate::placement;
use crate::state::{Command, State};

/// Whether any job waits for placement (no round is planned otherwise).
pub fn has_pending(st: &State) -> bool {
    st.counts().jobs_in(JobPhase::Pending) > 0
}

/// The commands of one scheduling round: a `Bind` with every gang placed
/// (none when nothing fits), then a `Preempt` when the first gang that did
/// not fit may preempt. `planner` keeps the cluster model between rounds.
pub fn decide(st: &State, planner: &mut placement::Planner) -> Vec<Command> {
    let round = planner.plan_round(st);
    let mut cmds = Vec::new();
    if !round.bindings.is_empty() {
        cmds.push(Command::Bind {
            bindings: round.bindings,
        });
    }
    if let Some(p) = round.preemption {
        cmds.push(Command::Preempt {
            victims: p.victims,
            by: p.preemptor,
            reason: p.reason,
        });
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testutil::register;
    use crate::state::{Applied, Envelope};
    use gpuctl_common::api::Job;

    fn apply(st: &mut State, index: u64, cmd: Command) -> Applied {
        st.apply(index, &Envelope::new(1_000 * index, cmd)).unwrap()
    }

    fn one_gpu_job(name: &str) -> Job {
        gpuctl_testkit::job(name).gpus(1.0).build()
    }

    #[test]
    fn a_round_binds_what_fits_in_one_batch() {
        let mut st = State::default();
        let mut planner = placement::Planner::new();
        assert!(!has_pending(&st));
        let n1 = gpuctl_testkit::node("n1")
            .gpus(1, gpuctl_testkit::A100)
            .cpu_milli(8_000)
            .memory_bytes(64 << 30);
        apply(&mut st, 1, register(&n1.build()));
        for (i, name) in ["a", "b"].into_iter().enumerate() {
            let job = Box::new(one_gpu_job(name));
            apply(&mut st, 2 + i as u64, Command::SubmitJob { job });
        }
        assert!(has_pending(&st));
        let cmds = decide(&st, &mut planner);
        let [Command::Bind { bindings }] = cmds.as_slice() else {
            panic!("one Bind batch, got {cmds:?}");
        };
        let jobs: Vec<&str> = bindings.iter().map(|b| b.job.as_str()).collect();
        assert_eq!(jobs, ["a"], "one GPU: the first job fits, the second waits");
        let Applied::Bound { applied, refused } = apply(&mut st, 4, cmds[0].clone()) else {
            panic!("a Bind answers Bound");
        };
        assert_eq!((applied.len(), refused.len()), (1, 0));
        assert!(decide(&st, &mut planner).is_empty(), "nothing else fits");
    }

    #[test]
    fn a_job_requeued_by_an_xid_never_goes_back_to_that_gpu() {
        use crate::state::{GpuFault, TaskReport};
        use gpuctl_common::api::TaskPhase;
        let mut st = State::default();
        let mut planner = placement::Planner::new();
        let n1 = gpuctl_testkit::node("n1")
            .gpus(2, gpuctl_testkit::A100)
            .cpu_milli(8_000)
            .memory_bytes(64 << 30);
        apply(&mut st, 1, register(&n1.build()));
        let job = Box::new(one_gpu_job("a"));
        apply(&mut st, 2, Command::SubmitJob { job });
        let cmds = decide(&st, &mut planner);
        apply(&mut st, 3, cmds[0].clone());
        let gpu = st.jobs["a"].status.tasks[0].gpus[0].clone();
        let report = TaskReport {
            node: "n1".into(),
            job: "a".into(),
            index: 0,
            attempt: 1,
            phase: TaskPhase::Failed,
            exit_code: Some(-1),
            message: None,
            pid: None,
            outputs: None,
            port: None,
            usage: None,
            gpu_fault: Some(GpuFault {
                index: gpu.index,
                uuid: gpu.uuid.clone(),
                xid: 48,
            }),
        };
        apply(&mut st, 4, Command::TaskReport { report });
        assert_eq!(st.jobs["a"].status.phase, JobPhase::Pending);
        // The planner kept its model of n1 since the first round.
        let cmds = decide(&st, &mut planner);
        let [Command::Bind { bindings }] = cmds.as_slice() else {
            panic!("the requeued job is placed again, got {cmds:?}");
        };
        let again = &bindings[0].tasks[0];
        assert_eq!(again.node, "n1", "XID 48 does not cordon the node");
        assert_ne!(again.gpus[0].index, gpu.index, "not on the sick GPU");
        apply(&mut st, 5, cmds[0].clone());
        // With the healthy GPU taken, nothing is placed on the sick one.
        let job = Box::new(one_gpu_job("b"));
        apply(&mut st, 6, Command::SubmitJob { job });
        assert!(decide(&st, &mut planner).is_empty());
    }
}
