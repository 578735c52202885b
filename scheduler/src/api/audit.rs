//! The audit log: every mutating call this replica received, accepted or
//! refused, as one JSON line in `DATA_DIR/audit.log` (time, subject, verb,
//! kind, name, result, message). Bounded: at [`MAX_BYTES`] the file moves to
//! `audit.log.1` (replacing the one before) and a new one starts.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tonic::Status;

/// Size at which the log is rotated.
pub const MAX_BYTES: u64 = 16 << 20;

/// One audited call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub time_ms: u64,
    pub subject: String,
    pub verb: String,
    pub kind: String,
    pub name: String,
    /// "ok", "denied" (unauthenticated or not allowed) or "error".
    pub result: String,
    #[serde(default)]
    pub message: String,
}

impl Entry {
    /// The entry for a call's outcome.
    pub fn of<T>(
        subject: &str,
        verb: &str,
        kind: &str,
        name: &str,
        r: &Result<T, Status>,
    ) -> Entry {
        let (result, message) = match r {
            Ok(_) => ("ok", String::new()),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                ) =>
            {
                ("denied", s.message().to_string())
            }
            Err(s) => ("error", s.message().to_string()),
        };
        Entry {
            time_ms: gpuctl_common::now_ms(),
            subject: subject.to_string(),
            verb: verb.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            result: result.to_string(),
            message,
        }
    }
}

/// The append-only log file of one replica.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    file: Mutex<Option<(File, u64)>>,
}

impl AuditLog {
    /// The log at `dir/audit.log` (opened on first write).
    pub fn new(dir: &Path) -> AuditLog {
        AuditLog::with_limit(dir, MAX_BYTES)
    }

    fn with_limit(dir: &Path, max_bytes: u64) -> AuditLog {
        AuditLog {
            path: dir.join("audit.log"),
            max_bytes,
            file: Mutex::new(None),
        }
    }

    fn rotated(&self) -> PathBuf {
        self.path.with_extension("log.1")
    }

    /// Append one entry; a failure to write is logged, never fatal to the call.
    pub fn record(&self, e: &Entry) {
        if let Err(err) = self.write(e) {
            tracing::warn!("audit log {}: {err}", self.path.display());
        }
    }

    fn write(&self, e: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let len = f.metadata()?.len();
            *guard = Some((f, len));
        }
        if let Some((_, len)) = guard.as_ref() {
            if *len > 0 && len + line.len() as u64 > self.max_bytes {
                *guard = None;
                std::fs::rename(&self.path, self.rotated())?;
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                *guard = Some((f, 0));
            }
        }
        if let Some((f, len)) = guard.as_mut() {
            f.write_all(&line)?;
            *len += line.len() as u64;
        }
        Ok(())
    }

    /// The last `limit` entries (of `subject` when not empty), oldest first.
    pub fn tail(&self, limit: usize, subject: &str) -> std::io::Result<Vec<Entry>> {
        let _guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for path in [self.rotated(), self.path.clone()] {
            let f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in BufReader::new(f).lines() {
                // A torn last line (a crash mid-write) is skipped.
                let Ok(e) = serde_json::from_str::<Entry>(&line?) else {
                    continue;
                };
                if subject.is_empty() || e.subject == subject {
                    out.push(e);
                }
            }
        }
        let skip = out.len().saturating_sub(limit);
        Ok(out.split_off(skip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64, subject: &str) -> Entry {
        Entry {
            time_ms: i,
            subject: subject.into(),
            verb: "apply".into(),
            kind: "job".into(),
            name: format!("j{i}"),
            result: "ok".into(),
            message: String::new(),
        }
    }

    #[test]
    fn entries_are_appended_filtered_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let one = serde_json::to_vec(&entry(0, "alice")).unwrap().len() as u64 + 1;
        let log = AuditLog::with_limit(dir.path(), one * 3);
        for i in 0..5 {
            log.record(&entry(i, if i % 2 == 0 { "alice" } else { "bob" }));
        }
        assert!(dir.path().join("audit.log.1").exists());
        let all = log.tail(100, "").unwrap();
        let times: Vec<u64> = all.iter().map(|e| e.time_ms).collect();
        assert_eq!(times, vec![0, 1, 2, 3, 4]);
        let alice: Vec<u64> = log
            .tail(2, "alice")
            .unwrap()
            .iter()
            .map(|e| e.time_ms)
            .collect();
        assert_eq!(alice, vec![2, 4]);
        for i in 5..8 {
            log.record(&entry(i, "bob"));
        }
        // The oldest rotated file is gone: at most two files' worth remain.
        let left: Vec<u64> = log
            .tail(100, "")
            .unwrap()
            .iter()
            .map(|e| e.time_ms)
            .collect();
        assert_eq!(left, vec![3, 4, 5, 6, 7]);
    }

    #[test]
    fn outcomes_are_classified() {
        let ok: Result<(), Status> = Ok(());
        assert_eq!(Entry::of("a", "apply", "job", "j", &ok).result, "ok");
        let denied: Result<(), Status> = Err(Status::permission_denied("no"));
        let e = Entry::of("a", "apply", "job", "j", &denied);
        assert_eq!((e.result.as_str(), e.message.as_str()), ("denied", "no"));
        let err: Result<(), Status> = Err(Status::not_found("gone"));
        assert_eq!(Entry::of("a", "apply", "job", "j", &err).result, "error");
    }
}
