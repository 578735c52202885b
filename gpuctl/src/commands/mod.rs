//! One file per command group; each takes a [`ctx::Ctx`] and the parsed
//! flags and returns the exit code. `dispatch` picks which one runs;
//! `gpuctl dev` and `gpuctl cluster status` live in `dev` and `status`.

pub(crate) mod apply;
pub(crate) mod cancel;
pub(crate) mod cluster;
pub(crate) mod cordon;
pub(crate) mod ctx;
pub(crate) mod get;
pub(crate) mod identity;
pub(crate) mod logs;
pub(crate) mod node_ca;
pub(crate) mod rollout;
pub(crate) mod suspend;
pub(crate) mod top;
pub(crate) mod wait;
