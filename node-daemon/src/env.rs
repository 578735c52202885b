//! The environment a task process sees. Pure: an assignment in, variables out.
//!
//! Layers, later wins: the daemon's own environment (PATH, HOME, ...; the
//! process inherits it), then the task's `envFrom` secrets, then the user's
//! `env` from the job spec, then the
//! variables the daemon owns
//! (GPU visibility, job identity, and for gangs what `torch.distributed`
//! reads). A user cannot override `CUDA_VISIBLE_DEVICES` by accident and get
//! GPUs that were bound to another task.

use std::collections::BTreeMap;

use crate::assignment::Assignment;

/// The variables the daemon sets for `a`, without the inherited environment.
/// The spec env comes first and the daemon's own variables replace it.
pub fn task_env(a: &Assignment) -> BTreeMap<String, String> {
    let mut env = a.secret_env.clone();
    env.extend(a.env.clone());
    let gpus = a
        .gpu_indices
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    // With no GPU bound, CUDA sees none (empty list) and the NVIDIA container
    // runtime's convention for "no devices" is `void`.
    let nvidia = if gpus.is_empty() {
        "void".to_string()
    } else {
        gpus.clone()
    };
    env.insert("CUDA_VISIBLE_DEVICES".into(), gpus);
    env.insert("NVIDIA_VISIBLE_DEVICES".into(), nvidia);
    env.insert("GPUCTL_JOB".into(), a.job.clone());
    env.insert("GPUCTL_TASK_INDEX".into(), a.task_index.to_string());
    env.insert("GPUCTL_ATTEMPT".into(), a.attempt.to_string());
    if a.job_tasks > 1 {
        env.insert("WORLD_SIZE".into(), a.world_size.to_string());
        env.insert("RANK".into(), a.rank.to_string());
        env.insert("LOCAL_RANK".into(), a.local_rank.to_string());
        env.insert("MASTER_ADDR".into(), a.master_addr.clone());
        env.insert("MASTER_PORT".into(), a.master_port.to_string());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuctl_common::api::TaskPhase;

    fn assignment() -> Assignment {
        Assignment {
            job: "train".into(),
            task_index: 0,
            attempt: 1,
            command: vec!["python".into(), "train.py".into()],
            phase: TaskPhase::Bound,
            job_tasks: 1,
            world_size: 1,
            ..Default::default()
        }
    }

    fn pairs(env: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn single_task() {
        let mut a = assignment();
        a.gpu_indices = vec![2, 3];
        a.env.insert("EPOCHS".into(), "3".into());
        // The user cannot take GPUs that are not theirs, and a single task
        // gets no gang variables even if the spec sets them.
        a.env
            .insert("CUDA_VISIBLE_DEVICES".into(), "0,1,2,3".into());
        a.env.insert("RANK".into(), "7".into());
        assert_eq!(
            pairs(&task_env(&a)),
            vec![
                ("CUDA_VISIBLE_DEVICES", "2,3"),
                ("EPOCHS", "3"),
                ("GPUCTL_ATTEMPT", "1"),
                ("GPUCTL_JOB", "train"),
                ("GPUCTL_TASK_INDEX", "0"),
                ("NVIDIA_VISIBLE_DEVICES", "2,3"),
                ("RANK", "7"),
            ]
        );
    }

    #[test]
    fn gang_of_two() {
        let mut a = assignment();
        a.task_index = 1;
        a.attempt = 2;
        a.job_tasks = 2;
        a.world_size = 2;
        a.rank = 1;
        a.local_rank = 0;
        a.master_addr = "10.0.0.5".into();
        a.master_port = 29500;
        a.gpu_indices = vec![0];
        a.env.insert("MASTER_PORT".into(), "1".into());
        assert_eq!(
            pairs(&task_env(&a)),
            vec![
                ("CUDA_VISIBLE_DEVICES", "0"),
                ("GPUCTL_ATTEMPT", "2"),
                ("GPUCTL_JOB", "train"),
                ("GPUCTL_TASK_INDEX", "1"),
                ("LOCAL_RANK", "0"),
                ("MASTER_ADDR", "10.0.0.5"),
                ("MASTER_PORT", "29500"),
                ("NVIDIA_VISIBLE_DEVICES", "0"),
                ("RANK", "1"),
                ("WORLD_SIZE", "2"),
            ]
        );
    }

    #[test]
    fn no_gpus() {
        let a = assignment();
        let env = task_env(&a);
        assert_eq!(env["CUDA_VISIBLE_DEVICES"], "");
        assert_eq!(env["NVIDIA_VISIBLE_DEVICES"], "void");
        assert!(!env.contains_key("WORLD_SIZE"));
    }
}
