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
}
