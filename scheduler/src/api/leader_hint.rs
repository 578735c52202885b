//! Every answer of a following replica names the leader: a response header
//! [`LEADER_HEADER`] with the leader's gRPC URL as the replicas know it
//! (their membership). Writes sent to a follower are forwarded to the
//! leader, which costs a second hop and about a third of the cluster's
//! throughput under load (benches/RESULTS.md); a client that was given
//! several replicas (`gpu-node --server a,b,c`) sends its next calls to the
//! one the header names, as a Vault standby or a Consul follower points
//! clients at the active server. A client that knows none of the replicas
//! by that URL ignores it; the forwarding still works.

use std::sync::{Arc, Mutex};

use tonic::codegen::http::{HeaderValue, Response};

use crate::raft::RaftHandle;

use gpuctl_proto::LEADER_HEADER;

/// The header value for the current leader, cached per leader id.
pub struct LeaderHint {
    raft: RaftHandle,
    /// The scheme the replicas speak (`https` with TLS).
    tls: bool,
    cached: Mutex<Option<(u64, Option<HeaderValue>)>>,
}

impl LeaderHint {
    pub fn new(raft: RaftHandle, tls: bool) -> Arc<LeaderHint> {
        Arc::new(LeaderHint {
            raft,
            tls,
            cached: Mutex::new(None),
        })
    }

    /// The leader's URL when another replica leads and its address is
    /// known; `None` on the leader and while no leader is known.
    pub fn value(&self) -> Option<HeaderValue> {
        let leader = {
            let st = self
                .raft
                .shared
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if st.leader_id == 0 || st.leader_id == st.id {
                return None;
            }
            st.leader_id
        };
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, v)) = cached.as_ref() {
            if *id == leader {
                return v.clone();
            }
        }
        let v = self
            .raft
            .shared
            .members
            .borrow()
            .get(&leader)
            .map(|addr| gpuctl_security::tls::url(addr, self.tls))
            .and_then(|url| HeaderValue::from_str(&url).ok());
        // A leader whose address is not applied yet is looked up again.
        if v.is_some() {
            *cached = Some((leader, v.clone()));
        }
        v
    }

    /// `response` with the leader's URL added when this replica follows.
    pub fn add<B>(&self, mut response: Response<B>) -> Response<B> {
        if let Some(v) = self.value() {
            response.headers_mut().insert(LEADER_HEADER, v);
        }
        response
    }
}
