//! Why a pending job is not running, for `describe job`'s `Waiting:` line:
//! what held it back in the round (its queue's quota, a preemption under
//! way, a reservation) and, when no node has room, what the node filters
//! answer for each of its task groups.
//!
//! [`Explainer`] answers it cheaply enough for every `describe`: it keeps a
//! planner of its own (synced from the state's per-node change log, not
//! rebuilt from every node), and the round it planned for the state's
//! current [`generation`](crate::state::State::generation), which every
//! `describe` until the next apply shares.

use std::fmt;

use gpuctl_common::api::{Job, JobPhase};

use super::filter::Fit;
use super::fit::fit;
use super::model::ClusterModel;
use super::planner::Planner;
use super::request::PodRequest;
use super::round::Round;
use super::snapshot::Snapshot;
use crate::state::State;

/// Why a pending job waits; its `Display` is the `Waiting:` text.
#[derive(Debug, Clone, PartialEq)]
pub enum Waiting {
    /// Its queue's quota holds it back (the queue filter's reason).
    Quota(String),
    /// These running jobs are being stopped to make room for it.
    Preempting(Vec<String>),
    /// It is first in line, and these nodes are held for it.
    Reserved(Vec<String>),
    /// Another job is first in line and holds these nodes.
    Behind { job: String, nodes: Vec<String> },
    /// No node has room for it now.
    NoRoom {
        /// GPU thousandths the job asks for in all.
        gpu_milli: u64,
        /// What the node filters answer for each task group.
        groups: Vec<GroupFit>,
    },
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Waiting::Quota(why) => f.write_str(why),
            Waiting::Preempting(victims) => {
                write!(f, "preempting {} to make room", victims.join(", "))
            }
            Waiting::Reserved(nodes) => write!(
                f,
                "not enough free GPUs yet; node(s) {} are held for this job until the jobs running there finish",
                nodes.join(", ")
            ),
            Waiting::Behind { job, nodes } => write!(
                f,
                "behind job {job:?}, which is first in line and holds node(s) {}",
                nodes.join(", ")
            ),
            Waiting::NoRoom { gpu_milli, .. } => write!(
                f,
                "no node has room for it now ({} GPU(s) in all); it runs when running jobs finish",
                *gpu_milli as f64 / 1000.0
            ),
        }
    }
}

/// What the node filters answer for a task of one group: how many nodes
/// could take it now, and why the others cannot, by reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFit {
    pub group: String,
    /// Nodes asked.
    pub nodes: usize,
    /// Nodes that could take a task of the group now.
    pub fit: usize,
    /// Nodes that cannot now but could later, by reason ([`Fit::NotNow`]),
    /// in the order the reasons were first met.
    pub not_now: Vec<(&'static str, usize)>,
    /// Nodes that never could, by reason ([`Fit::Never`]).
    pub never: Vec<(&'static str, usize)>,
}

impl fmt::Display for GroupFit {
    /// In the Kubernetes scheduler's words: `0/3 nodes are available: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}/{} nodes are available",
            self.group, self.fit, self.nodes
        )?;
        let mut sep = ": ";
        for (why, count) in &self.not_now {
            write!(f, "{sep}{count} {why}")?;
            sep = ", ";
        }
        for (why, count) in &self.never {
            write!(f, "{sep}{count} {why} (never)")?;
            sep = ", ";
        }
        Ok(())
    }
}

/// Why the pending job `name` is not running, from a round's decisions
/// (`None` when the round binds it, or it is not pending).
pub fn waiting(st: &State, round: &Round, name: &str) -> Option<Waiting> {
    waiting_with(st, round, name, |job| group_fits(&Snapshot::of(st), job))
}

/// [`waiting`], with `fits` answering what the node filters say of each
/// of a job's groups.
fn waiting_with(
    st: &State,
    round: &Round,
    name: &str,
    fits: impl FnOnce(&Job) -> Vec<GroupFit>,
) -> Option<Waiting> {
    let job = st.jobs.get(name)?;
    if job.status.phase != JobPhase::Pending || round.bindings.iter().any(|b| b.job == name) {
        return None;
    }
    if let Some((_, why)) = round.held_back.iter().find(|(j, _)| j == name) {
        return Some(Waiting::Quota(why.clone()));
    }
    if let Some(p) = round.preemption.as_ref().filter(|p| p.preemptor == name) {
        return Some(Waiting::Preempting(
            p.victims.iter().map(|(j, _)| j.clone()).collect(),
        ));
    }
    if let Some(r) = &round.reservation {
        if r.job == name {
            return Some(Waiting::Reserved(r.nodes.clone()));
        }
        return Some(Waiting::Behind {
            job: r.job.clone(),
            nodes: r.nodes.clone(),
        });
    }
    Some(Waiting::NoRoom {
        gpu_milli: job.gpu_milli_requested(),
        groups: fits(job),
    })
}

/// [`waiting`] as the `Waiting:` text.
pub fn waiting_reason(st: &State, round: &Round, name: &str) -> Option<String> {
    waiting(st, round, name).map(|w| w.to_string())
}

/// What the node filters of `snapshot` answer for a task of each of
/// `job`'s groups.
pub fn group_fits(snapshot: &Snapshot, job: &Job) -> Vec<GroupFit> {
    group_fits_on(&ClusterModel::from_views(&snapshot.nodes), job)
}

/// [`group_fits`] on a cluster model.
fn group_fits_on(model: &ClusterModel, job: &Job) -> Vec<GroupFit> {
    job.spec
        .tasks
        .iter()
        .map(|t| {
            let req = PodRequest::from_resources(&t.resources);
            let accept = req.accept_table(&model.kinds);
            let mut g = GroupFit {
                group: t.name.clone(),
                nodes: model.nodes().len(),
                fit: 0,
                not_now: Vec::new(),
                never: Vec::new(),
            };
            for n in model.nodes() {
                let (list, why) = match fit(n, &req, &accept) {
                    Fit::Fits => {
                        g.fit += 1;
                        continue;
                    }
                    Fit::NotNow(why) => (&mut g.not_now, why),
                    Fit::Never(why) => (&mut g.never, why),
                };
                match list.iter_mut().find(|(w, _)| *w == why.summary()) {
                    Some((_, count)) => *count += 1,
                    None => list.push((why.summary(), 1)),
                }
            }
            g
        })
        .collect()
}

/// Answers [`waiting`] for `describe`: the same answer, from a planner
/// kept between calls and the round it planned for the state's current
/// generation (see the module doc).
#[derive(Debug, Default)]
pub struct Explainer {
    planner: Planner,
    /// The last round planned, and the state generation it was planned for.
    round: Option<(u64, Round)>,
    /// Rounds planned (tests and metrics).
    rounds: u64,
}

impl Explainer {
    pub fn new() -> Explainer {
        Explainer::default()
    }

    /// Why the pending job `name` waits in `st`; `None` when it is not
    /// pending (or not known), or when the next round binds it.
    pub fn waiting(&mut self, st: &State, name: &str) -> Option<Waiting> {
        let job = st.jobs.get(name)?;
        if job.status.phase != JobPhase::Pending {
            return None;
        }
        let generation = st.generation();
        if self.round.as_ref().map(|(g, _)| *g) != Some(generation) {
            let round = self.planner.plan_round(st);
            self.round = Some((generation, round));
            self.rounds += 1;
        }
        let Explainer { planner, round, .. } = self;
        let (_, round) = round.as_ref()?;
        waiting_with(st, round, name, |job| {
            // The round synced the planner unless nothing was pending.
            planner.sync_state(st);
            group_fits_on(planner.model(), job)
        })
    }

    /// [`Explainer::waiting`] as the `Waiting:` text.
    pub fn waiting_reason(&mut self, st: &State, name: &str) -> Option<String> {
        self.waiting(st, name).map(|w| w.to_string())
    }

    /// How many rounds it has planned.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::testutil::{self, node};

    #[test]
    fn group_fits_count_nodes_by_answer() {
        let mut busy = node("busy", 4);
        for g in &mut busy.gpus {
            g.used_milli = 1000;
        }
        let mut cordoned = node("cordoned", 8);
        cordoned.schedulable = false;
        let snap = Snapshot {
            nodes: vec![node("free", 4), busy, cordoned, node("small", 2)],
        };
        let job = testutil::job("j", None, 0, 1, 4.0);
        let got = group_fits(&snap, &job);
        assert_eq!(
            got,
            vec![GroupFit {
                group: "main".into(),
                nodes: 4,
                fit: 1,
                not_now: vec![("not enough GPUs", 1), ("not Ready or cordoned", 1)],
                never: vec![("not enough GPUs", 1)],
            }]
        );
        assert_eq!(
            got[0].to_string(),
            "main: 1/4 nodes are available: 1 not enough GPUs, 1 not Ready or cordoned, 1 not enough GPUs (never)"
        );
    }

    #[test]
    fn texts() {
        let nodes = vec!["a".to_string(), "b".to_string()];
        let cases = [
            (
                Waiting::Preempting(vec!["x".into(), "y".into()]),
                "preempting x, y to make room",
            ),
            (
                Waiting::Reserved(nodes.clone()),
                "not enough free GPUs yet; node(s) a, b are held for this job until the jobs running there finish",
            ),
            (
                Waiting::Behind {
                    job: "big".into(),
                    nodes,
                },
                "behind job \"big\", which is first in line and holds node(s) a, b",
            ),
            (
                Waiting::NoRoom {
                    gpu_milli: 2500,
                    groups: vec![],
                },
                "no node has room for it now (2.5 GPU(s) in all); it runs when running jobs finish",
            ),
        ];
        for (w, want) in cases {
            assert_eq!(w.to_string(), want);
        }
    }

    #[test]
    fn the_explainer_answers_as_a_fresh_round_and_plans_once_per_apply() {
        use crate::state::testutil::register;
        use crate::state::{Command, Envelope};
        let mut st = State::default();
        let mut index = 0;
        let mut apply = |s: &mut State, cmd: Command| {
            index += 1;
            s.apply(index, &Envelope::new(1000 * index, cmd)).unwrap();
        };
        for n in ["a", "b"] {
            let node = gpuctl_testkit::node(n).gpus(2, gpuctl_testkit::A100);
            apply(&mut st, register(&node.build()));
        }
        for (j, gpus) in [("one", 2.0), ("two", 2.0), ("three", 2.0)] {
            let job = Box::new(gpuctl_testkit::job(j).gpus(gpus).build());
            apply(&mut st, Command::SubmitJob { job });
        }
        let round = crate::placement::plan_round(&st);
        let bindings = round.bindings.clone();
        assert_eq!(bindings.len(), 2, "two of the three fit");
        apply(&mut st, Command::Bind { bindings });
        let mut ex = Explainer::new();
        let fresh = crate::placement::plan_round(&st);
        let want = waiting(&st, &fresh, "three");
        assert!(want.is_some(), "three waits");
        assert_eq!(ex.waiting(&st, "three"), want);
        assert_eq!(ex.waiting(&st, "three"), want, "asked again");
        assert_eq!(ex.waiting(&st, "one"), None, "bound, not pending");
        assert_eq!(ex.rounds(), 1, "one round for the same state");
        // Another submit: the next answer is planned on the state after it.
        let job = Box::new(gpuctl_testkit::job("four").gpus(1.0).build());
        apply(&mut st, Command::SubmitJob { job });
        assert_eq!(
            ex.waiting(&st, "four"),
            waiting(&st, &crate::placement::plan_round(&st), "four")
        );
        assert_eq!(ex.rounds(), 2);
    }
}
