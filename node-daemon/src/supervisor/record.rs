//! A task's folder under `<work-dir>/supervisors/`, the files in it and
//! what they mean. Every file is written whole (a temporary file, then a
//! rename), so a reader sees it complete or not at all.
//!
//! ```text
//! <work-dir>/supervisors/<job>.<task>.<attempt>/
//!   meta.json       the daemon's: key, GPUs, port, folders, workflow step   (before the supervisor starts)
//!   state.json      the supervisor's, once the task started: its pid and the task's (+ start times)
//!   exit.json       the supervisor's: how the task ended (runtime::Exit)     (last)
//!   supervisor.log  the supervisor's standard error
//! ```
//!
//! A process is named by its pid and its start time (field 22 of
//! `/proc/<pid>/stat`), so a pid reused by another process is never taken
//! for the one recorded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::owner::RunAs;
use crate::runtime::{self, job_dir_name, Exit, StartSpec, TaskKey};

/// The daemon's part of a task's record: what it needs to take the task
/// back after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub job: String,
    pub task_index: u32,
    pub attempt: u32,
    /// GPU indices the task holds, and the thousandths of each.
    pub gpus: Vec<u32>,
    pub milli: Vec<u32>,
    /// `$PORT` of a serving task (0: none).
    pub port: u16,
    /// The folder made for a task run as its owner, removed when it exits.
    pub scratch: Option<PathBuf>,
    /// A workflow step: what to collect when it exits.
    pub step: Option<StepMeta>,
    /// The container it runs in, removed should its supervisor die
    /// without stopping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<crate::container::ContainerSpec>,
}

impl Meta {
    pub fn key(&self) -> TaskKey {
        TaskKey {
            job: self.job.clone(),
            task_index: self.task_index,
            attempt: self.attempt,
        }
    }
}

/// A workflow step's files, as the reconciler keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepMeta {
    /// The step's `StepIo` message, protobuf-encoded.
    pub io: Vec<u8>,
    pub command: Vec<String>,
    pub working_dir: PathBuf,
    pub stdout: Option<PathBuf>,
    pub log: PathBuf,
    pub dir: PathBuf,
    pub uid: Option<u32>,
}

/// A [`StartSpec`] that owns its parts, to travel to the supervisor as
/// JSON on its standard input (never written to disk: the environment may
/// hold secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedStartSpec {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: String,
    pub log: PathBuf,
    pub stdout: Option<PathBuf>,
    pub run_as: Option<RunAs>,
    /// Its cgroup and `/tmp`, set up by the supervisor as it starts the task.
    pub isolation: Option<crate::isolation::TaskIsolation>,
    /// The image it runs in under podman; `None`: a process.
    #[serde(default)]
    pub container: Option<crate::container::ContainerSpec>,
}

impl OwnedStartSpec {
    pub fn new(spec: &StartSpec<'_>) -> Self {
        OwnedStartSpec {
            command: spec.command.to_vec(),
            env: spec.env.clone(),
            working_dir: spec.working_dir.to_string(),
            log: spec.log.to_path_buf(),
            stdout: spec.stdout.map(Path::to_path_buf),
            run_as: spec.run_as.cloned(),
            isolation: spec.isolation.cloned(),
            container: spec.container.cloned(),
        }
    }

    pub fn borrow(&self) -> StartSpec<'_> {
        StartSpec {
            command: &self.command,
            env: &self.env,
            working_dir: &self.working_dir,
            log: &self.log,
            stdout: self.stdout.as_deref(),
            run_as: self.run_as.as_ref(),
            isolation: self.isolation.as_ref(),
            container: self.container.as_ref(),
        }
    }
}

/// What a warm supervisor reads on its standard input.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WarmStart {
    pub dir: PathBuf,
    pub spec: OwnedStartSpec,
}

/// The line a warm supervisor says once its task's process waits.
pub const WARM_READY: &str = "{\"warm\":\"ready\"}";

/// One process: its pid and its start time in clock ticks since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: u32,
    pub start: u64,
}

impl ProcId {
    /// The process `pid` now, if it exists.
    pub fn of(pid: u32) -> Option<ProcId> {
        runtime::start_time(pid).map(|start| ProcId { pid, start })
    }

    /// Whether this very process still runs (a zombie does not).
    pub fn alive(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("Z");
        let start = fields.nth(18).and_then(|s| s.parse::<u64>().ok());
        state != "Z" && state != "X" && start == Some(self.start)
    }
}

/// The supervisor's `state.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub supervisor: ProcId,
    /// The task's main process, which leads its process group; `None`
    /// until it started.
    pub task: Option<ProcId>,
}

/// What the supervisor tells the daemon on its standard output once it
/// has tried to start the task (one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ready {
    Started { pid: u32 },
    Failed { exit_code: i32, message: String },
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("reading {path:?}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path:?} is not a valid record: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The folder of one task's supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDir {
    pub dir: PathBuf,
}

impl TaskDir {
    /// `<root>/<job>.<task>.<attempt>`; `None` for a job name that cannot
    /// be a folder name.
    pub fn new(root: &Path, key: &TaskKey) -> Option<TaskDir> {
        let job = job_dir_name(&key.job).ok()?;
        Some(TaskDir {
            dir: root.join(format!("{job}.{}.{}", key.task_index, key.attempt)),
        })
    }

    pub fn meta(&self) -> PathBuf {
        self.dir.join("meta.json")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }

    pub fn read_meta(&self) -> Result<Meta, RecordError> {
        read_json(&self.meta())
    }
    pub fn read_state(&self) -> Result<State, RecordError> {
        read_json(&self.state())
    }
    /// `Ok(None)` while the task has not ended.
    pub fn read_exit(&self) -> Result<Option<Exit>, RecordError> {
        match read_json(&self.exit()) {
            Ok(e) => Ok(Some(e)),
            Err(RecordError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn write_meta(&self, meta: &Meta) -> std::io::Result<()> {
        write_json(&self.meta(), meta)
    }
    pub fn write_state(&self, state: &State) -> std::io::Result<()> {
        write_json(&self.state(), state)
    }
    pub fn write_exit(&self, exit: &Exit) -> std::io::Result<()> {
        write_json(&self.exit(), exit)
    }

    /// Forget the task (it has ended and been reported).
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every task folder under `root` (none when it does not exist).
pub fn scan(root: &Path) -> Vec<TaskDir> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<TaskDir> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| TaskDir { dir: e.path() })
        .collect();
    dirs.sort_by(|a, b| a.dir.cmp(&b.dir));
    dirs
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, RecordError> {
    let text = std::fs::read(path).map_err(|source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| RecordError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let data = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    write_atomically(path, &data)
}

/// Write `data` to `path` via a temporary file and a rename, so readers see
/// either nothing or the whole file.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TaskKey {
        TaskKey {
            job: "train".into(),
            task_index: 1,
            attempt: 2,
        }
    }

    #[test]
    fn records_round_trip_and_a_missing_exit_is_none() {
        let root = tempfile::tempdir().unwrap();
        let d = TaskDir::new(root.path(), &key()).unwrap();
        assert_eq!(d.dir, root.path().join("train.1.2"));
        std::fs::create_dir_all(&d.dir).unwrap();
        let meta = Meta {
            job: "train".into(),
            task_index: 1,
            attempt: 2,
            gpus: vec![0, 3],
            milli: vec![1000, 500],
            port: 20001,
            scratch: None,
            step: None,
            container: None,
        };
        d.write_meta(&meta).unwrap();
        assert_eq!(d.read_meta().unwrap(), meta);
        assert_eq!(d.read_meta().unwrap().key(), key());
        assert!(d.read_exit().unwrap().is_none());
        let exit = Exit {
            code: 3,
            message: "exited with code 3".into(),
            usage: Some(crate::isolation::cgroup::Usage {
                cpu_ms: 12,
                ..Default::default()
            }),
        };
        d.write_exit(&exit).unwrap();
        assert_eq!(d.read_exit().unwrap(), Some(exit));
        std::fs::write(d.state(), "{not json").unwrap();
        let e = d.read_state().unwrap_err().to_string();
        assert!(
            e.contains("state.json") && e.contains("not a valid record"),
            "{e}"
        );
        assert_eq!(scan(root.path()), vec![d.clone()]);
        d.remove();
        assert!(scan(root.path()).is_empty());
        assert!(TaskDir::new(
            root.path(),
            &TaskKey {
                job: "../x".into(),
                ..key()
            }
        )
        .is_none());
    }

    #[test]
    fn a_process_is_its_pid_and_start_time() {
        let me = ProcId::of(std::process::id()).unwrap();
        assert!(me.alive());
        let reused = ProcId {
            start: me.start + 1,
            ..me
        };
        assert!(!reused.alive(), "same pid, another start time");
        assert!(!ProcId {
            pid: 999_999_999,
            start: 1
        }
        .alive());
    }

    #[test]
    fn the_start_spec_travels_whole() {
        let env: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        let command = vec!["sh".to_string(), "-c".to_string(), "true".to_string()];
        let log = PathBuf::from("/w/logs/j/task-0-attempt-1.log");
        let spec = StartSpec {
            command: &command,
            env: &env,
            working_dir: "/tmp",
            log: &log,
            stdout: None,
            run_as: None,
            isolation: None,
            container: None,
        };
        let owned = OwnedStartSpec::new(&spec);
        let back: OwnedStartSpec =
            serde_json::from_str(&serde_json::to_string(&owned).unwrap()).unwrap();
        assert_eq!(back, owned);
        let b = back.borrow();
        assert_eq!(
            (b.command, b.env, b.working_dir),
            (&command[..], &env, "/tmp")
        );
        let line = serde_json::to_string(&Ready::Started { pid: 7 }).unwrap();
        assert_eq!(line, r#"{"started":{"pid":7}}"#);
    }
}
