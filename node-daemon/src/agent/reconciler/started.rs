//! What the reconciler does when a task's supervisor says whether the
//! task started.

use gpuctl_common::api::TaskPhase;

use super::{LocalState, LocalTask, Reconciler};
use crate::runtime::{StartError, TaskKey};
use crate::secrets;

impl Reconciler {
    /// A task that could not start: its secrets go, and it is reported
    /// failed (`report`: unless nobody wants to hear).
    pub(super) fn start_failed(&mut self, key: &TaskKey, e: &StartError, report: bool) {
        tracing::warn!("{key}: {}", e.message);
        secrets::remove(&self.cfg.secrets_dir, key);
        // Refusals (an owner who may not run here) count as failed.
        self.metrics.task_exits.with_label_values(&["failed"]).inc();
        if report {
            self.report(key, TaskPhase::Failed, e.exit_code, &e.message, 0);
        }
    }

    /// The supervisor of `key` said whether its task started.
    pub(super) fn on_started(
        &mut self,
        key: TaskKey,
        ready: Result<u32, StartError>,
        supervisor: u32,
    ) {
        let Some(t) = self.tasks.get_mut(&key) else {
            return;
        };
        t.supervisor = Some(supervisor);
        let wanted = t.state == LocalState::Running;
        match ready {
            Ok(pid) => {
                t.pid = Some(pid);
                let port = t.port;
                let note = t.note.take().unwrap_or_default();
                if let Some(received) = t.received.take() {
                    self.metrics
                        .start_latency
                        .observe(received.elapsed().as_secs_f64());
                }
                self.metrics.task_starts.inc();
                self.metrics.tasks_running.inc();
                tracing::info!("{key}: started pid {pid}");
                self.live.insert(key.clone());
                self.metrics.tasks.track(key.clone());
                if wanted {
                    self.report_with(&key, TaskPhase::Running, 0, &note, pid, port, None);
                }
            }
            Err(e) => {
                if let Some(dir) = t.scratch.take() {
                    let _ = std::fs::remove_dir_all(dir);
                }
                if let Some(s) = t.step.take() {
                    let _ = std::fs::remove_dir_all(&s.dir);
                }
                if let Some(d) = t.dir.take() {
                    d.remove();
                }
                if let Some(tmp) = t.tmp.take() {
                    tmp.remove();
                }
                self.start_failed(&key, &e, wanted);
                if self.desired.contains(&key) || !self.desired_seen {
                    self.tasks.insert(key, LocalTask::done());
                } else {
                    self.tasks.remove(&key);
                }
                self.start_waiting();
                self.update_busy();
            }
        }
    }
}
