//! Serving (placeholder doc, rewritten below).
pub mod batcher;
pub mod model;
pub mod protocol;
