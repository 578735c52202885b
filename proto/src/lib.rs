//! gpuctl's gRPC API: `proto/gpuctl.proto` and the tonic code generated from it,
//! and the V2 inference service (`proto/grpc_predict_v2.proto`).
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

/// The response header in which a scheduler replica that follows names the
/// leader's gRPC URL (as the replicas' membership gives it), on every
/// answer: clients that know several replicas send their next calls there.
pub const LEADER_HEADER: &str = "gpuctl-leader";

/// Whether two replica URLs name the same replica, whatever their scheme or
/// trailing slash (a client may know `https://h:p` where the membership
/// says `h:p`).
pub fn same_replica(a: &str, b: &str) -> bool {
    fn bare(u: &str) -> &str {
        let u = u.trim().trim_end_matches('/');
        u.split_once("://").map_or(u, |(_, rest)| rest)
    }
    bare(a) == bare(b)
}

/// The Open Inference Protocol's gRPC service (KServe's `grpc_predict_v2.proto`,
/// `package inference`), offered by the gateway and the model server.
pub mod inference {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("inference");
}
