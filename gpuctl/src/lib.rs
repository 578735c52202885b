//! `gpuctl`, the command line of the gpuctl GPU cluster platform.
//!
//! ```text
//! argv ──clap (cli)──► Cli ──dispatch::run──► config (which server?)
//!                                 │              commands/* ──client──► Control gRPC
//!                                 │                manifest (files, submit flags → Job)
//!                                 │                render, workflows, endpoints (tables, describe)
//!                                 └── dev ──► spawns gpu-scheduler + gpu-node children, supervises them
//! ```
//!
//! Where things are: `cli` holds the clap types, `dispatch` picks the
//! command, `commands/` has one file per command group (apply and submit,
//! get and describe, logs, wait, cancel and delete, cordon and drain,
//! cluster), and `status` is `gpuctl cluster status`. `dev/` is `gpuctl dev`.
//! `argo_objects` reads, shows and suspends WorkflowTemplates,
//! ClusterWorkflowTemplates and CronWorkflows.
//!
//! The binary is a thin `main` around [`run`]; everything a test wants to
//! pin (address resolution, manifests, tables) is a pure function in a module.
//!
//! Exit codes: 0 success, 1 failure (server error, bad manifest, unreachable
//! server, a job that `wait` saw fail), 2 bad command line, 124 `wait` timed out.

pub mod argo_objects;
pub mod cli;
pub mod client;
mod commands;
pub mod config;
pub mod dev;
mod dispatch;
pub mod duration;
pub mod endpoints;
pub mod error;
pub mod manifest;
pub mod render;
pub mod secrets;
pub mod status;
mod stdout;
#[cfg(test)]
mod testserver;
pub mod workflows;

pub use crate::cli::{
    parse_kind, Cli, ClusterCommand, Command, DevFlags, Kind, Output, SubmitFlags,
};
pub use crate::client::{create, Created};
pub use crate::commands::apply::new_request_id;
pub use crate::dispatch::run;
pub use crate::error::{Error, Result, EXIT_FAILURE, EXIT_TIMEOUT, EXIT_USAGE};
pub use crate::stdout::out;
