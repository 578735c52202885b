//! The gRPC shell: `Control` (for the CLI) and `NodeService` (for node
//! daemons). Handlers validate, turn requests into [`Command`]s, propose
//! them through Raft and answer once they are applied. Reads come from the
//! local state machine.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpuctl_common::api::{self, Job, JobPhase, Manifest, NodePhase, TaskPhase};
use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::control_server::Control;
use gpuctl_proto::v1::node_service_client::NodeServiceClient;
use gpuctl_proto::v1::node_service_server::NodeService;
use gpuctl_proto::v1::raft_client::RaftClient;
use gpuctl_proto::v1::raft_server::Raft as RaftService;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType};
use std::collections::BTreeMap;
use tokio_stream::Stream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::controllers::{Heartbeats, Loads};
use crate::placement;
use crate::raft::Transport;
use crate::raft::{ProposeError, RaftHandle};
use crate::state::{
    Applied, ApplyError, Command, Envelope, ErrorCode, NodeRegistration, State, TaskReport,
};

mod workflows;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Settings the services need.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Interval node daemons are told to heartbeat at.
    pub heartbeat_interval: Duration,
    /// Longest server-side wait of one `Wait` call.
    pub max_wait: Duration,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            heartbeat_interval: Duration::from_secs(1),
            max_wait: Duration::from_secs(300),
        }
    }
}

/// Implements both gRPC services over one Raft handle.
#[derive(Clone)]
pub struct Api {
    pub raft: RaftHandle,
    pub heartbeats: Arc<Heartbeats>,
    pub opts: ServiceOptions,
    /// Flips to true on shutdown; ends long-lived streams and waits.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// The other replicas, for forwarding.
    pub peers: Arc<Peers>,
    /// Gateway load reports for the endpoint controller (used while leading).
    pub loads: Arc<Loads>,
}

/// This replica's id and clients for the other replicas; follows
/// membership changes.
pub struct Peers {
    pub me: u64,
    clients: Mutex<PeerClients>,
    pub transport: Option<Transport>,
}

#[derive(Default)]
struct PeerClients {
    channels: HashMap<u64, Channel>,
}

impl Peers {
    /// Clients for every peer in `addrs` (id → URL) other than `me`; lazy
    /// connections, so a peer that is down does not delay start-up.
    pub fn new(
        me: u64,
        addrs: &BTreeMap<u64, String>,
        transport: Option<Transport>,
    ) -> Result<Peers, String> {
        let p = Peers {
            me,
            clients: Mutex::new(PeerClients::default()),
            transport,
        };
        p.set(addrs)?;
        Ok(p)
    }

    /// Replace the set of replicas (after a membership change).
    pub fn set(&self, addrs: &BTreeMap<u64, String>) -> Result<(), String> {
        let mut channels = HashMap::new();
        for (&id, url) in addrs.iter().filter(|(id, _)| **id != self.me) {
            let ch = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|e| format!("peer {id}: bad address {url:?}: {e}"))?
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(15))
                .tcp_nodelay(true)
                .connect_lazy();
            channels.insert(id, ch);
        }
        let mut c = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        c.channels = channels;
        if let Some(t) = &self.transport {
            t.set_peers(addrs);
        }
        Ok(())
    }

    fn channel(&self, id: u64) -> Option<Channel> {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .channels
            .get(&id)
            .cloned()
    }

    pub fn raft_client(&self, id: u64) -> Option<RaftClient<Channel>> {
        self.channel(id).map(RaftClient::new)
    }

    pub fn node_client(&self, id: u64) -> Option<NodeServiceClient<Channel>> {
        self.channel(id).map(NodeServiceClient::new)
    }

    pub fn control_client(
        &self,
        id: u64,
    ) -> Option<gpuctl_proto::v1::control_client::ControlClient<Channel>> {
        self.channel(id)
            .map(gpuctl_proto::v1::control_client::ControlClient::new)
    }

    pub fn is_cut_off(&self) -> bool {
        self.transport.as_ref().is_some_and(|t| t.is_cut_off())
    }
}

/// Peer-to-peer service: Raft messages in, forwarded writes to the leader.
#[derive(Clone)]
pub struct RaftPeerService {
    pub api: Api,
}

#[tonic::async_trait]
impl RaftService for RaftPeerService {
    async fn step(&self, req: Request<pb::RaftBatch>) -> Result<Response<pb::RaftAck>, Status> {
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
            object_json: Api::job_reply(applied)?,
        }))
    }
}

fn to_status(e: ProposeError) -> Status {
    match e {
        ProposeError::NotLeader { .. } | ProposeError::Shutdown => {
            Status::unavailable(e.to_string())
        }
        ProposeError::Timeout(_) => Status::deadline_exceeded(e.to_string()),
        ProposeError::ChangeInProgress => Status::failed_precondition(e.to_string()),
        ProposeError::Storage(_) => Status::internal(e.to_string()),
        ProposeError::Rejected(a) => match a {
            ApplyError::AlreadyExists { .. } => Status::already_exists(a.to_string()),
            ApplyError::NotFound { .. } => Status::not_found(a.to_string()),
            ApplyError::Invalid(_) => Status::invalid_argument(a.to_string()),
            ApplyError::FailedPrecondition(_) | ApplyError::StaleBinding { .. } => {
                Status::failed_precondition(a.to_string())
            }
            ApplyError::Conflict(_) => Status::aborted(a.to_string()),
            ApplyError::Repeated { code, message } => match code {
                ErrorCode::AlreadyExists => Status::already_exists(message),
                ErrorCode::NotFound => Status::not_found(message),
                ErrorCode::Invalid => Status::invalid_argument(message),
                ErrorCode::FailedPrecondition => Status::failed_precondition(message),
                ErrorCode::Conflict => Status::aborted(message),
            },
        },
    }
}

/// A request's id, when the client sent one.
fn request_id_of(raw: &str) -> Option<String> {
    Some(raw.to_string()).filter(|r| !r.is_empty())
}

/// Prefix a refusal of the state machine with where the object came from.
fn in_source(source: &str, s: Status) -> Status {
    match s.code() {
        tonic::Code::InvalidArgument
        | tonic::Code::AlreadyExists
        | tonic::Code::NotFound
        | tonic::Code::Aborted
        | tonic::Code::FailedPrecondition
            if !s.message().starts_with(source) =>
        {
            Status::new(s.code(), format!("{source}: {}", s.message()))
        }
        _ => s,
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, Status> {
    serde_json::to_string(v).map_err(|e| Status::internal(format!("encoding object: {e}")))
}

/// Normalise `jobs`, `job`, `node`, `no`, `queues` … to `job` / `node` / `queue`.
fn kind_of(kind: &str) -> Result<&'static str, Status> {
    match kind.to_ascii_lowercase().as_str() {
        "job" | "jobs" => Ok("job"),
        "node" | "nodes" | "no" => Ok("node"),
        "queue" | "queues" | "q" => Ok("queue"),
        "workflow" | "workflows" | "wf" => Ok("workflow"),
        "endpoint" | "endpoints" | "ep" => Ok("endpoint"),
        other => Err(Status::invalid_argument(format!(
            "unknown kind {other:?}: this server knows jobs, nodes, queues, workflows and endpoints"
        ))),
    }
}

/// A queue as a reader sees it: with its status computed now.
fn queue_view(st: &State, q: &gpuctl_common::queue::Queue) -> gpuctl_common::queue::Queue {
    let mut q = q.clone();
    q.status = Some(st.queue_status(&q.metadata.name));
    q
}

impl Api {
    /// For a request only the leader answers: `None` when this replica
    /// leads, the leader's id when another one does, unavailable when no
    /// leader is known or this replica is cut off from its peers.
    fn leader_elsewhere(&self) -> Result<Option<u64>, Status> {
        let st = self.raft.shared.status();
        if st.is_leader() {
            Ok(None)
        } else if st.leader_id != 0 && st.leader_id != self.peers.me && !self.peers.is_cut_off() {
            Ok(Some(st.leader_id))
        } else {
            Err(self.no_leader())
        }
    }

    fn no_leader(&self) -> Status {
        Status::unavailable(format!(
            "scheduler replica {} knows no leader; ask another replica",
            self.peers.me
        ))
    }

    fn status_reply(&self) -> pb::ClusterStatusResponse {
        let s = self.raft.shared.status();
        pb::ClusterStatusResponse {
            id: s.id,
            leader_id: s.leader_id,
            term: s.term,
            commit_index: s.commit,
            applied_index: s.applied,
            role: s.role,
            voters: s.voters,
            peers: s
                .progress
                .into_iter()
                .map(|p| pb::PeerProgress {
                    id: p.id,
                    matched: p.matched,
                    next_index: p.next_index,
                    state: p.state,
                    recent_active: p.recent_active,
                })
                .collect(),
            // The applied membership (Peers follows it asynchronously).
            addresses: self
                .raft
                .shared
                .members
                .borrow()
                .clone()
                .into_iter()
                .collect(),
        }
    }

    /// Propose a configuration change here when leading, else hand the
    /// request to the leader with `forward`.
    async fn change_membership<R, F, Fut>(
        &self,
        cc: ConfChange,
        forward: F,
        req: R,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status>
    where
        F: FnOnce(gpuctl_proto::v1::control_client::ControlClient<Channel>, R) -> Fut,
        Fut: std::future::Future<Output = Result<Response<pb::ClusterStatusResponse>, Status>>,
    {
        // The last change may still be applying, or an election under way:
        // wait for either (bounded) rather than fail a change that would
        // succeed a moment later.
        let deadline = Instant::now() + NO_LEADER_WAIT;
        loop {
            match self.raft.change_membership(cc.clone()).await {
                Ok(_) => return Ok(Response::new(self.status_reply())),
                Err(ProposeError::NotLeader { leader: Some(l) }) if l != self.peers.me => {
                    return match self.peers.control_client(l) {
                        Some(c) => forward(c, req).await,
                        None => Err(Status::unavailable(format!(
                            "the leader is replica {l}, whose address this replica does not know"
                        ))),
                    };
                }
                Err(e @ (ProposeError::ChangeInProgress | ProposeError::NotLeader { .. }))
                    if Instant::now() < deadline =>
                {
                    tracing::debug!("membership change waits: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(to_status(e)),
            }
        }
    }
}

/// How long a write waits for an election to finish before giving up.
const NO_LEADER_WAIT: Duration = Duration::from_secs(5);

impl Api {
    /// Propose a command here, or forward it to the leader when this replica
    /// follows; answers with the changed object as JSON (or an empty string).
    async fn propose(&self, cmd: Command) -> Result<String, Status> {
        self.propose_request(cmd, None).await
    }

    /// [`Api::propose`] for a client request with its retry-stable id.
    async fn propose_request(
        &self,
        cmd: Command,
        request_id: Option<String>,
    ) -> Result<String, Status> {
        let mut env = Envelope::new(gpuctl_common::now_ms(), cmd);
        env.request_id = request_id;
        let deadline = Instant::now() + NO_LEADER_WAIT;
        loop {
            match self.raft.propose(env.clone()).await {
                Ok(applied) => return Self::job_reply(applied),
                Err(ProposeError::NotLeader { leader }) => {
                    if let Some(client) = leader
                        .filter(|l| *l != self.peers.me)
                        .and_then(|l| self.peers.raft_client(l))
                    {
                        return self.forward(client, &env).await;
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
    ) -> Result<String, Status> {
        if self.peers.is_cut_off() {
            return Err(Status::unavailable(format!(
                "scheduler replica {} is cut off from its peers and cannot reach a majority: writes are refused here; retry on another replica",
                self.peers.me
            )));
        }
        let envelope = serde_json::to_vec(env)
            .map_err(|e| Status::internal(format!("encoding command: {e}")))?;
        let r = client.forward(pb::ForwardRequest { envelope }).await?;
        Ok(r.into_inner().object_json)
    }

    /// Make the next local read see every write committed before this call.
    async fn read_barrier(&self) -> Result<(), Status> {
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

    /// Whether a request with this id was applied already (after a read
    /// barrier, so on any replica): its retry is answered from the record
    /// and skips the checks a new request gets.
    fn already_applied(&self, request_id: Option<&str>) -> bool {
        request_id.is_some_and(|id| self.state().request(id).is_some())
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.raft.shared.read()
    }

    fn job_reply(applied: Applied) -> Result<String, Status> {
        match applied {
            Applied::Job(j) => json(&*j),
            Applied::Node(n) => json(&*n),
            Applied::Queue(q) => json(&*q),
            Applied::Workflow(w) => json(&*w),
            Applied::Endpoint(e) => json(&*e),
            _ => Ok(String::new()),
        }
    }
}

impl Api {
    /// Create an endpoint after checking that a node could ever run one replica.
    async fn apply_endpoint(
        &self,
        source: &str,
        ep: gpuctl_common::endpoint::Endpoint,
        request_id: Option<String>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        self.read_barrier().await?;
        let repeated = self.already_applied(request_id.as_deref());
        if !repeated {
            let st = self.state();
            if st.endpoints.contains_key(&ep.metadata.name) {
                return Err(Status::already_exists(format!(
                    "{source}: endpoint {:?} already exists; delete it first (gpuctl delete endpoint {})",
                    ep.metadata.name, ep.metadata.name
                )));
            }
            let nodes: Vec<&api::Node> = st.nodes.values().collect();
            let probe = crate::state::endpoints::replica_job(&ep, &ep.metadata.name);
            if let Some(why) = placement::infeasible(&nodes, &probe) {
                return Err(Status::invalid_argument(format!(
                    "{source}: endpoint {:?}: spec.resources: a replica {why}",
                    ep.metadata.name
                )));
            }
        }
        let object_json = self
            .propose_request(
                Command::CreateEndpoint {
                    endpoint: Box::new(ep),
                },
                request_id,
            )
            .await
            .map_err(|s| in_source(source, s))?;
        Ok(Response::new(pb::ApplyResponse { object_json }))
    }
}

#[tonic::async_trait]
impl Control for Api {
    async fn report_load(
        &self,
        req: Request<pb::ReportLoadRequest>,
    ) -> Result<Response<pb::ReportLoadResponse>, Status> {
        let req = req.into_inner();
        match self.leader_elsewhere()? {
            None => {
                crate::controllers::runner::report_load(&self.raft, &self.loads, &req).await;
                Ok(Response::new(pb::ReportLoadResponse {}))
            }
            Some(leader) => match self.peers.control_client(leader) {
                Some(mut c) => c.report_load(req).await,
                None => Err(self.no_leader()),
            },
        }
    }

    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let req = req.into_inner();
        let source = if req.source.is_empty() {
            "<api>".to_string()
        } else {
            req.source.clone()
        };
        if workflows::is_workflow(&req.object_json) {
            let params = req.parameters.into_iter().collect();
            let request_id = request_id_of(&req.request_id);
            let object_json = self
                .apply_workflow(&source, &req.object_json, params, request_id)
                .await?;
            return Ok(Response::new(pb::ApplyResponse { object_json }));
        }
        let manifest = api::parse_manifest_json(&source, &req.object_json)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let request_id = request_id_of(&req.request_id);
        // Check against current state, not a follower's possibly older copy.
        self.read_barrier().await?;
        // A retry of a request that was applied gets its recorded answer.
        let repeated = self.already_applied(request_id.as_deref());
        let job = match manifest {
            Manifest::Job(job) => job,
            Manifest::Endpoint(ep) => {
                return self.apply_endpoint(&source, ep, request_id).await;
            }
            Manifest::Queue(queue) => {
                let object_json = self
                    .propose_request(
                        Command::PutQueue {
                            queue: Box::new(queue),
                        },
                        request_id,
                    )
                    .await
                    .map_err(|s| in_source(&source, s))?;
                return Ok(Response::new(pb::ApplyResponse { object_json }));
            }
        };
        if !repeated {
            let st = self.state();
            if st.jobs.contains_key(&job.metadata.name) {
                return Err(Status::already_exists(format!(
                    "{source}: job {:?} already exists; pick another metadata.name or cancel the old one",
                    job.metadata.name
                )));
            }
            let nodes: Vec<&api::Node> = st.nodes.values().collect();
            if let Some(why) = placement::infeasible(&nodes, &job) {
                return Err(Status::invalid_argument(format!(
                    "{source}: job {:?}: {why}",
                    job.metadata.name
                )));
            }
        }
        let object_json = self
            .propose_request(Command::SubmitJob { job: Box::new(job) }, request_id)
            .await
            .map_err(|s| in_source(&source, s))?;
        Ok(Response::new(pb::ApplyResponse { object_json }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let req = req.into_inner();
        let kind = kind_of(&req.kind)?;
        self.read_barrier().await?;
        if kind == "workflow" {
            let objects_json = self.get_workflows(&req.name)?;
            return Ok(Response::new(pb::GetResponse { objects_json }));
        }
        let st = self.state();
        let objects_json = match (kind, req.name.is_empty()) {
            ("job", true) => {
                let mut jobs: Vec<&Job> = st.jobs.values().collect();
                jobs.sort_by_key(|j| j.metadata.uid);
                jobs.into_iter().map(json).collect::<Result<_, _>>()?
            }
            ("job", false) => {
                let mut job = st
                    .jobs
                    .get(&req.name)
                    .ok_or_else(|| Status::not_found(format!("job {:?} not found", req.name)))?
                    .clone();
                if job.status.phase == api::JobPhase::Pending {
                    let round = placement::plan_round(&st);
                    job.status.waiting = placement::waiting_reason(&st, &round, &req.name);
                }
                vec![json(&job)?]
            }
            ("queue", true) => st
                .queues
                .values()
                .map(|q| json(&queue_view(&st, q)))
                .collect::<Result<_, _>>()?,
            ("queue", false) => {
                vec![json(&queue_view(
                    &st,
                    st.queues.get(&req.name).ok_or_else(|| {
                        Status::not_found(format!("queue {:?} not found", req.name))
                    })?,
                ))?]
            }
            ("endpoint", true) => st
                .endpoint_views()
                .iter()
                .map(json)
                .collect::<Result<_, _>>()?,
            ("endpoint", false) => vec![json(&st.endpoint_view(&req.name).ok_or_else(|| {
                Status::not_found(format!("endpoint {:?} not found", req.name))
            })?)?],
            (_, true) => st.nodes.values().map(json).collect::<Result<_, _>>()?,
            (_, false) => vec![json(st.nodes.get(&req.name).ok_or_else(|| {
                Status::not_found(format!("node {:?} not found", req.name))
            })?)?],
        };
        Ok(Response::new(pb::GetResponse { objects_json }))
    }

    async fn cancel(
        &self,
        req: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let req = req.into_inner();
        let kind = kind_of(if req.kind.is_empty() {
            "job"
        } else {
            &req.kind
        })?;
        if kind == "workflow" {
            let object_json = self
                .propose(Command::CancelWorkflow { name: req.name })
                .await?;
            return Ok(Response::new(pb::CancelResponse { object_json }));
        }
        if kind == "endpoint" {
            // Deleting an endpoint stops its replicas and removes it.
            let object_json = self
                .propose(Command::DeleteEndpoint { name: req.name })
                .await?;
            return Ok(Response::new(pb::CancelResponse { object_json }));
        }
        if kind != "job" {
            return Err(Status::invalid_argument(
                "only jobs and workflows can be cancelled, and endpoints deleted",
            ));
        }
        let object_json = self.propose(Command::CancelJob { name: req.name }).await?;
        Ok(Response::new(pb::CancelResponse { object_json }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let req = req.into_inner();
        let name = req.name;
        let cmd = match kind_of(&req.kind)? {
            "job" => Command::DeleteJob { name },
            "workflow" => Command::DeleteWorkflow { name },
            "endpoint" => Command::DeleteEndpoint { name },
            other => {
                return Err(Status::invalid_argument(format!(
                    "{other}s cannot be deleted; jobs, workflows and endpoints can"
                )))
            }
        };
        let object_json = self.propose(cmd).await?;
        Ok(Response::new(pb::DeleteResponse { object_json }))
    }

    async fn cordon(
        &self,
        req: Request<pb::CordonRequest>,
    ) -> Result<Response<pb::CordonResponse>, Status> {
        let req = req.into_inner();
        let object_json = self
            .propose(Command::Cordon {
                node: req.node,
                unschedulable: req.cordon,
            })
            .await?;
        Ok(Response::new(pb::CordonResponse { object_json }))
    }

    async fn wait(
        &self,
        req: Request<pb::WaitRequest>,
    ) -> Result<Response<pb::WaitResponse>, Status> {
        let req = req.into_inner();
        self.read_barrier().await?;
        let limit = if req.timeout_ms == 0 {
            self.opts.max_wait
        } else {
            Duration::from_millis(req.timeout_ms).min(self.opts.max_wait)
        };
        let deadline = tokio::time::Instant::now() + limit;
        let mut version = self.raft.shared.version.subscribe();
        loop {
            let job = {
                let st = self.state();
                match st.jobs.get(&req.name) {
                    Some(j) => Some((j.status.phase, json(j)?)),
                    None => None,
                }
            };
            let (phase, obj) = match job {
                Some(j) => j,
                None => {
                    // Not a job: a workflow of that name?
                    let (wphase, obj) = self.workflow_phase(&req.name).ok_or_else(|| {
                        Status::not_found(format!("no job or workflow {:?}", req.name))
                    })?;
                    if wphase.is_terminal() {
                        return Ok(Response::new(pb::WaitResponse {
                            finished: true,
                            phase: wphase.to_string(),
                            object_json: obj,
                        }));
                    }
                    (JobPhase::Running, obj)
                }
            };
            if phase.is_terminal() {
                return Ok(Response::new(pb::WaitResponse {
                    finished: true,
                    phase: phase.to_string(),
                    object_json: obj,
                }));
            }
            let mut stop = self.stop.clone();
            let changed = tokio::select! {
                r = tokio::time::timeout_at(deadline, version.changed()) => matches!(r, Ok(Ok(()))),
                _ = stop.wait_for(|s| *s) => false,
            };
            if !changed {
                return Ok(Response::new(pb::WaitResponse {
                    finished: false,
                    phase: phase.to_string(),
                    object_json: obj,
                }));
            }
        }
    }

    type LogsStream = BoxStream<pb::LogChunk>;

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = req.into_inner();
        let (endpoint, attempt, is_current) = {
            let st = self.state();
            let j = st
                .jobs
                .get(&req.job)
                .ok_or_else(|| Status::not_found(format!("job {:?} not found", req.job)))?;
            let t = j.status.tasks.get(req.task_index as usize).ok_or_else(|| {
                Status::not_found(format!(
                    "job {:?} has {} task(s); there is no task {}",
                    req.job,
                    j.status.tasks.len(),
                    req.task_index
                ))
            })?;
            let current = j.status.attempt;
            let attempt = if req.attempt == 0 {
                current
            } else {
                req.attempt
            };
            let node = if attempt == current {
                t.node.as_ref().ok_or_else(|| {
                    let earlier = if current > 1 {
                        format!("; the previous attempt's log: --attempt {}", current - 1)
                    } else {
                        String::new()
                    };
                    Status::failed_precondition(format!(
                        "task {} of job {:?} has not been placed yet (attempt {current}, phase {}); try again once it runs{earlier}",
                        req.task_index, req.job, t.phase
                    ))
                })?
            } else {
                let past = j
                    .status
                    .past_attempts
                    .iter()
                    .find(|p| p.attempt == attempt)
                    .ok_or_else(|| {
                        let known: Vec<String> = j
                            .status
                            .past_attempts
                            .iter()
                            .map(|p| p.attempt.to_string())
                            .chain(std::iter::once(current.to_string()))
                            .collect();
                        Status::out_of_range(format!(
                            "job {:?} has no attempt {attempt} on record (attempts: {})",
                            req.job,
                            known.join(", ")
                        ))
                    })?;
                past.nodes
                    .get(req.task_index as usize)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        Status::out_of_range(format!(
                            "task {} of job {:?} did not run in attempt {attempt}",
                            req.task_index, req.job
                        ))
                    })?
            };
            let n = st
                .nodes
                .get(node)
                .ok_or_else(|| Status::not_found(format!("node {node:?} not found")))?;
            (n.status.agent_endpoint.clone(), attempt, attempt == current)
        };
        let mut client =
            gpuctl_proto::v1::node_agent_client::NodeAgentClient::connect(endpoint.clone())
                .await
                .map_err(|e| {
                    Status::unavailable(format!("cannot reach the node daemon at {endpoint}: {e}"))
                })?;
        let stream = client
            .read_logs(pb::ReadLogsRequest {
                job: req.job,
                task_index: req.task_index,
                attempt,
                follow: req.follow && is_current,
            })
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cluster_status(
        &self,
        _req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        Ok(Response::new(self.status_reply()))
    }

    async fn add_peer(
        &self,
        req: Request<pb::AddPeerRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let r = req.into_inner();
        if r.id == 0 {
            return Err(Status::invalid_argument("replica ids start at 1"));
        }
        let url = if r.address.contains("://") {
            r.address.clone()
        } else {
            format!("http://{}", r.address)
        };
        tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| Status::invalid_argument(format!("address {:?}: {e}", r.address)))?;
        if self.raft.shared.status().voters.contains(&r.id) {
            return Err(Status::already_exists(format!(
                "replica {} is already a voter",
                r.id
            )));
        }
        let cc = ConfChange {
            change_type: ConfChangeType::AddNode,
            node_id: r.id,
            context: url.into_bytes().into(),
            ..Default::default()
        };
        self.change_membership(
            cc,
            |mut c, req| async move { c.add_peer(req).await },
            pb::AddPeerRequest {
                id: r.id,
                address: r.address,
            },
        )
        .await
    }

    async fn remove_peer(
        &self,
        req: Request<pb::RemovePeerRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let r = req.into_inner();
        let voters = self.raft.shared.status().voters;
        if !voters.contains(&r.id) {
            return Err(Status::not_found(format!(
                "replica {} is not a voter (voters: {voters:?})",
                r.id
            )));
        }
        if voters.len() == 1 {
            return Err(Status::failed_precondition("cannot remove the last voter"));
        }
        let cc = ConfChange {
            change_type: ConfChangeType::RemoveNode,
            node_id: r.id,
            ..Default::default()
        };
        self.change_membership(
            cc,
            |mut c, req| async move { c.remove_peer(req).await },
            pb::RemovePeerRequest { id: r.id },
        )
        .await
    }
}

fn parse_phase(p: &str) -> Result<TaskPhase, Status> {
    match p {
        "Running" => Ok(TaskPhase::Running),
        "Succeeded" => Ok(TaskPhase::Succeeded),
        "Failed" => Ok(TaskPhase::Failed),
        other => Err(Status::invalid_argument(format!(
            "phase {other:?}: a node reports Running, Succeeded or Failed"
        ))),
    }
}

#[tonic::async_trait]
impl NodeService for Api {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = req.into_inner();
        api::validate_name("name", &r.name)
            .map_err(|e| Status::invalid_argument(format!("node {e}")))?;
        let reg = NodeRegistration {
            name: r.name.clone(),
            address: r.address,
            agent_endpoint: r.agent_endpoint,
            inventory: r.inventory,
            cpu_milli: r.cpu_milli,
            memory_bytes: r.memory_bytes,
            gpus: r
                .gpus
                .into_iter()
                .map(|g| api::Gpu {
                    uuid: g.uuid,
                    index: g.index,
                    model: g.model,
                    memory_bytes: g.memory_bytes,
                    nvlink_domain: g.nvlink_domain,
                    healthy: g.healthy,
                })
                .collect(),
            labels: r.labels.into_iter().collect(),
        };
        self.propose(Command::RegisterNode { reg }).await?;
        self.heartbeats.beat(&r.name, Instant::now());
        Ok(Response::new(pb::RegisterResponse {
            heartbeat_interval_ms: self.opts.heartbeat_interval.as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        // Liveness is tracked by the leader: pass the beat on when following.
        let st = self.raft.shared.status();
        if !st.is_leader() && st.leader_id != 0 {
            if let Some(mut leader) = self.peers.node_client(st.leader_id) {
                if !self.peers.is_cut_off() {
                    return leader.heartbeat(r).await;
                }
            }
        }
        let known = self
            .state()
            .nodes
            .get(&r.name)
            .map(|n| n.status.phase == NodePhase::Ready)
            .unwrap_or(false);
        if known {
            self.heartbeats.beat(&r.name, Instant::now());
        }
        Ok(Response::new(pb::HeartbeatResponse { reregister: !known }))
    }

    async fn gone_workflows(
        &self,
        req: Request<pb::GoneWorkflowsRequest>,
    ) -> Result<Response<pb::GoneWorkflowsResponse>, Status> {
        let r = req.into_inner();
        // The leader's state is the newest; a follower could lag behind a
        // workflow just created and call it gone.
        if let Some(leader) = self.leader_elsewhere()? {
            return match self.peers.node_client(leader) {
                Some(mut c) => c.gone_workflows(r).await,
                None => Err(self.no_leader()),
            };
        }
        let state = self.state();
        let gone = r
            .workflows
            .into_iter()
            .filter(|w| !state.workflows.contains_key(w))
            .collect();
        Ok(Response::new(pb::GoneWorkflowsResponse { gone }))
    }

    type WatchAssignmentsStream = BoxStream<pb::Assignments>;

    async fn watch_assignments(
        &self,
        req: Request<pb::WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        let node = req.into_inner().node;
        let mut version = self.raft.shared.version.subscribe();
        let shared = self.raft.shared.clone();
        let mut stop = self.stop.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last: Option<Vec<pb::TaskAssignment>> = None;
            loop {
                let v = *version.borrow_and_update();
                let a = crate::state::views::assignments_for(&shared.read(), &node, v);
                if last.as_ref() != Some(&a.tasks) {
                    last = Some(a.tasks.clone());
                    if tx.send(Ok(a)).await.is_err() {
                        return; // the node hung up
                    }
                }
                tokio::select! {
                    r = version.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn report_task(
        &self,
        req: Request<pb::ReportTaskRequest>,
    ) -> Result<Response<pb::ReportTaskResponse>, Status> {
        let r = req.into_inner();
        let report = TaskReport {
            node: r.node,
            job: r.job,
            index: r.task_index,
            attempt: r.attempt,
            phase: parse_phase(&r.phase)?,
            exit_code: if r.phase == "Running" {
                None
            } else {
                Some(r.exit_code)
            },
            message: Some(r.message).filter(|m| !m.is_empty()),
            pid: Some(r.pid).filter(|p| *p != 0),
            outputs: r.outputs.map(workflows::outputs_from_pb),
            port: u16::try_from(r.port).ok().filter(|p| *p != 0),
        };
        self.propose(Command::TaskReport { report }).await?;
        Ok(Response::new(pb::ReportTaskResponse {}))
    }
}
