//! Filter: the node is Ready and not cordoned.

use crate::placement::model::NodeModel;

pub fn passes(n: &NodeModel) -> bool {
    n.schedulable
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
        }
    }
}
