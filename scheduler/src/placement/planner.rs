//! The leader's placement state between rounds: one cluster model, with its
//! memo and rank indexes, and the snapshot it stands for, brought up to
//! each round's state by updating the nodes whose view changed (compared
//! in place, without copying the others) instead of being built cold
//! every round.
//! A round places on it inside a checkpoint and rolls back at the end, and
//! checks each preemption's fit the same way, so the model always stands
//! for the last snapshot.
//!
//! Decisions are exactly those of the stateless functions
//! ([`plan_round`](super::round::plan_round),
//! [`place_with_reservation`](super::place::place_with_reservation)): the synced
//! model equals one built from the snapshot, and the memo and index never
//! change a decision.

use gpuctl_common::api::Job;

use super::mix::WorkloadMix;
use super::model::ClusterModel;
use super::node::MILLI;
use super::place::place_kept;
use super::policy::Policy;
use super::reservation::Reservation;
use super::round::{plan_round_with, Round};
use super::snapshot::{node_view, nodes_with_usage, view_matches, NodeView, Snapshot};
use crate::state::{Binding, ChangeCursor, State};

/// Placement state kept across rounds; see the module doc.
#[derive(Debug, Default)]
pub struct Planner {
    model: ClusterModel,
    /// The snapshot the model stands for, in the model's order.
    snap: Snapshot,
    /// Times the model was built from scratch (a sync that found nodes
    /// added, removed or reconfigured, or the first).
    rebuilds: u64,
    /// Where the state's node change log stood at the last
    /// [`Planner::sync_state`]; `None` after a sync to a snapshot.
    cursor: Option<ChangeCursor>,
    /// Nodes looked at by the last [`Planner::sync_state`].
    visited: usize,
}

impl Planner {
    pub fn new() -> Planner {
        Planner::default()
    }

    /// [`plan_round`](super::round::plan_round) on the kept model, synced to
    /// `st` first (without taking a new snapshot).
    pub fn plan_round(&mut self, st: &State) -> Round {
        let pending = st.pending_jobs();
        if pending.is_empty() {
            return Round::default();
        }
        self.sync_state(st);
        let Planner { model, snap, .. } = self;
        plan_round_with(st, pending, snap, Some(model))
    }

    /// The cluster model, standing for [`Planner::snapshot`].
    pub fn model(&self) -> &ClusterModel {
        &self.model
    }

    /// The snapshot the model stands for.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    /// Bring the model and its snapshot to `st`: [`Planner::sync`] to
    /// [`Snapshot::of`] `st`, looking only at the nodes the state's change
    /// log names since the last sync (every node the first time, or when
    /// `st` is another state than last time).
    pub fn sync_state(&mut self, st: &State) {
        let log = st.node_changes();
        let now = log.cursor();
        let since = self.cursor.and_then(|c| log.since(c));
        let synced = match since {
            Some(changed) => self.sync_nodes(st, changed),
            None => self.sync_all(st),
        };
        if !synced {
            self.snap = Snapshot::of(st);
            self.model = ClusterModel::from_views(&self.snap.nodes);
            self.rebuilds += 1;
            self.visited = self.snap.nodes.len();
        }
        self.cursor = Some(now);
    }

    /// Update the nodes named in `changed`; false when one was added,
    /// removed or reconfigured (the model must be built anew).
    fn sync_nodes<'a>(&mut self, st: &State, changed: impl Iterator<Item = &'a str>) -> bool {
        let mut updates: Vec<(usize, NodeView)> = Vec::new();
        self.visited = 0;
        for name in changed {
            self.visited += 1;
            let found = self
                .snap
                .nodes
                .binary_search_by(|v| v.name.as_str().cmp(name));
            let (Ok(i), Some(n)) = (found, st.nodes.get(name)) else {
                return false; // added or removed
            };
            let usage = st.node_usage(name);
            if view_matches(n, usage, &self.snap.nodes[i]) {
                continue;
            }
            let new = node_view(n, usage);
            if !same_node(&self.snap.nodes[i], &new) {
                return false;
            }
            updates.push((i, new));
        }
        for (i, new) in updates {
            self.update(i, new);
        }
        true
    }

    /// Compare every node of `st` with its view in place, building views
    /// only for the nodes that changed; false when the model must be built
    /// anew.
    fn sync_all(&mut self, st: &State) -> bool {
        let mut changed: Vec<(usize, NodeView)> = Vec::new();
        let mut count = 0;
        for (i, (n, u)) in nodes_with_usage(st).enumerate() {
            count = i + 1;
            let Some(old) = self.snap.nodes.get(i) else {
                return false;
            };
            if view_matches(n, u, old) {
                continue;
            }
            let new = node_view(n, u);
            if !same_node(old, &new) {
                return false;
            }
            changed.push((i, new));
        }
        self.visited = count;
        if count != self.snap.nodes.len() {
            return false;
        }
        for (i, new) in changed {
            self.update(i, new);
        }
        true
    }

    /// How many nodes the last [`Planner::sync_state`] looked at.
    pub fn visited(&self) -> usize {
        self.visited
    }

    /// [`place_with_reservation`](super::place::place_with_reservation) on the
    /// kept model, synced to `snapshot` first.
    pub fn place_with_reservation(
        &mut self,
        snapshot: &Snapshot,
        pending: &[&Job],
        policy: &Policy,
        mix: &WorkloadMix,
    ) -> (Vec<Binding>, Option<Reservation>) {
        self.sync(snapshot);
        self.place_synced(snapshot, pending, policy, mix)
    }

    /// [`Planner::place_with_reservation`] without the sync: the model
    /// must stand for `snapshot` already (the last [`Planner::sync`] was
    /// to it).
    pub fn place_synced(
        &mut self,
        snapshot: &Snapshot,
        pending: &[&Job],
        policy: &Policy,
        mix: &WorkloadMix,
    ) -> (Vec<Binding>, Option<Reservation>) {
        debug_assert_eq!(self.snap, *snapshot, "synced to another snapshot");
        place_kept(&mut self.model, snapshot, pending, policy, mix)
    }

    /// How many times the model was built from scratch.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// Bring the model to `snapshot`. A node whose view changed only in
    /// what is in use (GPU use and health, CPU and memory used, whether it
    /// is schedulable) is updated in place; any other difference (nodes
    /// added, removed, renamed or reconfigured) builds the model anew.
    pub fn sync(&mut self, snapshot: &Snapshot) {
        // The state's change log no longer describes what the model stands for.
        self.cursor = None;
        let mut changed = Vec::new();
        let same_nodes =
            self.snap.nodes.len() == snapshot.nodes.len()
                && self.snap.nodes.iter().zip(&snapshot.nodes).enumerate().all(
                    |(i, (old, new))| {
                        if same_use(old, new) && same_node(old, new) {
                            return true;
                        }
                        changed.push(i);
                        same_node(old, new)
                    },
                );
        if !same_nodes {
            self.model = ClusterModel::from_views(&snapshot.nodes);
            self.snap = snapshot.clone();
            self.rebuilds += 1;
            return;
        }
        for i in changed {
            self.update(i, snapshot.nodes[i].clone());
        }
    }

    /// Node `i` is now `new` (the same node, its use changed).
    fn update(&mut self, i: usize, new: NodeView) {
        let n = self.model.node_mut(i);
        n.schedulable = new.schedulable;
        n.cpu_used = new.cpu_used;
        n.memory_used = new.memory_used;
        for (slot, g) in n.gpus.iter_mut().zip(&new.gpus) {
            slot.healthy = g.healthy;
            slot.free = MILLI.saturating_sub(g.used_milli);
        }
        self.snap.nodes[i] = new;
    }
}

/// The same use of a node (given [`same_node`]): what is taken, health
/// and whether it is schedulable.
fn same_use(a: &NodeView, b: &NodeView) -> bool {
    a.schedulable == b.schedulable
        && a.cpu_used == b.cpu_used
        && a.memory_used == b.memory_used
        && a.gpus.len() == b.gpus.len()
        && a.gpus
            .iter()
            .zip(&b.gpus)
            .all(|(x, y)| x.healthy == y.healthy && x.used_milli == y.used_milli)
}

/// The same node with the same capacity and GPUs (use aside).
fn same_node(a: &NodeView, b: &NodeView) -> bool {
    a.name == b.name
        && a.cpu_milli == b.cpu_milli
        && a.memory_bytes == b.memory_bytes
        && a.gpus.len() == b.gpus.len()
        && a.gpus.iter().zip(&b.gpus).all(|(x, y)| {
            x.index == y.index
                && x.uuid == y.uuid
                && x.model == y.model
                && x.memory_bytes == y.memory_bytes
                && x.nvlink_domain == y.nvlink_domain
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::place::place_with_reservation;
    use crate::placement::testutil::{job, node};
    use crate::state::testutil::register;
    use crate::state::{Command, Envelope};
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// A kept planner decides as the stateless functions round after round
    /// while the cluster changes under it: use, health and cordons change
    /// in place; nodes added or reconfigured rebuild the model.
    #[test]
    fn decides_as_the_stateless_round() {
        let mut draw = StdRng::seed_from_u64(5);
        let mut planner = Planner::new();
        let mut nodes: Vec<NodeView> = (0..6)
            .map(|i| {
                let mut n = node(&format!("n{i}"), [8, 4, 2][i % 3]);
                n.cpu_milli = 64_000;
                n.memory_bytes = 256 << 30;
                for g in &mut n.gpus {
                    g.nvlink_domain = format!("d{}", g.index / 4);
                }
                n
            })
            .collect();
        let policy = Policy::default();
        // (what changes before the round, whether the model is rebuilt)
        type Change = fn(&mut Vec<NodeView>, &mut StdRng);
        let changes: [(&str, Change, bool); 6] = [
            ("nothing", |_, _| {}, false),
            (
                "GPU use",
                |ns, r| {
                    let n = r.gen_range(0..ns.len());
                    let g = r.gen_range(0..ns[n].gpus.len());
                    ns[n].gpus[g].used_milli = [0, 250, 500, 1000][r.gen_range(0..4)];
                    ns[n].cpu_used = r.gen_range(0..8) * 4000;
                },
                false,
            ),
            (
                "a cordon",
                |ns, r| {
                    let n = r.gen_range(0..ns.len());
                    ns[n].schedulable = !ns[n].schedulable;
                },
                false,
            ),
            (
                "a GPU's health",
                |ns, r| {
                    let n = r.gen_range(0..ns.len());
                    ns[n].gpus[0].healthy = !ns[n].gpus[0].healthy;
                },
                false,
            ),
            (
                "a node added",
                |ns, _| {
                    let i = ns.len();
                    ns.push(node(&format!("n{i}"), 4));
                },
                true,
            ),
            (
                "a node's CPU capacity",
                |ns, r| {
                    let n = r.gen_range(0..ns.len());
                    ns[n].cpu_milli += 1000;
                },
                true,
            ),
        ];
        for round in 0..60 {
            let (what, change, rebuilds) = changes[round % changes.len()];
            change(&mut nodes, &mut draw);
            let jobs: Vec<Job> = (0..draw.gen_range(1..6))
                .map(|j| {
                    let g = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0][draw.gen_range(0..6)];
                    job(&format!("r{round}j{j}"), None, 0, draw.gen_range(1..4), g)
                })
                .collect();
            let pending: Vec<&Job> = jobs.iter().collect();
            let mix = WorkloadMix::from_jobs(&pending, policy.mix_options());
            let snap = Snapshot {
                nodes: nodes.clone(),
            };
            let before = planner.rebuilds();
            let got = planner.place_with_reservation(&snap, &pending, &policy, &mix);
            let want = place_with_reservation(&snap, &pending, &policy, &mix);
            assert_eq!(got, want, "round {round} ({what})");
            if round > 0 {
                assert_eq!(
                    planner.rebuilds() > before,
                    rebuilds,
                    "round {round} ({what})"
                );
            }
            assert_eq!(
                planner.model,
                ClusterModel::from_views(&snap.nodes),
                "round {round} ({what}): the model stands for the snapshot"
            );
        }
    }

    fn apply(st: &mut State, cmd: Command) {
        st.apply(1, &Envelope::new(1_000, cmd)).unwrap();
    }

    /// After the first round, a sync looks only at the nodes the state's
    /// change log names: one bound job is one node visited, out of 200.
    #[test]
    fn syncs_only_the_changed_nodes() {
        let mut st = State::default();
        for i in 0..200 {
            let n = gpuctl_testkit::node(&format!("n{i:03}"))
                .uuid_prefix(&format!("n{i:03}"))
                .gpus(8, "A100")
                .build();
            apply(&mut st, register(&n));
        }
        let mut planner = Planner::new();
        planner.sync_state(&st);
        assert_eq!(planner.visited(), 200, "the first sync sees every node");
        planner.sync_state(&st);
        assert_eq!(planner.visited(), 0, "nothing changed");
        let job = Box::new(job("a", None, 0, 1, 2.0));
        apply(&mut st, Command::SubmitJob { job });
        let round = crate::placement::round::plan_round(&st);
        let bindings = round.bindings;
        assert_eq!(bindings.len(), 1);
        apply(&mut st, Command::Bind { bindings });
        planner.sync_state(&st);
        assert_eq!(planner.visited(), 1, "only the node the job was bound to");
        assert_eq!(planner.snapshot(), &Snapshot::of(&st));
        assert_eq!(planner.rebuilds(), 1);
    }

    /// Synced from the state, the planner's snapshot is the state's
    /// snapshot as nodes come, go, change and run jobs, and its rounds are
    /// the stateless rounds.
    #[test]
    fn syncs_from_the_state() {
        let object = |name: &str, gpus: u32| {
            gpuctl_testkit::node(name)
                .uuid_prefix(name)
                .gpus(gpus, "A100")
                .build()
        };
        let mut planner = Planner::new();
        let mut st = State::from_objects(
            vec![job("a", None, 0, 2, 1.0)],
            vec![object("n1", 4), object("n3", 2)],
        );
        // (what changes in the state before the round)
        type Change = fn(&mut State);
        let changes: [(&str, Change); 6] = [
            ("first round", |_| {}),
            ("a node added between", |st| {
                let mut n = st.nodes["n1"].clone();
                n.metadata.name = "n2".into();
                apply(st, register(&n));
            }),
            ("a cordon", |st| {
                let (node, unschedulable) = ("n1".to_string(), true);
                apply(
                    st,
                    Command::Cordon {
                        node,
                        unschedulable,
                        reason: None,
                        evict: false,
                    },
                );
            }),
            ("a GPU unhealthy", |st| {
                let mut n = st.nodes["n2"].clone();
                n.status.gpus[0].healthy = false;
                apply(st, register(&n));
            }),
            ("a node removed", |st| {
                // No command removes a node: a state loaded without it.
                let jobs = st.jobs.values().cloned().collect();
                let nodes = st.nodes.values().filter(|n| n.metadata.name != "n3");
                *st = State::from_objects(jobs, nodes.cloned().collect());
            }),
            ("a job bound elsewhere holds GPUs", |st| {
                let mut j = job("b", None, 0, 1, 2.0);
                j.status.phase = gpuctl_common::api::JobPhase::Running;
                j.status.tasks = vec![gpuctl_common::api::TaskStatus {
                    index: 0,
                    group: "main".into(),
                    phase: gpuctl_common::api::TaskPhase::Running,
                    node: Some("n2".into()),
                    gpus: (1..3)
                        .map(|i| gpuctl_common::api::GpuShare {
                            index: i,
                            uuid: format!("n2-{i}"),
                            milli: 1000,
                        })
                        .collect(),
                    ..Default::default()
                }];
                let jobs: Vec<Job> = st.jobs.values().cloned().chain([j]).collect();
                let nodes = st.nodes.values().cloned().collect();
                *st = State::from_objects(jobs, nodes);
            }),
        ];
        for (what, change) in changes {
            change(&mut st);
            let got = planner.plan_round(&st);
            assert_eq!(planner.snapshot(), &Snapshot::of(&st), "{what}");
            assert_eq!(got, crate::placement::round::plan_round(&st), "{what}");
            assert_eq!(
                planner.model,
                ClusterModel::from_views(&Snapshot::of(&st).nodes),
                "{what}"
            );
        }
        assert_eq!(
            planner.rebuilds(),
            3,
            "first round, node added, node removed"
        );
    }
}
