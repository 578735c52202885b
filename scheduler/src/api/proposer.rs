//! The API's one way to write: [`Proposer`] proposes a command on this
//! replica when it leads and forwards it to the leader when it follows,
//! waiting out a short election; [`Proposer::read_barrier`] makes the next
//! local read current; [`Proposer::checked_write`] proposes a command built
//! by checks that must see current state, paying for a read barrier only
//! where the replica's own state cannot be trusted to be current.
//!
//! Every handler authorizes its caller (`authz.rs`) before it proposes, so
//! a follower refuses a call before forwarding it; the leader applies a
//! forwarded envelope as it is (the replicas are peers).

use std::time::{Duration, Instant};

use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::raft_client::RaftClient;
use tonic::transport::Channel;
use tonic::Status;

use super::convert::{json, to_status};
use super::peers::Peers;
use crate::raft::{ProposeError, RaftHandle};
use crate::state::{Applied, Command, Envelope};

/// Metadata on a forwarded command whose sender does not use the changed
/// object: the leader answers without encoding it.
pub const NO_ANSWER: &str = "x-gpuctl-no-answer";

/// How long a write waits for an election to finish before giving up.
pub const NO_LEADER_WAIT: Duration = Duration::from_secs(5);

/// Proposes for one request: through this replica's Raft handle, or to the
/// leader through [`Peers`].
#[derive(Clone, Copy)]
pub struct Proposer<'a> {
    pub raft: &'a RaftHandle,
    pub peers: &'a Peers,
}

impl Proposer<'_> {
    /// For a request only the leader answers: `None` when this replica
    /// leads, the leader's id when another one does, unavailable when no
    /// leader is known or this replica is cut off from its peers.
    pub fn leader_elsewhere(&self) -> Result<Option<u64>, Status> {
        let st = self.raft.shared.status();
        if st.is_leader() {
            Ok(None)
        } else if st.leader_id != 0 && st.leader_id != self.peers.me && !self.peers.is_cut_off() {
            Ok(Some(st.leader_id))
        } else {
            Err(self.no_leader())
        }
    }

    pub fn no_leader(&self) -> Status {
        Status::unavailable(format!(
            "scheduler replica {} knows no leader; ask another replica",
            self.peers.me
        ))
    }

    /// Propose a command here, or forward it to the leader when this replica
    /// follows; answers with the changed object as JSON (or an empty string).
    pub async fn propose(&self, cmd: Command) -> Result<String, Status> {
        self.propose_request(cmd, None).await
    }

    /// [`Proposer::propose`] for a caller that does not use the changed
    /// object: it is never encoded as JSON, here or on the leader.
    pub async fn propose_only(&self, cmd: Command) -> Result<(), Status> {
        self.propose_as(cmd, None, false).await.map(drop)
    }

    /// [`Proposer::propose`] for a client request with its retry-stable id.
    pub async fn propose_request(
        &self,
        cmd: Command,
        request_id: Option<String>,
    ) -> Result<String, Status> {
        self.propose_as(cmd, request_id, true).await
    }

    /// Propose (or forward); the changed object as JSON when `answer`.
    async fn propose_as(
        &self,
        cmd: Command,
        request_id: Option<String>,
        answer: bool,
    ) -> Result<String, Status> {
        let mut env = Envelope::new(gpuctl_common::now_ms(), cmd);
        env.request_id = request_id;
        let deadline = Instant::now() + NO_LEADER_WAIT;
        loop {
            match self.raft.propose(env.clone()).await {
                Ok(applied) if answer => return applied_json(applied),
                Ok(_) => return Ok(String::new()),
                Err(ProposeError::NotLeader { leader }) => {
                    if let Some(client) = leader
                        .filter(|l| *l != self.peers.me)
                        .and_then(|l| self.peers.raft_client(l))
                    {
                        return self.forward(client, &env, answer).await;
                    }
                    if Instant::now() >= deadline {
                        return Err(Status::unavailable(format!(
                            "scheduler replica {} knows no leader after {NO_LEADER_WAIT:?} (an election is under way or a majority of replicas is down); retry, or try another replica",
                            self.peers.me
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(to_status(e)),
            }
        }
    }

    async fn forward(
        &self,
        mut client: RaftClient<Channel>,
        env: &Envelope,
        answer: bool,
    ) -> Result<String, Status> {
        if self.peers.is_cut_off() {
            return Err(Status::unavailable(format!(
                "scheduler replica {} is cut off from its peers and cannot reach a majority: writes are refused here; retry on another replica",
                self.peers.me
            )));
        }
        let envelope = serde_json::to_vec(env)
            .map_err(|e| Status::internal(format!("encoding command: {e}")))?;
        let mut req = tonic::Request::new(pb::ForwardRequest { envelope });
        if !answer {
            req.metadata_mut()
                .insert(NO_ANSWER, tonic::metadata::MetadataValue::from_static("1"));
        }
        let r = client.forward(req).await?;
        Ok(r.into_inner().object_json)
    }

    /// Propose the command `check` builds after checking the request
    /// against this replica's state (authorization, names taken), with the
    /// checks seeing every write acknowledged before this call.
    ///
    /// On a leader that has applied an entry of its own term, its state
    /// already holds every acknowledged write (it answers its own writes
    /// only once applied, and everything earlier leaders committed comes
    /// before that entry), so no ReadIndex round is needed: the command is
    /// proposed fenced to that term and refused if the replica no longer
    /// leads in it by the time it reaches the log. A deposed leader that
    /// does not know it yet may miss a newer leader's writes, but its
    /// fenced entry can then never be committed. Refused so, or anywhere
    /// else, the checks run again after a read barrier and the command is
    /// proposed (or forwarded to the leader) as any other.
    pub async fn checked_write(
        &self,
        request_id: Option<String>,
        check: impl Fn() -> Result<Command, Status>,
    ) -> Result<String, Status> {
        let st = self.raft.shared.status();
        if st.is_leader() && st.current_term_applied && !self.peers.is_cut_off() {
            let mut env = Envelope::new(gpuctl_common::now_ms(), check()?);
            env.request_id = request_id.clone();
            match self.raft.propose_in_term(env, st.term).await {
                Ok(applied) => return applied_json(applied),
                // Leadership changed before the command was answered:
                // check again on current state (with a request id, a
                // command that did commit is not applied twice).
                Err(ProposeError::NotLeader { .. }) => {}
                Err(e) => return Err(to_status(e)),
            }
        }
        self.read_barrier().await?;
        self.propose_request(check()?, request_id).await
    }

    /// Make the next local read see every write committed before this call.
    pub async fn read_barrier(&self) -> Result<(), Status> {
        let deadline = Instant::now() + NO_LEADER_WAIT;
        loop {
            match self.raft.read_barrier().await {
                Ok(()) => return Ok(()),
                // An election is under way: reads are safe to try again.
                Err(ProposeError::NotLeader { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(to_status(e)),
            }
        }
    }
}

/// The object an applied command changed, as JSON (empty when none).
pub fn applied_json(applied: Applied) -> Result<String, Status> {
    match applied {
        Applied::Job(j) => json(&*j),
        Applied::Node(n) => json(&*n),
        Applied::Queue(q) => json(&*q),
        Applied::Workflow(w) => json(&*w),
        Applied::Endpoint(e) => json(&*e),
        Applied::Secret(s) => json(&*s),
        Applied::User(u) => json(&*u),
        Applied::Token(t) => json(&t.view()),
        Applied::Object(v) => json(&*v),
        _ => Ok(String::new()),
    }
}
