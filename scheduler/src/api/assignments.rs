//! What a node daemon is told to run: the tasks the state binds to a node
//! (`State::tasks_on_node`) as `TaskAssignment` messages, with the gang's
//! rendezvous, the GPUs, the phase as the proto enum, and a workflow
//! step's files.

use gpuctl_common::api::Job;
use gpuctl_pipelines::StepToLaunch;
use gpuctl_proto::v1 as pb;

use super::convert::phase_to_pb;
use crate::state::endpoints::endpoint_of;
use crate::state::State;

/// The tasks `node` should run, as the node daemon sees them; with
/// `owners`, each names who it runs as (off when the scheduler runs without
/// authentication: tasks run as the daemon's own user).
pub(super) fn assignments_for(
    st: &State,
    node: &str,
    version: u64,
    owners: bool,
) -> pb::Assignments {
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
        let (secret_env, secret_files, secret_error) =
            match st.task_secrets(spec, gpuctl_security::sealing::installed()) {
                Ok(s) => (
                    s.env.into_iter().collect(),
                    s.files.into_iter().collect(),
                    String::new(),
                ),
                Err(why) => (Default::default(), Default::default(), why),
            };
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
            phase: phase_to_pb(t.phase).into(),
            world_size: job.task_count(),
            rank: t.index,
            local_rank: t.local_rank,
            master_addr: master,
            master_port: job.status.master_port,
            job_tasks: job.task_count(),
            step: step_io(st, job),
            wants_port: endpoint_of(job).is_some(),
            owner: if owners { owner_of(st, job) } else { None },
            secret_env,
            secret_files,
            secret_error,
            cpu_milli: spec.resources.cpu.as_ref().map_or(0, |c| c.0),
            memory_bytes: spec.resources.memory.as_ref().map_or(0, |m| m.0),
            image: spec.image.clone().unwrap_or_default(),
            serve_plaintext: endpoint_of(job)
                .and_then(|e| st.endpoints.get(e))
                .is_some_and(|e| !e.spec.serves_tls()),
        });
    }
    tasks.sort_by(|a, b| (&a.job, a.task_index).cmp(&(&b.job, b.task_index)));
    pb::Assignments { version, tasks }
}

/// Who a job's tasks run as: its owner, with the user's uid and root
/// permission; none for a job without an owner.
fn owner_of(st: &State, job: &Job) -> Option<pb::TaskOwner> {
    let user = job.metadata.owner.as_ref()?;
    let u = st.users.get(user);
    Some(pb::TaskOwner {
        user: user.clone(),
        uid: u.and_then(|u| u.uid),
        allow_root: u.is_some_and(|u| u.allow_root),
    })
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
            raw: None,
        }
    };
    Some(pb::StepIo {
        workflow: s.workflow.clone(),
        step: s.id.clone(),
        has_script: s.script_source.is_some(),
        script_source: s.script_source.clone().unwrap_or_default(),
        script_arg_index: s.command.len() as u32,
        capture_result: s.script_source.is_some() || s.capture_result,
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
            .map(|a| pb::ArtifactRef {
                raw: a.raw.clone(),
                ..art(&a.name, a.path.as_deref().unwrap_or(""), false, &a.from)
            })
            .collect(),
        output_artifacts: s
            .output_artifacts
            .iter()
            .map(|a| art(&a.name, &a.path, a.optional, &a.key))
            .collect(),
    })
}
