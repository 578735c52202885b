//! Serving (placeholder doc, rewritten below).
pub mod autoscaler;
pub mod batcher;
pub mod http;
pub mod model;
pub mod model_server;
pub mod p2c;
pub mod protocol;
