//! This node's credential: the bearer token every `NodeService` call
//! carries, kept in a file (`--token-file`, mode 0600), and the join token
//! (`--join-token-file`) that is traded for a new one through
//! `NodeService.Join` when there is none or the scheduler refuses it.
//!
//! This file holds the state and the files; the calls are in `servers.rs`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// A credential file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {what} {path:?}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path:?} is empty")]
    Empty { what: &'static str, path: PathBuf },
    #[error("{what} {path:?} does not hold a gpuctl token (gpuctl_<id>_<secret>){hint}")]
    Malformed {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
}

/// A well-formed token read from `path`; `None` for a missing or empty
/// file when `optional`.
fn read_token(
    what: &'static str,
    path: &Path,
    optional: bool,
    hint: &'static str,
) -> Result<Option<String>, CredentialError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CredentialError::Read {
                what,
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let token = text.trim();
    if token.is_empty() {
        return if optional {
            Ok(None)
        } else {
            Err(CredentialError::Empty {
                what,
                path: path.to_path_buf(),
            })
        };
    }
    if gpuctl_security::token::id_of(token).is_err() {
        return Err(CredentialError::Malformed {
            what,
            path: path.to_path_buf(),
            hint,
        });
    }
    Ok(Some(token.to_string()))
}

/// `Bearer <token>` as a header value (a well-formed token is ASCII).
fn bearer(token: &str) -> Option<AsciiMetadataValue> {
    format!("Bearer {token}").parse().ok()
}

#[derive(Debug, Default)]
struct Current {
    /// Bumped each time the credential is replaced.
    generation: u64,
    header: Option<AsciiMetadataValue>,
    /// A call with this credential was acknowledged.
    confirmed: bool,
    /// The credential came from joining again after a refusal.
    rejoined: bool,
    /// The generation whose refusal was already logged.
    warned: Option<u64>,
}

/// This node's credential and how to get a new one; see the module docs.
#[derive(Debug)]
pub struct Credentials {
    token_file: Option<PathBuf>,
    join: Option<(PathBuf, AsciiMetadataValue)>,
    current: Mutex<Current>,
}

/// What to do about a refused credential.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It was replaced since the refused call: just retry.
    Replaced,
    /// Join again with the join token.
    Rejoin,
    /// Nothing to do but retry (and log once, which this has done).
    Retry,
}

impl Credentials {
    /// No credential and no way to get one: calls go without a token.
    pub fn none() -> Credentials {
        Credentials {
            token_file: None,
            join: None,
            current: Mutex::default(),
        }
    }

    /// Read the node credential from `token_file` (missing or empty: none
    /// yet) and the join token from `join_token_file`, if given.
    pub fn load(
        token_file: PathBuf,
        join_token_file: Option<&Path>,
    ) -> Result<Credentials, CredentialError> {
        let join = match join_token_file {
            Some(path) => {
                let token = read_token("the join token file", path, false, "")?
                    .and_then(|t| bearer(&t))
                    .ok_or_else(|| CredentialError::Empty {
                        what: "the join token file",
                        path: path.to_path_buf(),
                    })?;
                Some((path.to_path_buf(), token))
            }
            None => None,
        };
        let header = read_token(
            "the node token file",
            &token_file,
            true,
            "; remove it to join again with --join-token-file",
        )?
        .and_then(|t| bearer(&t));
        Ok(Credentials {
            token_file: Some(token_file),
            join,
            current: Mutex::new(Current {
                header,
                ..Current::default()
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The credential now and its generation.
    pub fn snapshot(&self) -> (u64, Option<AsciiMetadataValue>) {
        let c = self.lock();
        (c.generation, c.header.clone())
    }

    /// Whether the node must join before its first call.
    pub fn must_join(&self) -> bool {
        self.join.is_some() && self.lock().header.is_none()
    }

    /// `Bearer <join token>`, when one was given.
    pub fn join_header(&self) -> Option<&AsciiMetadataValue> {
        self.join.as_ref().map(|(_, h)| h)
    }

    /// Where the credential is kept, for messages.
    pub fn token_file(&self) -> String {
        self.token_file
            .as_ref()
            .map_or("(none)".into(), |p| p.display().to_string())
    }

    /// The join token's file, for messages.
    pub fn join_token_file(&self) -> String {
        self.join
            .as_ref()
            .map_or("(none)".into(), |(p, _)| p.display().to_string())
    }

    /// A call with the credential of `generation` was acknowledged.
    pub fn confirm(&self, generation: u64) {
        let mut c = self.lock();
        if c.generation == generation {
            c.confirmed = true;
        }
    }

    /// The scheduler refused a call made with the credential of
    /// `generation`: what to do. A credential is replaced by joining again
    /// once; one that was itself just obtained that way and refused before
    /// any call got through is not (the line says why instead).
    pub fn refused(&self, generation: u64, why: &str) -> Refusal {
        let mut c = self.lock();
        if c.generation != generation {
            return Refusal::Replaced;
        }
        if self.join.is_some() && (c.confirmed || !c.rejoined) {
            return Refusal::Rejoin;
        }
        if c.warned != Some(generation) {
            c.warned = Some(generation);
            let file = self.token_file();
            match (&c.header, &self.join) {
                (None, _) => tracing::error!(
                    "the scheduler refused this node's calls, which carry no credential ({why}); \
                     give a join token with --join-token-file"
                ),
                (Some(_), None) => tracing::error!(
                    "the scheduler refused this node's credential in {file}: {why}; \
                     give a join token with --join-token-file"
                ),
                (Some(_), Some((join, _))) => tracing::error!(
                    "the scheduler refused this node's credential in {file} ({why}), \
                     although it was just issued for the join token in {}; retrying",
                    join.display()
                ),
            }
        }
        Refusal::Retry
    }

    /// Keep `token`, issued by `Join`, as the credential: in the token
    /// file first (mode 0600, atomically), then for the calls.
    pub fn replace(&self, token: &str, after_refusal: bool) -> Result<(), String> {
        if gpuctl_security::token::id_of(token).is_err() {
            return Err("Join answered with something that is not a gpuctl token".into());
        }
        let header = bearer(token).ok_or("Join answered with a token that is not ASCII")?;
        if let Some(path) = &self.token_file {
            write_private(path, token.as_bytes())
                .map_err(|e| format!("cannot save the node token in {}: {e}", path.display()))?;
        }
        let mut c = self.lock();
        c.generation += 1;
        c.header = Some(header);
        c.confirmed = false;
        c.rejoined = after_refusal;
        Ok(())
    }
}

/// Write `data` to `path` with mode 0600 through a temporary file and a
/// rename, creating its folder if needed.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(data)?;
            f.write_all(b"\n")?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Puts `authorization: Bearer <credential>` on every call of a client.
#[derive(Debug, Clone)]
pub struct Bearer(pub Option<AsciiMetadataValue>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.0 {
            request.metadata_mut().insert("authorization", h.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_read_checked_and_written_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/node.token");
        let c = Credentials::load(file.clone(), None).unwrap();
        assert_eq!(c.snapshot(), (0, None));
        assert!(!c.must_join());
        let t = gpuctl_security::token::generate().token;
        c.replace(&t, false).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), t);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Credentials::load(file.clone(), None).unwrap();
        let (_, h) = again.snapshot();
        assert_eq!(h.unwrap().to_str().unwrap(), format!("Bearer {t}"));
        assert!(c.replace("nonsense", false).is_err());

        std::fs::write(&file, "nonsense\n").unwrap();
        let e = Credentials::load(file.clone(), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the node token file {file:?} does not hold a gpuctl token (gpuctl_<id>_<secret>); \
                 remove it to join again with --join-token-file"
            )
        );
        let join = dir.path().join("join");
        std::fs::write(&join, "\n").unwrap();
        let e = Credentials::load(dir.path().join("x"), Some(&join)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("the join token file {join:?} is empty")
        );
        let e = Credentials::load(dir.path().join("x"), Some(&dir.path().join("no"))).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot read the join token file"),
            "{e}"
        );
    }

    #[test]
    fn a_refused_credential_is_replaced_once() {
        let dir = tempfile::tempdir().unwrap();
        let join = dir.path().join("join");
        std::fs::write(&join, gpuctl_security::token::generate().token).unwrap();
        let c = Credentials::load(dir.path().join("node.token"), Some(&join)).unwrap();
        assert!(c.must_join());
        c.replace(&gpuctl_security::token::generate().token, false)
            .unwrap();
        assert!(!c.must_join());
        // A stale refusal (from before the replacement) changes nothing.
        assert_eq!(c.refused(0, "x"), Refusal::Replaced);
        // The first credential is refused: join again.
        assert_eq!(c.refused(1, "x"), Refusal::Rejoin);
        c.replace(&gpuctl_security::token::generate().token, true)
            .unwrap();
        // The new one is refused before any call got through: no more joins.
        assert_eq!(c.refused(2, "x"), Refusal::Retry);
        // Once confirmed, a later refusal may join again.
        c.confirm(2);
        assert_eq!(c.refused(2, "x"), Refusal::Rejoin);
        // Without a join token there is never a join.
        let plain = Credentials::none();
        assert_eq!(plain.refused(0, "x"), Refusal::Retry);
    }
}
