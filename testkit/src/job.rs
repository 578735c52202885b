//! [`JobBuilder`]: a job of one task group, as `gpuctl submit` would make it.

use std::collections::BTreeMap;

use gpuctl_common::api::{Bytes, Cpu, Job, JobSpec, Resources, TaskSpec, Topology};

/// A job named `name`: one group `main` of one task running `true`, asking
/// for nothing, in no named queue, not yet stored (attempt 0).
pub fn job(name: &str) -> JobBuilder {
    JobBuilder {
        job: Job::new(
            name,
            JobSpec {
                tasks: vec![TaskSpec {
                    name: "main".into(),
                    replicas: 1,
                    command: vec!["true".into()],
                    env: BTreeMap::new(),
                    env_from: Vec::new(),
                    secret_files: Vec::new(),
                    working_dir: None,
                    resources: Resources::default(),
                    image: None,
                }],
                min_available: None,
                priority: 0,
                topology: Topology::default(),
                max_retries: 0,
                timeout_seconds: None,
                ttl_seconds_after_finished: None,
            },
        ),
    }
}

/// Sets one field at a time of the job [`job`] starts; the task methods
/// change its one group.
#[derive(Debug, Clone)]
pub struct JobBuilder {
    job: Job,
}

impl JobBuilder {
    fn task(&mut self) -> &mut TaskSpec {
        &mut self.job.spec.tasks[0]
    }

    fn resources(&mut self) -> &mut Resources {
        &mut self.task().resources
    }

    /// The group's name (`main` otherwise).
    pub fn group(mut self, name: &str) -> Self {
        self.task().name = name.into();
        self
    }

    pub fn replicas(mut self, n: u32) -> Self {
        self.task().replicas = n;
        self
    }

    pub fn command(mut self, argv: &[&str]) -> Self {
        self.task().command = argv.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.task().env.insert(key.into(), value.into());
        self
    }

    /// GPUs per task: whole (2.0) or a share of one (0.5).
    pub fn gpus(mut self, gpus: f64) -> Self {
        self.resources().gpus = gpus;
        self
    }

    /// Acceptable GPU models, `|`-separated as in YAML.
    pub fn gpu_model(mut self, model: &str) -> Self {
        self.resources().gpu_model = Some(model.into());
        self
    }

    /// Least memory each bound GPU must have.
    pub fn gpu_memory(mut self, bytes: u64) -> Self {
        self.resources().gpu_memory = Some(Bytes(bytes));
        self
    }

    /// CPU per task, in thousandths of a core.
    pub fn cpu_milli(mut self, milli: u64) -> Self {
        self.resources().cpu = Some(Cpu(milli));
        self
    }

    /// Host memory per task.
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.resources().memory = Some(Bytes(bytes));
        self
    }

    /// Replaces the group's whole resource request.
    pub fn with_resources(mut self, r: Resources) -> Self {
        *self.resources() = r;
        self
    }

    pub fn queue(mut self, queue: &str) -> Self {
        self.job.metadata.queue = Some(queue.into());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.job.metadata.labels.insert(key.into(), value.into());
        self
    }

    pub fn priority(mut self, p: i32) -> Self {
        self.job.spec.priority = p;
        self
    }

    pub fn min_available(mut self, n: u32) -> Self {
        self.job.spec.min_available = Some(n);
        self
    }

    pub fn topology(mut self, t: Topology) -> Self {
        self.job.spec.topology = t;
        self
    }

    pub fn max_retries(mut self, n: u32) -> Self {
        self.job.spec.max_retries = n;
        self
    }

    pub fn timeout_seconds(mut self, s: Option<u64>) -> Self {
        self.job.spec.timeout_seconds = s;
        self
    }

    pub fn ttl_seconds_after_finished(mut self, s: Option<u64>) -> Self {
        self.job.spec.ttl_seconds_after_finished = s;
        self
    }

    /// As the state machine would have stored it: `uid` is the Raft index.
    pub fn uid(mut self, uid: u64) -> Self {
        self.job.metadata.uid = Some(uid);
        self
    }

    pub fn created_ms(mut self, ms: u64) -> Self {
        self.job.metadata.creation_timestamp_ms = Some(ms);
        self
    }

    /// The status' attempt: 1 for a job the state machine has taken in.
    pub fn attempt(mut self, n: u32) -> Self {
        self.job.status.attempt = n;
        self
    }

    pub fn build(self) -> Job {
        self.job
    }
}

#[cfg(test)]
mod tests {
    use gpuctl_common::api::{parse_manifests, Manifest};

    use super::*;

    fn parse(text: &str) -> Job {
        match parse_manifests("job.yaml", text).unwrap().remove(0) {
            Manifest::Job(j) => j,
            other => panic!("not a job: {other:?}"),
        }
    }

    #[test]
    fn a_bare_job_is_what_the_parser_makes_of_a_name_and_a_command() {
        let j = job("train").build();
        j.validate().unwrap();
        let yaml = "apiVersion: gpuctl.io/v1\nkind: Job\nmetadata: {name: train}\nspec:\n  tasks: [{command: [\"true\"]}]\n";
        assert_eq!(j, parse(yaml));
    }

    #[test]
    fn every_setter_lands_where_the_yaml_field_would() {
        let j = job("train")
            .group("worker")
            .replicas(2)
            .command(&["python", "train.py"])
            .env("EPOCHS", "3")
            .gpus(0.5)
            .gpu_model("A100|H100")
            .gpu_memory(40 << 30)
            .cpu_milli(500)
            .memory_bytes(16 << 30)
            .queue("research")
            .label("team", "ml")
            .priority(5)
            .min_available(1)
            .topology(Topology::Any)
            .max_retries(3)
            .timeout_seconds(Some(60))
            .ttl_seconds_after_finished(Some(10))
            .build();
        j.validate().unwrap();
        let yaml = r#"
apiVersion: gpuctl.io/v1
kind: Job
metadata: {name: train, queue: research, labels: {team: ml}}
spec:
  tasks:
    - name: worker
      replicas: 2
      command: [python, train.py]
      env: {EPOCHS: "3"}
      resources: {gpus: 0.5, gpuModel: "A100|H100", gpuMemory: 40Gi, cpu: 500m, memory: 16Gi}
  minAvailable: 1
  priority: 5
  topology: any
  maxRetries: 3
  timeoutSeconds: 60
  ttlSecondsAfterFinished: 10
"#;
        assert_eq!(j, parse(yaml));
    }
}
