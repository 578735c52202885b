//! `gpuctl dev --example`: a small gang job submitted once the cluster is
//! up, so that a new user sees something run.

use gpuctl_common::api::{Job, Manifest};
use gpuctl_proto::v1::ApplyRequest;

use crate::client;
use crate::error::Result;
use crate::manifest::{self, SubmitArgs};
use crate::stdout::out;

/// The job `--example` submits.
pub const EXAMPLE_JOB: &str = "hello-example";

/// The `--example` job: 2 tasks × 1 GPU that print their rank.
pub fn example_job() -> Result<Job> {
    manifest::build_submit_job(
        &SubmitArgs {
            name: Some(EXAMPLE_JOB.into()),
            gpus: 1.0,
            replicas: 2,
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo rank=$RANK of $WORLD_SIZE on GPUs $CUDA_VISIBLE_DEVICES".into(),
            ],
            ..Default::default()
        },
        || EXAMPLE_JOB.into(),
    )
}

pub(super) async fn submit_example(urls: &[String], token: &str) -> Result<()> {
    let job = example_job()?;
    let mut conn = client::Conn::new(urls.to_vec())
        .with_bearer(client::Bearer::new(Some(token), "the context")?);
    let req = ApplyRequest {
        object_json: serde_json::to_string(&Manifest::Job(job)).expect("json"),
        source: "<gpuctl dev --example>".into(),
        ..Default::default()
    };
    let r = conn
        .call(|mut c| {
            let req = req.clone();
            async move { c.apply(req).await }
        })
        .await;
    match r {
        Ok(_) => out(&format!("\njob/{EXAMPLE_JOB} created\n"))?,
        Err(client::CallError::Status(s)) if s.code() == tonic::Code::AlreadyExists => out(
            &format!("\njob/{EXAMPLE_JOB} already exists; not submitting it again\n"),
        )?,
        Err(e) => return Err(e.into_error(None, urls)),
    }
    out(&format!(
        "look at it with:\n  gpuctl get jobs\n  gpuctl wait {EXAMPLE_JOB}\n  gpuctl describe job {EXAMPLE_JOB}\n  gpuctl logs {EXAMPLE_JOB} --task 0\n  gpuctl logs {EXAMPLE_JOB} --task 1\n"
    ))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_job_is_valid() {
        let j = example_job().unwrap();
        assert_eq!(j.metadata.name, EXAMPLE_JOB);
        assert_eq!(j.task_count(), 2);
    }
}
