//! The artifact sweep: removes the stored artifacts of workflows the cluster
//! no longer has.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::retry::{brief, Quiet};
use super::servers::Servers;
use crate::steps;

/// Every `every`, remove the artifacts of workflows the cluster no longer
/// has (deleted by hand or by their TTL). Only folders unchanged for `every`
/// are asked about, so a workflow created a moment ago is never mistaken for
/// a deleted one; nothing is removed while no scheduler answers.
pub async fn artifact_sweep_loop(servers: Arc<Servers>, artifact_dir: PathBuf, every: Duration) {
    let mut quiet = Quiet::default();
    let root = steps::FsArtifactStore::new(artifact_dir);
    loop {
        tokio::time::sleep(every).await;
        let store = root.clone();
        let candidates = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.workflows_quiet_for(every))
                .await
                .unwrap_or_default()
        };
        if candidates.is_empty() {
            continue;
        }
        let (call, mut client) = servers.client();
        let req = gpuctl_proto::v1::GoneWorkflowsRequest {
            workflows: candidates,
        };
        let gone = match client.gone_workflows(req).await {
            Ok(resp) => {
                quiet.ok("GoneWorkflows");
                servers.accepted(&call, resp.metadata());
                resp.into_inner().gone
            }
            Err(s) => {
                quiet.failed(
                    &format!("GoneWorkflows to {}", servers.url(call.index)),
                    brief(&s),
                );
                servers.failed(&call, &s).await;
                continue;
            }
        };
        let _ = tokio::task::spawn_blocking(move || {
            let mut store = store;
            for wf in gone {
                match gpuctl_common::artifact::ArtifactStore::delete_workflow(&mut store, &wf) {
                    Ok(()) => tracing::info!(workflow = %wf, "removed the artifacts of a deleted workflow"),
                    Err(e) => tracing::warn!("{e}"),
                }
            }
        })
        .await;
    }
}
