//! Taking back, when the daemon starts, the tasks whose supervisors
//! outlived its previous run (see [`crate::supervisor`]).

use gpuctl_common::api::TaskPhase;
use gpuctl_proto::v1::StepIo;
use tokio::sync::watch;

use super::{Event, LocalState, LocalTask, Reconciler, StepRun};
use crate::secrets;
use crate::steps;
use crate::supervisor::record::{Meta, TaskDir};
use crate::supervisor::{self, Found};

/// What [`Reconciler::adopt`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// Tasks still running under their supervisor, taken back as `Running`.
    pub running: usize,
    /// Tasks that ended while no daemon ran; their exits are reported.
    pub ended: usize,
}

impl Reconciler {
    /// Take back every task a previous run left under a supervisor: a live
    /// one is `Running` again (reported so, with its pid and port; never
    /// started twice), one that ended meanwhile is reported with its
    /// recorded exit (or as failed when its supervisor died without one).
    /// The secret files and folders of tasks that are not taken back are
    /// removed. Call once, before [`Reconciler::run`].
    pub fn adopt(&mut self) -> Adopted {
        let mut adopted = Adopted::default();
        let mut keep_secrets = Vec::new();
        let mut keep_scratch = Vec::new();
        let mut keep_tmp = Vec::new();
        for found in self.cfg.supervisors.scan() {
            let (meta, mut task, ended) = match found {
                Found::Unknown { dir, why } => {
                    tracing::warn!("removing the unreadable task record {:?}: {why}", dir.dir);
                    dir.remove();
                    continue;
                }
                Found::Live {
                    meta,
                    dir,
                    supervisor,
                    task,
                } => {
                    let (tx, rx) = watch::channel(false);
                    let events = self.events.clone();
                    let key = meta.key();
                    let waiter_dir = dir.clone();
                    tokio::spawn(async move {
                        let exit = supervisor::wait_adopted(waiter_dir, supervisor, task).await;
                        let _ = tx.send(true);
                        let _ = events.send(Event::Exited { key, exit });
                    });
                    let pid = task.map(|t| t.pid);
                    tracing::info!(
                        "{}: still running (pid {}, supervisor {}); taken back",
                        meta.key(),
                        pid.unwrap_or(0),
                        supervisor.pid
                    );
                    adopted.running += 1;
                    let t = self.adopted_task(&meta, dir, Some(supervisor.pid), pid, Some(rx));
                    (meta, t, None)
                }
                Found::Ended { meta, dir, exit } => {
                    tracing::info!(
                        "{}: ended while the daemon was down: {}",
                        meta.key(),
                        if exit.message.is_empty() {
                            "succeeded"
                        } else {
                            &exit.message
                        }
                    );
                    adopted.ended += 1;
                    let t = self.adopted_task(&meta, dir, None, None, None);
                    (meta, t, Some(exit))
                }
            };
            let key = meta.key();
            keep_secrets.push(secrets::task_dir(&self.cfg.secrets_dir, &key));
            keep_scratch.extend(meta.scratch.clone());
            // Its private `/tmp` (outputs of a step are read from it).
            task.tmp = self
                .cfg
                .isolation
                .task_tmp(&key.job, key.task_index, key.attempt);
            keep_tmp.extend(task.tmp.as_ref().map(|t| t.dir.clone()));
            self.metrics.tasks_running.inc();
            self.live.insert(key.clone());
            self.metrics.tasks.track(key.clone());
            let (pid, port) = (task.pid.unwrap_or(0), task.port);
            self.tasks.insert(key.clone(), task);
            match ended {
                None => self.report_with(&key, TaskPhase::Running, 0, "", pid, port, None),
                Some(exit) => {
                    let _ = self.events.send(Event::Exited { key, exit });
                }
            }
        }
        supervisor::remove_others(&self.cfg.secrets_dir, &keep_secrets);
        supervisor::remove_others(&self.cfg.tasks_dir, &keep_scratch);
        if let Some(root) = self.cfg.isolation.tmp_root() {
            supervisor::remove_others(root, &keep_tmp);
        }
        self.update_busy();
        adopted
    }

    /// The table entry of a task taken back, `Running` until its exit is handled.
    fn adopted_task(
        &self,
        meta: &Meta,
        dir: TaskDir,
        supervisor: Option<u32>,
        pid: Option<u32>,
        exited: Option<watch::Receiver<bool>>,
    ) -> LocalTask {
        LocalTask {
            state: LocalState::Running,
            pid,
            supervisor,
            dir: Some(dir),
            received: None,
            gpus: meta.gpus.clone(),
            milli: meta.milli.clone(),
            waiting: None,
            port: meta.port,
            exited,
            step: meta.step.as_ref().and_then(|s| {
                let io = match <StepIo as prost::Message>::decode(s.io.as_slice()) {
                    Ok(io) => io,
                    Err(e) => {
                        tracing::warn!("{}: its step record is unreadable ({e})", meta.key());
                        return None;
                    }
                };
                Some(Box::new(StepRun {
                    io,
                    prepared: steps::Prepared {
                        command: s.command.clone(),
                        working_dir: s.working_dir.clone(),
                        stdout: s.stdout.clone(),
                        tmp: self
                            .cfg
                            .isolation
                            .task_tmp(&meta.job, meta.task_index, meta.attempt),
                    },
                    log: s.log.clone(),
                    dir: s.dir.clone(),
                    uid: s.uid,
                }))
            }),
            scratch: meta.scratch.clone(),
            tmp: None,
            note: None,
        }
    }
}
