//! Serving: the gateway, the autoscaler, and the model server with its inference
//! protocol (binaries `gpu-gateway` and `gpu-model-server`).
//!
//! ```text
//!  HTTP client (KServe V2 / Triton JSON)
//!      │  POST /v2/models/{endpoint}/infer
//!      ▼
//!  gateway (hyper) ── body limit (413) ── endpoint lookup
//!      │  replicas? ── none ─► activator queue (bounded, 503 when full)
//!      │                        ScaleUp hook, once per cold start ─► scheduler
//!      │                        wait for set_replicas, 503 after the timeout
//!      ▼  p2c over outstanding requests; connect failure → retry elsewhere
//!  model-server replicas (one per task)
//!      │  protocol::decode (typed 4xx errors naming the input)
//!      ▼
//!  batcher (group by non-batch dims; close on max batch size or max delay)
//!      │  merge along dim 0 ─► tract (ONNX, blocking pool) ─► split per request
//!      ▼
//!  protocol::encode ─► response
//!
//!  gateway concurrency samples ─► autoscaler (KPA: stable/panic windows,
//!  rate limits, scale to zero), run by the scheduler's endpoint controller
//!
//!  cluster: polls the scheduler for endpoints and replicas, probes readiness,
//!  reports load and drained replicas (`gpu-gateway --server`)
//! ```
//!
//! Pure cores, no I/O and time passed in: [`protocol`], [`batcher`], [`autoscaler`],
//! [`p2c`]. Shells: [`model`] (tract), [`model_server`], [`gateway`], [`http`].
//! Servers take their listener and shutdown future from outside, so tests run them on
//! `127.0.0.1:0`.

/// The pure autoscaler lives in `gpuctl-common` so the scheduler's endpoint controller
/// runs it without building the model runtime.
pub use gpuctl_common::autoscaler;
pub mod batcher;
pub mod cluster;
pub mod gateway;
pub mod grpc;
pub mod http;
pub mod model;
pub mod model_server;
pub mod p2c;
pub mod protocol;
pub mod upstream;
