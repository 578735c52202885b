//! Read models computed from the state: what a queue holds, an endpoint
//! with its replicas' URLs, the jobs waiting for placement, and the tasks a
//! node daemon should run (its assignments, with a workflow step's files).

use gpuctl_common::api::{Job, JobPhase, TaskStatus};
use gpuctl_common::endpoint::Endpoint;
use gpuctl_common::queue::{QueueStatus, DEFAULT_QUEUE};
use gpuctl_pipelines::StepToLaunch;
use gpuctl_proto::v1 as pb;

use super::endpoints::endpoint_of;
use super::State;

impl State {
    /// What a queue's jobs hold and wait for now.
    pub fn queue_status(&self, queue: &str) -> QueueStatus {
        let mut st = QueueStatus::default();
        let mut milli = 0u64;
        for j in self.jobs.values() {
            if j.metadata.queue.as_deref().unwrap_or(DEFAULT_QUEUE) != queue {
                continue;
            }
            match j.status.phase {
                JobPhase::Pending => st.pending_jobs += 1,
                JobPhase::Running => st.running_jobs += 1,
                _ => {}
            }
            milli += j.gpu_milli_held();
        }
        st.gpus_in_use = milli as f64 / 1000.0;
        st
    }

    /// An endpoint as users and the gateway read it: each replica's phase, node and
    /// URL filled in from its job and node.
    pub fn endpoint_view(&self, name: &str) -> Option<Endpoint> {
        let mut e = self.endpoints.get(name)?.clone();
        for r in &mut e.status.replicas {
            let task = self.jobs.get(&r.job).and_then(|j| j.status.tasks.first());
            r.phase = task.map(|t| t.phase);
            r.node = task.and_then(|t| t.node.clone());
            r.url = task.and_then(|t| {
                let node = self.nodes.get(t.node.as_deref()?)?;
                let port = t.port?;
                let host = if node.status.address.contains(':') {
                    format!("[{}]", node.status.address)
                } else {
                    node.status.address.clone()
                };
                Some(format!("http://{host}:{port}"))
            });
            if let Some(p) = task.and_then(|t| t.port) {
                r.port = p;
            }
        }
        Some(e)
    }

    /// Every endpoint as [`State::endpoint_view`] shows it.
    pub fn endpoint_views(&self) -> Vec<Endpoint> {
        self.endpoints
            .keys()
            .filter_map(|n| self.endpoint_view(n))
            .collect()
    }

    /// Jobs waiting for placement, in submission order.
    pub fn pending_jobs(&self) -> Vec<&Job> {
        let mut v: Vec<&Job> = self
            .jobs
            .values()
            .filter(|j| j.status.phase == JobPhase::Pending)
            .collect();
        v.sort_by_key(|j| {
            (
                std::cmp::Reverse(j.spec.priority),
                j.metadata.uid.unwrap_or(0),
            )
        });
        v
    }

    /// Tasks (of current attempts) bound to or running on `node`.
    pub fn tasks_on_node<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = (&'a Job, &'a TaskStatus)> + 'a {
        self.jobs.values().flat_map(move |j| {
            j.status
                .tasks
                .iter()
                .filter(move |t| t.phase.holds_resources() && t.node.as_deref() == Some(node))
                .map(move |t| (j, t))
        })
    }
}

/// The tasks `node` should run, as the node daemon sees them.
pub fn assignments_for(st: &State, node: &str, version: u64) -> pb::Assignments {
    let mut tasks = Vec::new();
    for (job, t) in st.tasks_on_node(node) {
        let Some(spec) = job.task_spec(t.index) else {
            continue;
        };
        let master = job
            .status
            .tasks
            .first()
            .and_then(|t0| t0.node.as_ref())
            .and_then(|n| st.nodes.get(n))
            .map(|n| n.status.address.clone())
            .unwrap_or_default();
        tasks.push(pb::TaskAssignment {
            job: job.metadata.name.clone(),
            task_index: t.index,
            attempt: job.status.attempt,
            task_group: t.group.clone(),
            command: spec.command.clone(),
            env: spec.env.clone().into_iter().collect(),
            working_dir: spec.working_dir.clone().unwrap_or_default(),
            gpu_indices: t.gpus.iter().map(|g| g.index).collect(),
            gpu_uuids: t.gpus.iter().map(|g| g.uuid.clone()).collect(),
            gpu_milli: t.gpus.iter().map(|g| g.milli).collect(),
            phase: t.phase.to_string(),
            world_size: job.task_count(),
            rank: t.index,
            local_rank: t.local_rank,
            master_addr: master,
            master_port: job.status.master_port,
            job_tasks: job.task_count(),
            step: step_io(st, job),
            wants_port: endpoint_of(job).is_some(),
        });
    }
    tasks.sort_by(|a, b| (&a.job, a.task_index).cmp(&(&b.job, b.task_index)));
    pb::Assignments { version, tasks }
}

/// The files of a step job, for its `TaskAssignment`.
fn step_io(st: &State, job: &Job) -> Option<pb::StepIo> {
    let s: &StepToLaunch = st.step_of_job(job)?;
    let art = |name: &str, path: &str, optional: bool, key: &gpuctl_pipelines::ArtifactKey| {
        pb::ArtifactRef {
            name: name.to_string(),
            path: path.to_string(),
            optional,
            store_workflow: key.workflow.clone(),
            store_step: key.step.clone(),
            store_name: key.name.clone(),
        }
    };
    Some(pb::StepIo {
        workflow: s.workflow.clone(),
        step: s.id.clone(),
        has_script: s.script_source.is_some(),
        script_source: s.script_source.clone().unwrap_or_default(),
        script_arg_index: s.command.len() as u32,
        capture_result: s.script_source.is_some(),
        output_parameters: s
            .output_parameters
            .iter()
            .map(|p| pb::OutputParameter {
                name: p.name.clone(),
                path: p.path.clone(),
            })
            .collect(),
        input_artifacts: s
            .input_artifacts
            .iter()
            .map(|a| art(&a.name, a.path.as_deref().unwrap_or(""), false, &a.from))
            .collect(),
        output_artifacts: s
            .output_artifacts
            .iter()
            .map(|a| art(&a.name, &a.path, a.optional, &a.key))
            .collect(),
    })
}
