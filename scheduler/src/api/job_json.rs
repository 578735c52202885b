//! Jobs as `Get` answers them, encoded once per version: a list of jobs
//! (`gpuctl get jobs`, every page of it) re-encodes only the jobs that
//! changed since the last list, the rest are copies of the text kept from
//! then. A job's version is its `resourceVersion`, the log index of the
//! last apply that changed it (`State::touch_job`), so a kept text is
//! never older than the job it stands for. Not replicated and not stored:
//! each replica keeps its own, and forgets jobs the state no longer holds.

use std::collections::HashMap;
use std::sync::Mutex;

use gpuctl_common::api::Job;
use tonic::Status;

use super::convert::json;

/// See the module doc.
#[derive(Debug, Default)]
pub struct JobJson {
    /// Job name → the version it was encoded at, and the text.
    kept: Mutex<HashMap<String, (u64, String)>>,
}

/// Kept texts beyond this many over the state's jobs are swept.
const SLACK: usize = 1024;

impl JobJson {
    /// `jobs` encoded as JSON, in order. `held` is how many jobs the state
    /// holds now and `holds` whether it holds one by name: once the kept
    /// texts outnumber the jobs by [`SLACK`], those of jobs gone are dropped.
    pub fn encode(
        &self,
        jobs: &[&Job],
        held: usize,
        holds: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, Status> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(jobs.len());
        for j in jobs {
            let Some(version) = j.metadata.resource_version else {
                // Never applied (not from the state): nothing to key it by.
                out.push(json(j)?);
                continue;
            };
            match kept.get(&j.metadata.name) {
                Some((v, text)) if *v == version => {
                    debug_assert_eq!(
                        text,
                        &json(j)?,
                        "job {} changed at the same version",
                        j.metadata.name
                    );
                    out.push(text.clone());
                }
                _ => {
                    let text = json(j)?;
                    kept.insert(j.metadata.name.clone(), (version, text.clone()));
                    out.push(text);
                }
            }
        }
        if kept.len() > held + SLACK {
            kept.retain(|name, _| holds(name));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, version: u64, priority: i32) -> Job {
        let mut j = gpuctl_testkit::job(name).build();
        j.metadata.resource_version = Some(version);
        j.spec.priority = priority;
        j
    }

    #[test]
    fn a_job_is_encoded_again_when_its_version_moves() {
        let cache = JobJson::default();
        let a1 = job("a", 1, 0);
        let b1 = job("b", 2, 0);
        let all = |_: &str| true;
        let first = cache.encode(&[&a1, &b1], 2, all).unwrap();
        assert_eq!(first, [json(&a1).unwrap(), json(&b1).unwrap()]);
        let a3 = job("a", 3, 7);
        let second = cache.encode(&[&a3, &b1], 2, all).unwrap();
        assert_eq!(second[0], json(&a3).unwrap(), "the new version's text");
        assert!(second[0].contains("\"priority\":7"), "{}", second[0]);
        assert_eq!(second[1], first[1]);
    }

    #[test]
    fn texts_of_jobs_gone_are_swept() {
        let cache = JobJson::default();
        let many: Vec<Job> = (0..(SLACK as u64 + 10))
            .map(|i| job(&format!("j{i}"), i + 1, 0))
            .collect();
        let refs: Vec<&Job> = many.iter().collect();
        cache.encode(&refs, refs.len(), |_| true).unwrap();
        // The state now holds j0 and j1: the next list (of j0 alone, its
        // first page) sweeps the rest.
        let only = job("j0", 1, 0);
        cache
            .encode(&[&only], 2, |n| n == "j0" || n == "j1")
            .unwrap();
        let kept = cache.kept.lock().unwrap();
        let mut names: Vec<&String> = kept.keys().collect();
        names.sort();
        assert_eq!(names, ["j0", "j1"]);
    }
}
