//! The outbox: sends the reconciler's task reports as `ReportTask`, each
//! retried until acknowledged, so a scheduler restart loses no report (the
//! scheduler applies them idempotently).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::Code;

use super::retry::{brief, Backoff, Quiet};
use super::servers::Servers;
use crate::assignment::TaskReport;
use crate::runtime::TaskKey;

/// Codes that retrying cannot fix: the report is dropped with a warning
/// rather than blocking every later report. A refused credential is not
/// one of them: it is replaced by joining again, then the report is sent.
fn permanent(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::OutOfRange
            | Code::Unimplemented
    )
}

/// Send reports, each retried (capped backoff) until acknowledged. The
/// reports of one task go in order; those of different tasks go
/// concurrently, so the scheduler commits many in one Raft round instead of
/// one round each (what a wide workflow fan-out needs). Returns once the
/// channel is closed and everything queued was sent or refused.
pub async fn outbox_loop(servers: Arc<Servers>, mut reports: mpsc::UnboundedReceiver<TaskReport>) {
    let quiet = Arc::new(std::sync::Mutex::new(Quiet::default()));
    let mut lanes: HashMap<TaskKey, mpsc::UnboundedSender<TaskReport>> = HashMap::new();
    let mut senders = tokio::task::JoinSet::new();
    while let Some(report) = reports.recv().await {
        while senders.try_join_next().is_some() {}
        let key = report.key.clone();
        let last = report.is_final();
        let lane = lanes.entry(key.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.spawn(send_lane(servers.clone(), rx, quiet.clone()));
            tx
        });
        let _ = lane.send(report);
        if last {
            // The task's final report: its lane ends once it is sent.
            lanes.remove(&key);
        }
    }
    lanes.clear();
    while senders.join_next().await.is_some() {}
}

/// Send one task's reports in order.
async fn send_lane(
    servers: Arc<Servers>,
    mut reports: mpsc::UnboundedReceiver<TaskReport>,
    quiet: Arc<std::sync::Mutex<Quiet>>,
) {
    let quiet = |f: &dyn Fn(&mut Quiet)| f(&mut quiet.lock().unwrap_or_else(|p| p.into_inner()));
    while let Some(report) = reports.recv().await {
        let request = report.to_proto();
        let mut backoff = Backoff::default();
        loop {
            let (call, mut client) = servers.client();
            match client.report_task(request.clone()).await {
                Ok(resp) => {
                    quiet(&|q| q.ok("ReportTask"));
                    servers.accepted(&call, resp.metadata());
                    break;
                }
                Err(s) if permanent(s.code()) => {
                    tracing::warn!(
                        "scheduler refused report {} {}: {}",
                        report.phase,
                        report.key,
                        s.message()
                    );
                    break;
                }
                Err(s) => {
                    let what = format!("ReportTask to {}", servers.url(call.index));
                    quiet(&|q| q.failed(&what, brief(&s)));
                    servers.failed(&call, &s).await;
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}
