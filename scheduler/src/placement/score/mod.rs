//! Scores: how good a feasible (node, GPUs) option is. Each is a pure
//! function of one node's state; the policy combines them.

pub mod bestfit;
pub mod frag;
pub mod strand;
pub mod topology;
pub mod waste;
