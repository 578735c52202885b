//! Following `WatchAssignments`: every message is the full desired set
//! (level-triggered). This is the edge where assignments become typed: each
//! is converted to an [`Assignment`] as it arrives.

use std::sync::Arc;

use gpuctl_proto::v1::WatchAssignmentsRequest;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::reconciler::Event;
use super::retry::{brief, Backoff, Quiet};
use super::servers::Servers;
use crate::assignment::Assignment;

/// Follow `WatchAssignments`, reconnecting with backoff, and hand every
/// desired set to the reconciler the moment it arrives.
pub async fn watch_loop(servers: Arc<Servers>, node: String, events: mpsc::UnboundedSender<Event>) {
    let mut backoff = Backoff::default();
    let mut quiet = Quiet::default();
    loop {
        let (call, mut client) = servers.client();
        let what = format!("WatchAssignments from {}", servers.url(call.index));
        match client
            .watch_assignments(WatchAssignmentsRequest { node: node.clone() })
            .await
        {
            Ok(resp) => {
                let answer = resp.metadata().clone();
                let mut stream = resp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(msg)) => {
                            let received = Instant::now();
                            quiet.ok(&what);
                            servers.accepted(&call, &answer);
                            backoff.reset();
                            tracing::debug!(
                                "assignments version {}: {} tasks",
                                msg.version,
                                msg.tasks.len()
                            );
                            if events
                                .send(Event::Desired {
                                    tasks: msg.tasks.into_iter().map(Assignment::from).collect(),
                                    received,
                                })
                                .is_err()
                            {
                                return;
                            }
                        }
                        Ok(None) => {
                            quiet.failed(&what, "the scheduler ended the stream");
                            break;
                        }
                        Err(s) => {
                            quiet.failed(&what, brief(&s));
                            servers.failed(&call, &s).await;
                            break;
                        }
                    }
                }
            }
            Err(s) => {
                quiet.failed(&what, brief(&s));
                servers.failed(&call, &s).await;
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
