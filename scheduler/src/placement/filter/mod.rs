//! Feasibility: a node is a candidate for a task only when every filter
//! passes. Each filter is a pure check of one node that answers with a
//! [`Fit`]; [`fit`](super::fit) runs them in order.
//!
//! A filter that fails says whether waiting can help, as the Kubernetes
//! scheduler framework's `Unschedulable` and `UnschedulableAndUnresolvable`
//! do: [`Fit::NotNow`] when the node could take the task once the work
//! running there finishes (or is preempted), it is uncordoned or its GPUs
//! recover; [`Fit::Never`] when its capacity falls short even empty and
//! healthy, which is what the submit-time check refuses. Unlike Kubernetes,
//! a cordoned node is `NotNow`: a cordon is lifted by hand, not by waiting
//! for work to finish, but the node's capacity would do.

pub mod gpu_fit;
pub mod host_fit;
pub mod schedulable;
#[cfg(test)]
pub(crate) mod testutil;

use std::fmt;

/// A filter's answer for one task on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// The node can take the task now.
    Fits,
    /// Not now, but it could later (`Unschedulable`).
    NotNow(Misfit),
    /// Never, even empty and healthy (`UnschedulableAndUnresolvable`).
    Never(Misfit),
}

impl Fit {
    pub fn fits(&self) -> bool {
        matches!(self, Fit::Fits)
    }

    pub fn is_never(&self) -> bool {
        matches!(self, Fit::Never(_))
    }

    /// Why the task does not fit (`None` when it does).
    pub fn misfit(&self) -> Option<Misfit> {
        match *self {
            Fit::Fits => None,
            Fit::NotNow(m) | Fit::Never(m) => Some(m),
        }
    }

    /// The worse of two answers (`Never` over `NotNow` over `Fits`); `self`
    /// of two alike, so that the first filter to fail names the reason.
    pub fn or(self, other: Fit) -> Fit {
        let rank = |f: &Fit| match f {
            Fit::Fits => 0,
            Fit::NotNow(_) => 1,
            Fit::Never(_) => 2,
        };
        if rank(&other) > rank(&self) {
            other
        } else {
            self
        }
    }
}

/// Why a task does not fit a node. CPU in millicores, memory in bytes, GPU
/// in thousandths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misfit {
    /// The node is not Ready, or is cordoned.
    Unschedulable,
    /// The task needs `need` CPU; the node has `have` (left now, or in all
    /// when it could never fit).
    Cpu { need: u64, have: u64 },
    /// As `Cpu`, for host memory.
    Memory { need: u64, have: u64 },
    /// The task needs `need` GPUs with `milli` free each, of a model and
    /// memory it accepts; the node has `have` such GPUs (with room now, or
    /// in all when it could never fit).
    Gpus { need: u32, milli: u32, have: u32 },
    /// A GPU chosen for the task (by its device index) is not on the node.
    NoGpu { index: u32 },
    /// A GPU chosen for the task is unhealthy.
    Unhealthy { index: u32 },
    /// A GPU chosen for the task has less than `milli` free.
    Overcommitted { index: u32, milli: u32 },
    /// A GPU chosen for the task is of a model or memory it does not accept.
    NotAccepted { index: u32 },
}

impl Misfit {
    /// The reason in a few words, the same for every node it applies to
    /// (for counting nodes by reason).
    pub fn summary(&self) -> &'static str {
        match self {
            Misfit::Unschedulable => "not Ready or cordoned",
            Misfit::Cpu { .. } => "not enough CPU",
            Misfit::Memory { .. } => "not enough memory",
            Misfit::Gpus { .. } => "not enough GPUs",
            Misfit::NoGpu { .. } => "no such GPU",
            Misfit::Unhealthy { .. } => "GPU unhealthy",
            Misfit::Overcommitted { .. } => "GPU over-committed",
            Misfit::NotAccepted { .. } => "GPU of another model",
        }
    }

    /// The reason on node `node`, as a refused binding states it.
    pub fn on(&self, node: &str) -> String {
        match self {
            Misfit::Unschedulable => format!("node {node} is not schedulable"),
            Misfit::Cpu { .. } => format!("not enough CPU on {node}"),
            Misfit::Memory { .. } => format!("not enough memory on {node}"),
            Misfit::Gpus { need, milli, have } => {
                format!("node {node} has {have} GPU(s) for {need} x {milli}m")
            }
            Misfit::NoGpu { index } => format!("node {node} has no GPU {index}"),
            Misfit::Unhealthy { index } => format!("GPU {index} on {node} is unhealthy"),
            Misfit::Overcommitted { index, .. } => {
                format!("GPU {index} on {node} is over-committed")
            }
            Misfit::NotAccepted { index } => {
                format!("GPU {index} on {node} is not of a model the task accepts")
            }
        }
    }
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misfit::Unschedulable => f.write_str("the node is not Ready or is cordoned"),
            Misfit::Cpu { need, have } => write!(f, "needs {need}m CPU, the node has {have}m"),
            Misfit::Memory { need, have } => {
                write!(f, "needs {need} bytes of memory, the node has {have}")
            }
            Misfit::Gpus { need, milli, have } => write!(
                f,
                "needs {need} GPU(s) with {milli}m free, the node has {have}"
            ),
            Misfit::NoGpu { index } => write!(f, "the node has no GPU {index}"),
            Misfit::Unhealthy { index } => write!(f, "GPU {index} is unhealthy"),
            Misfit::Overcommitted { index, milli } => {
                write!(f, "GPU {index} has less than {milli}m free")
            }
            Misfit::NotAccepted { index } => {
                write!(f, "GPU {index} is not of a model the task accepts")
            }
        }
    }
}
