//! The `NodeService`, for node daemons: register, heartbeat (passed on to
//! the leader, which tracks liveness), watch assignments, report task
//! phases, and ask which workflows are gone.

use std::time::Instant;

use gpuctl_common::api::{self, NodePhase, TaskPhase};
use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::node_service_server::NodeService;
use tonic::{Request, Response, Status};

use super::assignments::assignments_for;
use super::authz::Action;
use super::convert::reported_phase;
use super::guard::forwarded;
use super::workflows::outputs_from_pb;
use super::{Api, BoxStream};
use crate::state::{Command, GpuFault, NodeRegistration, TaskReport};

#[tonic::async_trait]
impl NodeService for Api {
    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let (md, _, r) = req.into_parts();
        Ok(Response::new(self.join_call(&md, r).await?))
    }

    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let (md, _, r) = req.into_parts();
        self.allow_or_audit(
            &md,
            &Action::AsNode {
                verb: "register",
                node: &r.name,
            },
            ("register", "node", &r.name),
        )
        .await?;
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
                    xid: g.xid,
                })
                .collect(),
            labels: r.labels.into_iter().collect(),
            cordon_after_unhealthy_gpus: r.cordon_after_unhealthy_gpus,
        };
        self.proposer()
            .propose_only(Command::RegisterNode { reg })
            .await?;
        let now = Instant::now();
        self.heartbeats.beat(&r.name, now);
        let interval = self.heartbeats.interval(self.state().nodes.len(), now);
        Ok(Response::new(pb::RegisterResponse {
            heartbeat_interval_ms: interval.as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let (md, _, r) = req.into_parts();
        self.allow(
            &md,
            &Action::AsNode {
                verb: "heartbeat",
                node: &r.name,
            },
        )
        .await?;
        // Liveness is tracked by the leader: pass the beat on when following.
        let st = self.raft.shared.status();
        if !st.is_leader() && st.leader_id != 0 {
            if let Some(mut leader) = self.peers.node_client(st.leader_id) {
                if !self.peers.is_cut_off() {
                    return leader.heartbeat(forwarded(&md, r)).await;
                }
            }
        }
        let (known, nodes) = {
            let st = self.state();
            let known = st
                .nodes
                .get(&r.name)
                .is_some_and(|n| n.status.phase == NodePhase::Ready);
            (known, st.nodes.len())
        };
        let now = Instant::now();
        if known {
            self.heartbeats.beat(&r.name, now);
        }
        Ok(Response::new(pb::HeartbeatResponse {
            reregister: !known,
            heartbeat_interval_ms: self.heartbeats.interval(nodes, now).as_millis() as u64,
        }))
    }

    async fn gone_workflows(
        &self,
        req: Request<pb::GoneWorkflowsRequest>,
    ) -> Result<Response<pb::GoneWorkflowsResponse>, Status> {
        let (md, _, r) = req.into_parts();
        self.allow(&md, &Action::GoneWorkflows).await?;
        // The leader's state is the newest; a follower could lag behind a
        // workflow just created and call it gone.
        if let Some(leader) = self.proposer().leader_elsewhere()? {
            return match self.peers.node_client(leader) {
                Some(mut c) => c.gone_workflows(forwarded(&md, r)).await,
                None => Err(self.proposer().no_leader()),
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
        let (md, _, r) = req.into_parts();
        let node = r.node;
        self.allow(
            &md,
            &Action::AsNode {
                verb: "watch assignments",
                node: &node,
            },
        )
        .await?;
        // Woken only when this node's assignments may have changed.
        let mut wake = self.wakeups.subscribe(&node);
        let shared = self.raft.shared.clone();
        let owners = self.opts.auth.enabled;
        let mut stop = self.stop.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last: Option<Vec<pb::TaskAssignment>> = None;
            loop {
                wake.borrow_and_update();
                let v = *shared.version.borrow();
                shared.metrics.assignment_builds.inc();
                let a = assignments_for(&shared.read(), &node, v, owners);
                if last.as_ref() != Some(&a.tasks) {
                    last = Some(a.tasks.clone());
                    if tx.send(Ok(a)).await.is_err() {
                        return; // the node hung up
                    }
                }
                tokio::select! {
                    r = wake.changed() => if r.is_err() { return },
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
        let (md, _, r) = req.into_parts();
        let task = format!("{}/{}", r.job, r.task_index);
        self.allow_or_audit(
            &md,
            &Action::ReportTask {
                node: &r.node,
                job: &r.job,
                index: r.task_index,
                attempt: r.attempt,
            },
            ("report", "task", &task),
        )
        .await?;
        let phase = reported_phase(r.phase)?;
        let report = TaskReport {
            node: r.node,
            job: r.job,
            index: r.task_index,
            attempt: r.attempt,
            phase,
            exit_code: if phase == TaskPhase::Running {
                None
            } else {
                Some(r.exit_code)
            },
            message: Some(r.message).filter(|m| !m.is_empty()),
            pid: Some(r.pid).filter(|p| *p != 0),
            outputs: r.outputs.map(outputs_from_pb),
            port: u16::try_from(r.port).ok().filter(|p| *p != 0),
            usage: r.usage.map(|u| gpuctl_common::api::TaskUsage {
                cpu_ms: u.cpu_ms,
                memory_peak_bytes: u.memory_peak_bytes,
            }),
            gpu_fault: r.gpu_fault.map(|f| GpuFault {
                index: f.index,
                uuid: f.uuid,
                xid: f.xid,
            }),
        };
        self.proposer()
            .propose_only(Command::TaskReport { report })
            .await?;
        Ok(Response::new(pb::ReportTaskResponse {}))
    }
}
