//! The `NodeAgent` gRPC service: streams task log files to the scheduler,
//! which proxies them to `gpuctl logs`.
//!
//! With `follow`, the stream polls the file for new output until the task's
//! process has exited and every byte has been sent, then ends.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpuctl_proto::v1::node_agent_server::NodeAgent;
use gpuctl_proto::v1::{LogChunk, ReadLogsRequest};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::runtime::{job_dir_name, log_path, TaskKey};

/// Chunk size of a log stream.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// How often a followed log is checked for new output.
pub const FOLLOW_POLL: Duration = Duration::from_millis(50);

/// The last lines a task wrote, for the message of a failed task (as
/// Kubernetes' `FallbackToLogsOnError`): at most `lines` non-empty lines and
/// `max_bytes` bytes from the end of its log, joined with ` | `; `None` when the
/// log is empty or unreadable.
pub fn last_output(log: &Path, lines: usize, max_bytes: usize) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(log).ok()?;
    let len = f.metadata().ok()?.len();
    // Enough of the end for a short backtrace below the error line.
    let window = (max_bytes as u64 * 4).max(16 << 10);
    f.seek(SeekFrom::Start(len.saturating_sub(window))).ok()?;
    let mut buf = Vec::new();
    f.take(window).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    // A backtrace ends the output of many crashes; the error is above it: a
    // Rust panic (`panicked at`, then its message) or a returned `Error:`.
    let error_at = all
        .iter()
        .rposition(|l| l.contains("panicked at") || l.starts_with("Error: "));
    let picked: Vec<&str> = match error_at {
        // The error and its causes (anyhow's `Caused by:` list), up to the
        // backtrace.
        Some(i) => all[i..]
            .iter()
            .take_while(|l| {
                !l.starts_with("Stack backtrace:")
                    && !l.starts_with("stack backtrace:")
                    && !l.starts_with("note: run with")
            })
            .filter(|l| **l != "Caused by:")
            .take(lines + 1)
            .copied()
            .collect(),
        None => all[all.len().saturating_sub(lines)..].to_vec(),
    };
    let joined = picked.join(" | ");
    if joined.is_empty() {
        return None;
    }
    if joined.len() <= max_bytes {
        return Some(joined);
    }
    // Keep the end (the error is usually last), cut on a character boundary.
    let mut start = joined.len() - max_bytes;
    while !joined.is_char_boundary(start) {
        start += 1;
    }
    Some(format!("…{}", &joined[start..]))
}

/// The tasks whose main process is running, shared by the agent (writer) and
/// the log service (reader: a followed log ends when its task is not here).
#[derive(Debug, Clone, Default)]
pub struct LiveTasks(Arc<Mutex<HashSet<TaskKey>>>);

impl LiveTasks {
    pub fn insert(&self, key: TaskKey) {
        self.lock().insert(key);
    }
    pub fn remove(&self, key: &TaskKey) {
        self.lock().remove(key);
    }
    pub fn contains(&self, key: &TaskKey) -> bool {
        self.lock().contains(key)
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<TaskKey>> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// Serves `ReadLogs` from the daemon's log folder.
#[derive(Debug, Clone)]
pub struct LogService {
    logs_dir: PathBuf,
    live: LiveTasks,
}

impl LogService {
    pub fn new(logs_dir: PathBuf, live: LiveTasks) -> Self {
        LogService { logs_dir, live }
    }
}

/// The newest attempt of a task with a log file here, if any.
fn latest_attempt(logs: &Path, job: &str, task_index: u32) -> Option<u32> {
    let dir = logs.join(job_dir_name(job).ok()?);
    let prefix = format!("task-{task_index}-attempt-");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix(&prefix)?
                .strip_suffix(".log")?
                .parse::<u32>()
                .ok()
        })
        .max()
}

#[tonic::async_trait]
impl NodeAgent for LogService {
    type ReadLogsStream = ReceiverStream<Result<LogChunk, Status>>;

    async fn read_logs(
        &self,
        request: Request<ReadLogsRequest>,
    ) -> Result<Response<Self::ReadLogsStream>, Status> {
        let req = request.into_inner();
        if let Err(e) = job_dir_name(&req.job) {
            return Err(Status::invalid_argument(e.to_string()));
        }
        // Attempt 0: the newest attempt this node has a log of.
        let attempt = if req.attempt == 0 {
            latest_attempt(&self.logs_dir, &req.job, req.task_index).ok_or_else(|| {
                Status::not_found(format!(
                    "no log of job {:?} task {} on this node",
                    req.job, req.task_index
                ))
            })?
        } else {
            req.attempt
        };
        let key = TaskKey {
            job: req.job.clone(),
            task_index: req.task_index,
            attempt,
        };
        let path =
            log_path(&self.logs_dir, &key).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Status::not_found(format!(
                    "no log of job {:?} task {} attempt {} on this node",
                    key.job, key.task_index, key.attempt
                )))
            }
            Err(e) => {
                return Err(Status::internal(format!(
                    "opening the log of {key} failed: {e}"
                )))
            }
        };
        let (tx, rx) = mpsc::channel(4);
        let live = self.live.clone();
        tokio::spawn(stream_file(file, key, req.follow, live, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Send the file in chunks; when following, poll until the task is not live
/// and the file is drained. Ends when the receiver goes away.
async fn stream_file(
    mut file: tokio::fs::File,
    key: TaskKey,
    follow: bool,
    live: LiveTasks,
    tx: mpsc::Sender<Result<LogChunk, Status>>,
) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        // Look before reading: if the task was already over, a read that
        // reaches the end has seen everything it will ever write.
        let was_live = follow && live.contains(&key);
        match file.read(&mut buf).await {
            Ok(0) => {
                if !was_live {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_POLL) => {}
                    _ = tx.closed() => return,
                }
            }
            Ok(n) => {
                let chunk = LogChunk {
                    data: buf[..n].to_vec(),
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx
                    .send(Err(Status::internal(format!(
                        "reading the log of {key} failed: {e}"
                    ))))
                    .await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    async fn collect(svc: &LogService, req: ReadLogsRequest) -> Result<Vec<u8>, Status> {
        let mut stream = svc.read_logs(Request::new(req)).await?.into_inner();
        let mut out = Vec::new();
        let read = async {
            while let Some(chunk) = stream.next().await {
                out.extend(chunk?.data);
            }
            Ok::<_, Status>(())
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("log stream ended")?;
        Ok(out)
    }

    #[test]
    fn last_output_is_the_end_of_the_log_in_a_few_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("t.log");
        assert_eq!(last_output(&log, 3, 100), None, "no log");
        std::fs::write(&log, "").unwrap();
        assert_eq!(last_output(&log, 3, 100), None, "empty log");
        let mut text = "noise\n".repeat(5000);
        text.push_str("loading model\n\n  no model file at /m/x.onnx  \n");
        std::fs::write(&log, &text).unwrap();
        assert_eq!(
            last_output(&log, 2, 100).as_deref(),
            Some("loading model | no model file at /m/x.onnx")
        );
        // A crash with a backtrace: the error above it.
        std::fs::write(
            &log,
            "Error: cannot start\n\nCaused by:\n    0: loading /m/x.onnx\n    1: not found\n\nStack backtrace:\n   0: main\n   1: _start\n",
        )
        .unwrap();
        assert_eq!(
            last_output(&log, 3, 100).as_deref(),
            Some("Error: cannot start | 0: loading /m/x.onnx | 1: not found")
        );
        std::fs::write(
            &log,
            "thread 'main' panicked at src/main.rs:2:5:\nbad model\nstack backtrace:\n   0: x\n",
        )
        .unwrap();
        assert_eq!(
            last_output(&log, 3, 100).as_deref(),
            Some("thread 'main' panicked at src/main.rs:2:5: | bad model")
        );
        // Too long: the end is kept, cut on a character boundary.
        std::fs::write(&log, format!("{}é tail\n", "x".repeat(50))).unwrap();
        assert_eq!(last_output(&log, 3, 7).as_deref(), Some("…é tail"));
        assert_eq!(last_output(&log, 3, 6).as_deref(), Some("… tail"));
    }

    fn req(job: &str, attempt: u32, follow: bool) -> ReadLogsRequest {
        ReadLogsRequest {
            job: job.into(),
            task_index: 0,
            attempt,
            follow,
        }
    }

    #[tokio::test]
    async fn reads_whole_file_and_latest_attempt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("train")).unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("train/task-0-attempt-1.log"), &big).unwrap();
        std::fs::write(dir.path().join("train/task-0-attempt-2.log"), b"second\n").unwrap();
        let svc = LogService::new(dir.path().to_path_buf(), LiveTasks::default());
        assert_eq!(collect(&svc, req("train", 1, false)).await.unwrap(), big);
        assert_eq!(
            collect(&svc, req("train", 0, true)).await.unwrap(),
            b"second\n"
        );
    }

    #[tokio::test]
    async fn unknown_task_and_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let svc = LogService::new(dir.path().to_path_buf(), LiveTasks::default());
        let err = collect(&svc, req("nope", 1, false)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert_eq!(
            err.message(),
            "no log of job \"nope\" task 0 attempt 1 on this node"
        );
        let err = collect(&svc, req("nope", 0, false)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        for bad in ["..", "../etc", "a/b"] {
            let err = collect(&svc, req(bad, 1, false)).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }

    #[tokio::test]
    async fn follow_ends_when_the_task_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train/task-0-attempt-1.log");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"one\n").unwrap();
        let live = LiveTasks::default();
        let key = TaskKey {
            job: "train".into(),
            task_index: 0,
            attempt: 1,
        };
        live.insert(key.clone());
        let svc = LogService::new(dir.path().to_path_buf(), live.clone());
        let reader = tokio::spawn(async move { collect(&svc, req("train", 1, true)).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"two\n").unwrap();
        }
        live.remove(&key);
        let out = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(out, b"one\ntwo\n");
    }
}
