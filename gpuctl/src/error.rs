//! The errors a `gpuctl` command can end with, each written for the user and
//! each mapped to an exit code.

use gpuctl_common::api::ManifestError;

/// Exit code of a command that failed (server error, bad manifest, ...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a command line that makes no sense (what clap uses too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of `gpuctl wait` when the timeout passed (what `timeout(1)` uses).
pub const EXIT_TIMEOUT: u8 = 124;

/// Why a command failed. `main` prints `error: <this>` on one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No scheduler answered at any of the addresses tried.
    #[error("cannot reach the gpuctl scheduler at {addr}: {cause}; start one with \"gpuctl dev\" or set --server / GPUCTL_SERVER")]
    Unreachable { addr: String, cause: String },
    /// The connection failed on a TLS mismatch; `cause` says which.
    #[error("cannot reach {addr}: {cause}")]
    Tls { addr: String, cause: String },
    /// The server said NOT_FOUND for a named object.
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    /// Any other gRPC status: its message is written for the user.
    #[error("{0}")]
    Server(String),
    /// A manifest (file or `submit` flags) is malformed or invalid.
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    /// The command line is wrong (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// A local file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// Whether this is stdout closed under us (`gpuctl get jobs | head`),
    /// which is not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// A list of jobs read in pages that had not ended after `pages` pages
/// (`gpuctl::client::list_jobs`).
#[derive(Debug, thiserror::Error)]
#[error("the job list did not end after {pages} pages of {chunk}")]
pub struct ListTooLong {
    pub pages: usize,
    pub chunk: u32,
}

impl From<ListTooLong> for Error {
    fn from(e: ListTooLong) -> Self {
        Error::Other(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
