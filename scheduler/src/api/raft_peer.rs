//! The Raft peer service: Raft messages from the other replicas, and the
//! writes a follower forwards to this replica when it leads.

use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::raft_server::Raft as RaftService;
use protobuf::Message as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert::to_status;
use super::proposer::{applied_json, NO_ANSWER};
use super::Api;
use crate::raft::RaftHandle;
use crate::state::Envelope;

/// Hand a peer's batch of Raft messages to this replica's Raft node.
fn step_batch(raft: &RaftHandle, b: pb::RaftBatch) -> Result<(), Status> {
    for bytes in b.messages {
        match raft::prelude::Message::parse_from_bytes(&bytes) {
            Ok(m) => raft.step(m),
            Err(e) => {
                return Err(Status::invalid_argument(format!(
                    "undecodable raft message from replica {}: {e}",
                    b.from
                )))
            }
        }
    }
    Ok(())
}

/// Peer-to-peer service: Raft messages in, forwarded writes to the leader.
#[derive(Clone)]
pub struct RaftPeerService {
    pub api: Api,
    /// With TLS on: only callers presenting a certificate from the
    /// cluster's CA (the other replicas) may call.
    pub require_client_cert: bool,
}

impl RaftPeerService {
    fn check_peer<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if self.require_client_cert && req.peer_certs().is_none_or(|c| c.is_empty()) {
            return Err(Status::permission_denied(
                "raft peer calls need a client certificate from the cluster CA",
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftService for RaftPeerService {
    async fn step(&self, req: Request<pb::RaftBatch>) -> Result<Response<pb::RaftAck>, Status> {
        self.check_peer(&req)?;
        step_batch(&self.api.raft, req.into_inner())?;
        Ok(Response::new(pb::RaftAck {}))
    }

    type StepStreamStream = ReceiverStream<Result<pb::RaftAck, Status>>;

    async fn step_stream(
        &self,
        req: Request<Streaming<pb::RaftBatch>>,
    ) -> Result<Response<Self::StepStreamStream>, Status> {
        self.check_peer(&req)?;
        let mut inbound = req.into_inner();
        let raft = self.api.raft.clone();
        let mut stop = self.api.stop.clone();
        // The answer stream stays open (and empty) while batches come in;
        // it ends when the sender closes its side, when this replica shuts
        // down (so that the connection closes and the peer reconnects to
        // whatever serves this address next), or with the error that made
        // this side stop reading.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                if *stop.borrow_and_update() {
                    return;
                }
                let next = tokio::select! {
                    m = inbound.message() => m,
                    _ = stop.changed() => return,
                };
                match next {
                    Ok(Some(batch)) => {
                        if let Err(s) = step_batch(&raft, batch) {
                            let _ = tx.send(Err(s)).await;
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(s) => {
                        // Tell the sender (a batch it cannot resend as is,
                        // or a broken connection it will notice anyway).
                        tracing::debug!("raft stream from a peer ended: {s}");
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn forward(
        &self,
        req: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        self.check_peer(&req)?;
        if self.api.peers.is_cut_off() {
            return Err(Status::unavailable(
                "this replica is cut off from its peers",
            ));
        }
        let answer = req.metadata().get(NO_ANSWER).is_none();
        let mut env: Envelope = serde_json::from_slice(&req.into_inner().envelope)
            .map_err(|e| Status::invalid_argument(format!("undecodable forwarded command: {e}")))?;
        // The leader's clock stamps every command it proposes.
        env.now_ms = gpuctl_common::now_ms();
        // Propose here only: a forwarded write is never forwarded again.
        let applied = self.api.raft.propose(env).await.map_err(to_status)?;
        let object_json = if answer {
            applied_json(applied)?
        } else {
            String::new()
        };
        Ok(Response::new(pb::ForwardResponse { object_json }))
    }
}
