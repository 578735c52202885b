//! The Raft peer service: Raft messages from the other replicas, and the
//! writes a follower forwards to this replica when it leads.

use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::raft_server::Raft as RaftService;
use protobuf::Message as _;
use tonic::{Request, Response, Status};

use super::convert::to_status;
use super::proposer::applied_json;
use super::Api;
use crate::state::Envelope;

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
        let b = req.into_inner();
        for bytes in b.messages {
            match raft::prelude::Message::parse_from_bytes(&bytes) {
                Ok(m) => self.api.raft.step(m),
                Err(e) => {
                    return Err(Status::invalid_argument(format!(
                        "undecodable raft message from replica {}: {e}",
                        b.from
                    )))
                }
            }
        }
        Ok(Response::new(pb::RaftAck {}))
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
        let mut env: Envelope = serde_json::from_slice(&req.into_inner().envelope)
            .map_err(|e| Status::invalid_argument(format!("undecodable forwarded command: {e}")))?;
        // The leader's clock stamps every command it proposes.
        env.now_ms = gpuctl_common::now_ms();
        // Propose here only: a forwarded write is never forwarded again.
        let applied = self.api.raft.propose(env).await.map_err(to_status)?;
        Ok(Response::new(pb::ForwardResponse {
            object_json: applied_json(applied)?,
        }))
    }
}
