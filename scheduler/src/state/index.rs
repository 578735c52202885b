//! Derived indexes the apply keeps in step, so that readers pay for what
//! changed instead of for the whole cluster:
//!
//! - [`TaskIndex`]: which jobs hold resources on each node (what
//!   [`State::tasks_on_node`] reads instead of scanning every job), the
//!   pending jobs in placement order (what a scheduling round reads), the
//!   live jobs (not ended, or still holding resources: all a round's fair
//!   share, workload mix and preemption look at), the jobs in submission
//!   order (what a paged `get jobs` reads), and each job's phase for the
//!   [`Counts`] the gauges read.
//! - [`NodeChanges`]: a per-node change sequence. Every apply that changes
//!   what a node runs or holds, or the node itself, moves that node to the
//!   end of the log; a reader that remembers a [`ChangeCursor`] asks for
//!   the nodes changed since (node watch streams, the leader's planner).
//!
//! None of this is replicated or stored: it is rebuilt from the objects
//! when a state is loaded ([`State::rebuild_usage`]), and a rebuilt or
//! cloned state has a new lineage, so a cursor taken from another state
//! reads as "everything may have changed".
//!
//! [`State::tasks_on_node`]: super::State::tasks_on_node
//! [`State::rebuild_usage`]: super::State::rebuild_usage

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use gpuctl_common::api::{Job, JobPhase, Node, NodePhase};

/// Jobs by the nodes their current attempt holds resources on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskIndex {
    /// Node → the jobs with a task bound to or running on it.
    by_node: BTreeMap<String, BTreeSet<String>>,
    /// Job → what the index last recorded of it.
    by_job: HashMap<String, JobEntry>,
    /// Node → its phase and GPU count as last counted.
    nodes: HashMap<String, (NodePhase, u64)>,
    /// Pending jobs in placement order: priority (highest first), then
    /// submission (uid), then name.
    pending: BTreeSet<PendingKey>,
    /// Jobs not ended or still holding resources, by name.
    live: BTreeSet<String>,
    /// Jobs by submission (uid, then name).
    submitted: BTreeSet<(u64, String)>,
    counts: Counts,
}

type PendingKey = (Reverse<i32>, u64, String);

#[derive(Debug, Clone, PartialEq, Eq)]
struct JobEntry {
    phase: JobPhase,
    /// The nodes its tasks hold resources on (sorted, no repeats).
    nodes: Vec<String>,
    /// Its key in `pending` while it is pending.
    pending: Option<PendingKey>,
    /// Its uid, its key in `submitted`.
    uid: u64,
}

/// Object counts for the gauges, kept as objects change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Jobs by phase, in [`JOB_PHASES`] order.
    pub jobs: [u64; 5],
    pub nodes_ready: u64,
    pub nodes_lost: u64,
    /// GPUs on Ready nodes.
    pub gpus_ready: u64,
}

impl Counts {
    /// How many jobs are in phase `p`.
    pub fn jobs_in(&self, p: JobPhase) -> u64 {
        self.jobs[phase_slot(p)]
    }
}

/// The job phases, in the order of [`Counts::jobs`].
pub const JOB_PHASES: [JobPhase; 5] = [
    JobPhase::Pending,
    JobPhase::Running,
    JobPhase::Succeeded,
    JobPhase::Failed,
    JobPhase::Cancelled,
];

fn phase_slot(p: JobPhase) -> usize {
    match p {
        JobPhase::Pending => 0,
        JobPhase::Running => 1,
        JobPhase::Succeeded => 2,
        JobPhase::Failed => 3,
        JobPhase::Cancelled => 4,
    }
}

/// The nodes a job's current attempt holds resources on.
fn held_nodes(j: &Job) -> Vec<String> {
    let set: BTreeSet<&str> = j
        .status
        .tasks
        .iter()
        .filter(|t| t.phase.holds_resources())
        .filter_map(|t| t.node.as_deref())
        .collect();
    set.into_iter().map(str::to_string).collect()
}

impl TaskIndex {
    /// The index of `jobs` and `nodes`, built by scanning them.
    pub fn build<'a>(
        jobs: impl IntoIterator<Item = &'a Job>,
        nodes: impl IntoIterator<Item = &'a Node>,
    ) -> TaskIndex {
        let mut ix = TaskIndex::default();
        for j in jobs {
            ix.job_changed(&j.metadata.name, Some(j));
        }
        for n in nodes {
            ix.node_changed(&n.metadata.name, Some(n));
        }
        ix
    }

    /// Record job `name` as it is now (`None`: removed). Returns the nodes
    /// whose tasks it touched: where it held resources before or holds now.
    pub fn job_changed(&mut self, name: &str, job: Option<&Job>) -> Vec<String> {
        let old = self.by_job.remove(name);
        let mut touched = Vec::new();
        if let Some(old) = old {
            self.counts.jobs[phase_slot(old.phase)] -= 1;
            if let Some(k) = &old.pending {
                self.pending.remove(k);
            }
            self.live.remove(name);
            self.submitted.remove(&(old.uid, name.to_string()));
            for n in old.nodes {
                if let Some(set) = self.by_node.get_mut(&n) {
                    set.remove(name);
                    if set.is_empty() {
                        self.by_node.remove(&n);
                    }
                }
                touched.push(n);
            }
        }
        if let Some(j) = job {
            let nodes = held_nodes(j);
            for n in &nodes {
                self.by_node
                    .entry(n.clone())
                    .or_default()
                    .insert(name.to_string());
                touched.push(n.clone());
            }
            self.counts.jobs[phase_slot(j.status.phase)] += 1;
            let phase = j.status.phase;
            let pending = (phase == JobPhase::Pending).then(|| {
                let key = (
                    Reverse(j.spec.priority),
                    j.metadata.uid.unwrap_or(0),
                    name.to_string(),
                );
                self.pending.insert(key.clone());
                key
            });
            if !phase.is_terminal() || !nodes.is_empty() {
                self.live.insert(name.to_string());
            }
            let uid = j.metadata.uid.unwrap_or(0);
            self.submitted.insert((uid, name.to_string()));
            let entry = JobEntry {
                phase,
                nodes,
                pending,
                uid,
            };
            self.by_job.insert(name.to_string(), entry);
        }
        touched.sort();
        touched.dedup();
        touched
    }

    /// Record node `name` as it is now (`None`: removed) in the counts.
    pub fn node_changed(&mut self, name: &str, node: Option<&Node>) {
        let c = &mut self.counts;
        let count = |c: &mut Counts, (phase, gpus): (NodePhase, u64), add: bool| {
            let (slot, g) = match phase {
                NodePhase::Ready => (&mut c.nodes_ready, gpus),
                NodePhase::Lost => (&mut c.nodes_lost, 0),
            };
            if add {
                *slot += 1;
                c.gpus_ready += g;
            } else {
                *slot -= 1;
                c.gpus_ready -= g;
            }
        };
        if let Some(old) = self.nodes.remove(name) {
            count(c, old, false);
        }
        if let Some(n) = node {
            let now = (n.status.phase, n.status.gpus.len() as u64);
            count(c, now, true);
            self.nodes.insert(name.to_string(), now);
        }
    }

    /// Jobs with a task holding resources on `node`, in name order.
    pub fn jobs_on(&self, node: &str) -> impl Iterator<Item = &str> + '_ {
        self.by_node
            .get(node)
            .into_iter()
            .flat_map(|s| s.iter().map(String::as_str))
    }

    /// The nodes job `name` holds resources on.
    pub fn nodes_of(&self, name: &str) -> &[String] {
        self.by_job.get(name).map_or(&[], |e| e.nodes.as_slice())
    }

    /// Pending jobs' names in placement order (priority, then submission).
    pub fn pending(&self) -> impl Iterator<Item = &str> + '_ {
        self.pending.iter().map(|(_, _, n)| n.as_str())
    }

    /// Jobs not ended, or ended with a task still holding resources, in
    /// name order.
    pub fn live(&self) -> impl Iterator<Item = &str> + '_ {
        self.live.iter().map(String::as_str)
    }

    /// Jobs in submission order (uid, then name), from just after `after`
    /// (a job's uid and name; `None`: from the first).
    pub fn submitted_after(&self, after: Option<(u64, &str)>) -> impl Iterator<Item = &str> + '_ {
        use std::ops::Bound;
        let from = match after {
            Some((uid, name)) => Bound::Excluded((uid, name.to_string())),
            None => Bound::Unbounded,
        };
        self.submitted
            .range((from, Bound::Unbounded))
            .map(|(_, n)| n.as_str())
    }

    /// Nodes where some task holds resources, in name order.
    pub fn busy_nodes(&self) -> impl Iterator<Item = &str> + '_ {
        self.by_node.keys().map(String::as_str)
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }
}

/// Tells states apart: every new, rebuilt or cloned state gets its own.
#[derive(Debug)]
struct Lineage(u64);

static LINEAGES: AtomicU64 = AtomicU64::new(1);

impl Default for Lineage {
    fn default() -> Self {
        Lineage(LINEAGES.fetch_add(1, Ordering::Relaxed))
    }
}

impl Clone for Lineage {
    /// A clone goes its own way from here: readers must not take changes
    /// of one for the other's.
    fn clone(&self) -> Self {
        Lineage::default()
    }
}

/// A number no other state, and no other version of this one, has had:
/// taken afresh by every apply, by a clone and by a new state. A reader
/// that derived something from a state keys it by this to know when it
/// must derive it again.
#[derive(Debug, PartialEq, Eq)]
pub struct Generation(u64);

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl Generation {
    /// Move to a number not seen before.
    pub fn bump(&mut self) {
        *self = Generation::default();
    }

    pub fn get(&self) -> u64 {
        self.0
    }
}

impl Default for Generation {
    fn default() -> Self {
        Generation(GENERATIONS.fetch_add(1, Ordering::Relaxed))
    }
}

impl Clone for Generation {
    fn clone(&self) -> Self {
        Generation::default()
    }
}

/// Where a reader of [`NodeChanges`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeCursor {
    lineage: u64,
    seq: u64,
}

/// The nodes in the order they last changed; see the module doc.
#[derive(Debug, Clone, Default)]
pub struct NodeChanges {
    lineage: Lineage,
    seq: u64,
    /// Node → the sequence number of its last change.
    at: HashMap<String, u64>,
    /// Sequence number → node: one entry per node, its last change.
    log: BTreeMap<u64, String>,
}

impl NodeChanges {
    /// Note that `node` changed (what it runs or holds, or the node itself).
    pub fn changed(&mut self, node: &str) {
        self.seq += 1;
        match self.at.get_mut(node) {
            Some(at) => {
                self.log.remove(at);
                *at = self.seq;
            }
            None => {
                self.at.insert(node.to_string(), self.seq);
            }
        }
        self.log.insert(self.seq, node.to_string());
    }

    /// Where the log stands now.
    pub fn cursor(&self) -> ChangeCursor {
        ChangeCursor {
            lineage: self.lineage.0,
            seq: self.seq,
        }
    }

    /// The nodes changed after `since`, oldest change first; `None` when
    /// `since` is from another state (the reader must look at everything).
    pub fn since(&self, since: ChangeCursor) -> Option<impl Iterator<Item = &str> + '_> {
        if since.lineage != self.lineage.0 || since.seq > self.seq {
            return None;
        }
        Some(self.log.range(since.seq + 1..).map(|(_, n)| n.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_since_a_cursor_name_each_node_once() {
        let mut c = NodeChanges::default();
        c.changed("a");
        let start = c.cursor();
        c.changed("b");
        c.changed("a");
        c.changed("b");
        let got: Vec<&str> = c.since(start).unwrap().collect();
        assert_eq!(got, ["a", "b"], "each changed node once, by last change");
        assert_eq!(c.since(c.cursor()).unwrap().count(), 0);
        let other = c.clone();
        assert!(
            other.since(start).is_none(),
            "a clone's cursor is not this one's"
        );
    }
}
