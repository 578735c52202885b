//! Builders of valid gpuctl objects for tests, so that one place knows how
//! a Job, a Node, a Queue or an Endpoint is put together.
//!
//! ```text
//! job("train").replicas(2).gpus(0.5).queue("q").build()        -> api::Job
//! node("n1").gpus(8, "A100-80GB").nvlink("nvl0").build()       -> api::Node
//! cluster(4, 8)                                                -> n0..n3, 8 A100s each
//! queue("research").quota(16.0).borrow().build()               -> queue::Queue
//! endpoint("lin").model("/m/linear.onnx").gpus(1.0).build()    -> endpoint::Endpoint
//! oidc::IdTokenSigner::new("k1").token(&claims)                -> a signed ID token
//! ```
//!
//! Every builder starts from the object as a user would write it with
//! nothing but a name (the defaults the parser fills in), so a test states
//! only what it is about. Types private to one crate (the scheduler's
//! placement views, its registration command) are built there, from these.

mod endpoint;
mod job;
mod node;
pub mod oidc;
mod queue;

pub use endpoint::{endpoint, EndpointBuilder};
pub use job::{job, JobBuilder};
pub use node::{cluster, node, NodeBuilder, A100, A100_MEMORY};
pub use queue::{queue, QueueBuilder};
