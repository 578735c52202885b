//! The `Control` service, for the command line: apply, get, cancel,
//! delete, cordon, wait, logs, gateway load reports and the cluster's
//! membership.

use std::time::{Duration, Instant};

use gpuctl_common::api::{self, JobPhase};
use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::control_server::Control;
use raft::prelude::{ConfChange, ConfChangeType};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::authz::{Action, Principal};
use super::convert::{job_phase_to_pb, json, kind_of, to_status, workflow_phase_to_pb};
use super::guard::forwarded;
use super::proposer::NO_LEADER_WAIT;

/// Metadata on a call one replica handed to another: it is answered where
/// it arrives, never handed on again (no ping-pong during an election).
const FORWARDED: &str = "x-gpuctl-forwarded";
use super::{Api, BoxStream};

use crate::raft::ProposeError;
use crate::state::identity::Role;
use crate::state::{Command, State};

/// A queue as a reader sees it: with its status computed now.
fn queue_view(st: &State, q: &gpuctl_common::queue::Queue) -> gpuctl_common::queue::Queue {
    let mut q = q.clone();
    q.status = Some(st.queue_status(&q.metadata.name));
    q
}

/// Users or tokens (without their hashes), all or the one named.
fn identity_objects(st: &State, kind: &str, name: &str) -> Result<Vec<String>, Status> {
    let values: Vec<serde_json::Value> = if kind == "user" {
        st.users
            .values()
            .filter(|u| name.is_empty() || u.name == name)
            .map(|u| serde_json::to_value(u).unwrap_or_default())
            .collect()
    } else {
        st.tokens
            .values()
            .filter(|t| name.is_empty() || t.id == name || t.subject == name)
            .map(|t| t.view())
            .collect()
    };
    if values.is_empty() && !name.is_empty() {
        return Err(Status::not_found(format!("{kind} {name:?} not found")));
    }
    values.iter().map(json).collect()
}

impl Api {
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
            // The applied membership (Peers follows it asynchronously),
            // with the scheme the replicas speak.
            addresses: self
                .raft
                .shared
                .members
                .borrow()
                .clone()
                .into_iter()
                .map(|(id, url)| (id, self.peers.url(&url)))
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

#[tonic::async_trait]
impl Control for Api {
    async fn create_user(
        &self,
        req: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        let (md, _, r) = req.into_parts();
        Ok(Response::new(self.create_user_call(&md, r).await?))
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let (md, _, r) = req.into_parts();
        Ok(Response::new(self.create_token_call(&md, r).await?))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let (md, _, r) = req.into_parts();
        Ok(Response::new(self.revoke_token_call(&md, r).await?))
    }

    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        Ok(Response::new(self.who_am_i_call(req.metadata()).await?))
    }

    async fn audit(
        &self,
        req: Request<pb::AuditRequest>,
    ) -> Result<Response<pb::AuditResponse>, Status> {
        let (md, _, r) = req.into_parts();
        Ok(Response::new(self.audit_call(&md, r).await?))
    }

    async fn rollout(
        &self,
        req: Request<pb::RolloutRequest>,
    ) -> Result<Response<pb::RolloutResponse>, Status> {
        let (md, _, r) = req.into_parts();
        Ok(Response::new(self.rollout_call(&md, r).await?))
    }

    async fn report_load(
        &self,
        req: Request<pb::ReportLoadRequest>,
    ) -> Result<Response<pb::ReportLoadResponse>, Status> {
        let (md, _, req) = req.into_parts();
        self.allow(&md, &Action::ReportLoad).await?;
        match self.proposer().leader_elsewhere()? {
            None => {
                crate::controllers::runner::report_load(&self.raft, &self.loads, &req).await;
                Ok(Response::new(pb::ReportLoadResponse {}))
            }
            Some(leader) => match self.peers.control_client(leader) {
                Some(mut c) => c.report_load(forwarded(&md, req)).await,
                None => Err(self.proposer().no_leader()),
            },
        }
    }

    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let (md, _, r) = req.into_parts();
        // A follower hands the whole call to the leader, which checks it on
        // its own state without a read barrier (`Proposer::checked_write`):
        // one round trip instead of a barrier and a forwarded command.
        if md.get(FORWARDED).is_none() {
            if let Ok(Some(leader)) = self.proposer().leader_elsewhere() {
                if let Some(mut c) = self.peers.control_client(leader) {
                    let mut fwd = forwarded(&md, r);
                    fwd.metadata_mut()
                        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
                    return c.apply(fwd).await;
                }
            }
        }
        let who = self.caller(&md).await;
        let object_json = self.apply_object(&who, r).await?;
        Ok(Response::new(pb::ApplyResponse { object_json }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let (md, _, req) = req.into_parts();
        let who = self.allow(&md, &Action::Read).await?;
        // Endpoints' API key hashes are for the gateway (and admins) only.
        let key_hashes = who.is_admin()
            || matches!(
                who,
                Principal::User {
                    role: Role::Gateway,
                    ..
                }
            );
        let kind = kind_of(&req.kind)?;
        if req.limit != 0 || !req.continue_token.is_empty() {
            if kind != "job" || !req.name.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "limit and continue_token page a list of jobs; a list of {kind}s or one object is read whole (leave them unset)"
                )));
            }
            let page = self.job_json.page(self.proposer(), &req).await?;
            return Ok(Response::new(page));
        }
        self.proposer().read_barrier().await?;
        if kind == "workflow" {
            let objects_json = self.get_workflows(&req.name)?;
            return Ok(Response::new(pb::GetResponse {
                objects_json,
                ..Default::default()
            }));
        }
        if matches!(
            kind,
            "workflowtemplate" | "clusterworkflowtemplate" | "cronworkflow"
        ) {
            let objects_json = self.get_argo_objects(kind, &req.name)?;
            return Ok(Response::new(pb::GetResponse {
                objects_json,
                ..Default::default()
            }));
        }
        if kind == "user" || kind == "token" {
            let objects_json = identity_objects(&self.state(), kind, &req.name)?;
            return Ok(Response::new(pb::GetResponse {
                objects_json,
                ..Default::default()
            }));
        }
        let st = self.state();
        let objects_json = match (kind, req.name.is_empty()) {
            ("job", true) => {
                let (jobs, _) = st.jobs_page(None, 0);
                self.job_json.encode(&jobs, &st)?
            }
            ("job", false) => {
                let mut job = st
                    .jobs
                    .get(&req.name)
                    .ok_or_else(|| Status::not_found(format!("job {:?} not found", req.name)))?
                    .clone();
                if job.status.phase == api::JobPhase::Pending {
                    // Not under this read lock: see `Api::waiting_reason`.
                    drop(st);
                    job.status.waiting = self.waiting_reason(&req.name);
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
                .into_iter()
                .map(|e| json(&shown_endpoint(e, key_hashes)))
                .collect::<Result<_, _>>()?,
            ("endpoint", false) => vec![json(&shown_endpoint(
                st.endpoint_view(&req.name).ok_or_else(|| {
                    Status::not_found(format!("endpoint {:?} not found", req.name))
                })?,
                key_hashes,
            ))?],
            // Values never leave through Get: each shows as its size.
            ("secret", true) => st
                .secrets
                .values()
                .map(|s| json(&s.redacted()))
                .collect::<Result<_, _>>()?,
            ("secret", false) => vec![json(
                &st.secrets
                    .get(&req.name)
                    .ok_or_else(|| Status::not_found(format!("secret {:?} not found", req.name)))?
                    .redacted(),
            )?],
            (_, true) => st.nodes.values().map(json).collect::<Result<_, _>>()?,
            (_, false) => vec![json(st.nodes.get(&req.name).ok_or_else(|| {
                Status::not_found(format!("node {:?} not found", req.name))
            })?)?],
        };
        Ok(Response::new(pb::GetResponse {
            objects_json,
            ..Default::default()
        }))
    }

    async fn cancel(
        &self,
        req: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let (md, _, req) = req.into_parts();
        let who = self.caller(&md).await;
        let kind = kind_of(if req.kind.is_empty() {
            "job"
        } else {
            &req.kind
        });
        let r = async {
            let who = who.as_ref().map_err(Clone::clone)?;
            let kind = kind.clone()?;
            let verb = match req.action.as_str() {
                "" | "cancel" => "cancel",
                "suspend" => "suspend",
                "resume" => "resume",
                other => {
                    return Err(Status::invalid_argument(format!(
                        "action {other:?}: use cancel, suspend or resume"
                    )))
                }
            };
            let cmd = match (kind, verb) {
                ("workflow", "suspend") => Command::SuspendWorkflow {
                    name: req.name.clone(),
                },
                ("workflow", "resume") => Command::ResumeWorkflow {
                    name: req.name.clone(),
                },
                (_, "suspend" | "resume") => {
                    return Err(Status::invalid_argument(format!(
                        "only workflows can be suspended or resumed; {kind} {:?} is not a workflow",
                        req.name
                    )))
                }
                ("workflow", _) => Command::CancelWorkflow {
                    name: req.name.clone(),
                },
                // Deleting an endpoint stops its replicas and removes it.
                ("endpoint", _) => Command::DeleteEndpoint {
                    name: req.name.clone(),
                },
                ("job", _) => Command::CancelJob {
                    name: req.name.clone(),
                },
                _ => {
                    return Err(Status::invalid_argument(
                        "only jobs and workflows can be cancelled, and endpoints deleted",
                    ))
                }
            };
            // Judge ownership on current state, not a follower's older copy.
            let checked = || {
                self.check(
                    who,
                    &Action::Stop {
                        verb,
                        kind,
                        name: &req.name,
                    },
                )?;
                Ok(cmd.clone())
            };
            let object_json = self.proposer().checked_write(None, checked).await?;
            Ok(Response::new(pb::CancelResponse { object_json }))
        }
        .await;
        let verb = match req.action.as_str() {
            "suspend" | "resume" => req.action.as_str(),
            _ => "cancel",
        };
        self.audit(&who, verb, kind.unwrap_or(""), &req.name, &r);
        r
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let (md, _, req) = req.into_parts();
        let who = self.caller(&md).await;
        let kind = kind_of(&req.kind);
        let r = async {
            let who = who.as_ref().map_err(Clone::clone)?;
            let kind = kind.clone()?;
            let name = req.name.clone();
            let cmd = match kind {
                "job" => Command::DeleteJob { name },
                "workflow" => Command::DeleteWorkflow { name },
                "endpoint" => Command::DeleteEndpoint { name },
                "secret" => Command::DeleteSecret { name },
                other => match super::argo_objects::delete_command(other, name) {
                    Some(cmd) => cmd,
                    None => {
                        return Err(Status::invalid_argument(format!(
                            "{other}s cannot be deleted; jobs, workflows, endpoints, secrets, workflowtemplates, clusterworkflowtemplates and cronworkflows can"
                        )))
                    }
                },
            };
            // Judge ownership on current state, not a follower's older copy.
            let checked = || {
                self.check(
                    who,
                    &Action::Stop {
                        verb: "delete",
                        kind,
                        name: &req.name,
                    },
                )?;
                Ok(cmd.clone())
            };
            let object_json = self.proposer().checked_write(None, checked).await?;
            Ok(Response::new(pb::DeleteResponse { object_json }))
        }
        .await;
        self.audit(&who, "delete", kind.unwrap_or(""), &req.name, &r);
        r
    }

    async fn cordon(
        &self,
        req: Request<pb::CordonRequest>,
    ) -> Result<Response<pb::CordonResponse>, Status> {
        let (md, _, req) = req.into_parts();
        let who = self.caller(&md).await;
        let r = async {
            let who = who.as_ref().map_err(Clone::clone)?;
            self.check(who, &Action::Cordon { node: &req.node })?;
            let object_json = self
                .proposer()
                .propose(Command::Cordon {
                    node: req.node.clone(),
                    unschedulable: req.cordon || req.evict,
                    reason: Some(req.reason.clone()).filter(|r| !r.trim().is_empty()),
                    evict: req.evict,
                })
                .await?;
            Ok(Response::new(pb::CordonResponse { object_json }))
        }
        .await;
        let verb = match (req.evict, req.cordon) {
            (true, _) => "drain",
            (false, true) => "cordon",
            (false, false) => "uncordon",
        };
        self.audit(&who, verb, "node", &req.node, &r);
        r
    }

    async fn wait(
        &self,
        req: Request<pb::WaitRequest>,
    ) -> Result<Response<pb::WaitResponse>, Status> {
        self.allow(req.metadata(), &Action::Read).await?;
        let req = req.into_inner();
        self.proposer().read_barrier().await?;
        let limit = if req.timeout_ms == 0 {
            self.opts.max_wait
        } else {
            Duration::from_millis(req.timeout_ms).min(self.opts.max_wait)
        };
        let deadline = tokio::time::Instant::now() + limit;
        let mut version = self.raft.shared.version.subscribe();
        // `workflow/NAME` or `job/NAME` says which; a bare name is the
        // workflow when there is one (a workflow whose entrypoint is one
        // step has a step job of its own name), else the job.
        let (only, name) = match req.name.split_once('/') {
            Some(("workflow" | "workflows" | "wf", n)) => (Some("workflow"), n),
            Some(("job" | "jobs", n)) => (Some("job"), n),
            _ => (None, req.name.as_str()),
        };
        loop {
            let workflow = if only == Some("job") {
                None
            } else {
                self.workflow_phase(name)
            };
            let job = match workflow {
                Some(_) => None,
                None if only == Some("workflow") => None,
                None => {
                    let st = self.state();
                    match st.jobs.get(name) {
                        Some(j) => Some((j.status.phase, json(j)?)),
                        None => None,
                    }
                }
            };
            let (phase, obj) = match job {
                Some(j) => j,
                None => {
                    let what = match only {
                        Some("workflow") => "no workflow",
                        Some(_) => "no job",
                        None => "no job or workflow",
                    };
                    let (wphase, obj) =
                        workflow.ok_or_else(|| Status::not_found(format!("{what} {name:?}")))?;
                    if wphase.is_terminal() {
                        return Ok(Response::new(pb::WaitResponse {
                            finished: true,
                            phase: workflow_phase_to_pb(wphase).into(),
                            object_json: obj,
                        }));
                    }
                    (JobPhase::Running, obj)
                }
            };
            if phase.is_terminal() {
                return Ok(Response::new(pb::WaitResponse {
                    finished: true,
                    phase: job_phase_to_pb(phase).into(),
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
                    phase: job_phase_to_pb(phase).into(),
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
        self.allow(req.metadata(), &Action::Read).await?;
        let req = req.into_inner();
        let (endpoint, attempt, is_current) = {
            let st = self.state();
            let j = st.jobs.get(&req.job).ok_or_else(|| {
                // An endpoint's replica job is removed when it ends; where to look.
                let endpoint = req
                    .job
                    .rsplit_once("-replica-")
                    .map(|(e, _)| e)
                    .filter(|e| st.endpoints.contains_key(*e));
                Status::not_found(match endpoint {
                    Some(e) => format!(
                        "job {:?} not found: replicas of endpoint {e} are removed when they end; `gpuctl describe endpoint {e}` shows why each ended, with its last output",
                        req.job
                    ),
                    None => format!("job {:?} not found", req.job),
                })
            })?;
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
        let channel = self.peers.connect_agent(&endpoint).await.map_err(|e| {
            Status::unavailable(format!("cannot reach the node daemon at {endpoint}: {e}"))
        })?;
        let mut client = gpuctl_proto::v1::node_agent_client::NodeAgentClient::new(channel);
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
        // Open to every caller, like a health check: replicas, roles and
        // terms, which `gpuctl cluster status` and failover need before any
        // credential is known to work.
        Ok(Response::new(self.status_reply()))
    }

    async fn add_peer(
        &self,
        req: Request<pb::AddPeerRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let (md, _, r) = req.into_parts();
        let who = self.caller(&md).await;
        let id = r.id.to_string();
        let result = self.add_peer_as(&who, &md, r).await;
        self.audit(&who, "add", "peer", &id, &result);
        result
    }

    async fn remove_peer(
        &self,
        req: Request<pb::RemovePeerRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let (md, _, r) = req.into_parts();
        let who = self.caller(&md).await;
        let id = r.id.to_string();
        let result = self.remove_peer_as(&who, &md, r).await;
        self.audit(&who, "remove", "peer", &id, &result);
        result
    }
}

impl Api {
    async fn add_peer_as(
        &self,
        who: &Result<Principal, Status>,
        md: &MetadataMap,
        r: pb::AddPeerRequest,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        self.check(who.as_ref().map_err(Clone::clone)?, &Action::ChangePeers)?;
        if r.id == 0 {
            return Err(Status::invalid_argument("replica ids start at 1"));
        }
        let url = self.peers.url(&r.address);
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
            forwarded(
                md,
                pb::AddPeerRequest {
                    id: r.id,
                    address: r.address,
                },
            ),
        )
        .await
    }

    async fn remove_peer_as(
        &self,
        who: &Result<Principal, Status>,
        md: &MetadataMap,
        r: pb::RemovePeerRequest,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        self.check(who.as_ref().map_err(Clone::clone)?, &Action::ChangePeers)?;
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
            forwarded(md, pb::RemovePeerRequest { id: r.id }),
        )
        .await
    }
}

/// An endpoint as `Get` answers it: without its API key hashes unless the
/// caller may have them.
fn shown_endpoint(
    mut e: gpuctl_common::endpoint::Endpoint,
    key_hashes: bool,
) -> gpuctl_common::endpoint::Endpoint {
    if !key_hashes {
        e.status.api_key_hashes.clear();
    }
    e
}
