//! What keeps a gpuctl cluster private.
//!
//! - [`token`]: bearer tokens `gpuctl_<id>_<secret>`: made here, kept by the
//!   state only as a hash, parsed from the `authorization` header.

pub mod token;
