//! Filter: the node is Ready and not cordoned.

use gpuctl_common::api::{Node, NodePhase};

use super::{Fit, Misfit};
use crate::placement::node::NodeModel;

/// Whether a node object is Ready and not cordoned (what a model's
/// `schedulable` holds).
pub fn node_object(n: &Node) -> bool {
    n.status.phase == NodePhase::Ready && !n.spec.unschedulable
}

pub fn passes(n: &NodeModel) -> bool {
    filter(n).fits()
}

pub fn filter(n: &NodeModel) -> Fit {
    if n.schedulable {
        Fit::Fits
    } else {
        Fit::NotNow(Misfit::Unschedulable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::filter::testutil::node;

    #[test]
    fn table() {
        for (schedulable, want) in [(true, true), (false, false)] {
            let mut n = node(0, 0, &[0]);
            n.schedulable = schedulable;
            assert_eq!(passes(&n), want);
            assert!(!filter(&n).is_never(), "a cordon is lifted");
        }
    }
}
