//! What keeps a gpuctl cluster private.
//!
//! - [`token`]: bearer tokens `gpuctl_<id>_<secret>`: made here, kept by the
//!   state only as a hash, parsed from the `authorization` header.
//! - [`tls`]: certificates loaded once into rustls/tonic configurations for
//!   every listener and client, and one-line explanations of TLS mismatches.
//! - [`ca`]: the local CA and cluster certificate `gpuctl dev` makes.
//! - [`sealing`]: Secret values encrypted at rest (AES-GCM), configured as
//!   Kubernetes' `EncryptionConfiguration`.
//! - [`replica`]: endpoint replicas' certificates, signed on their node by
//!   the node's CA.

pub mod ca;
pub mod oidc;
pub mod oidc_discovery;
pub mod replica;
pub mod sealing;
pub mod tls;
pub mod token;
