//! gpuctl's gRPC API: `proto/gpuctl.proto` and the tonic code generated from it.
//!
//! ```text
//! gpuctl CLI ──Control──► scheduler ◄──NodeService── node daemon
//!                         scheduler ──NodeAgent────► node daemon (log proxy)
//! ```
//!
//! No logic lives here; objects travel as JSON of the `gpuctl-common` model.

/// Version 1 of the API (`package gpuctl.v1`).
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("gpuctl.v1");
}

pub use v1::*;
