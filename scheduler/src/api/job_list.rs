//! Paged lists of jobs and the jobs' JSON they answer with.
//!
//! `Get` of jobs with `limit` / `continue_token` reads one page in
//! submission order ([`JobJson::page`]): the first page after a read
//! barrier, the next ones from this replica's state once it has applied
//! what the first page saw (the token carries that index), as a Kubernetes
//! list's continuation reads at its first page's resourceVersion.
//!
//! Jobs are encoded once per version ([`JobJson`]): a list of jobs
//! (`gpuctl get jobs`, every page of it) re-encodes only the jobs that
//! changed since the last list, the rest are copies of the text kept from
//! then. A job's version is its `resourceVersion`, the log index of the
//! last apply that changed it (`State::touch_job`), so a kept text is
//! never older than the job it stands for. Not replicated and not stored:
//! each replica keeps its own, and forgets jobs the state no longer holds.

use std::collections::HashMap;
use std::sync::Mutex;

use gpuctl_common::api::Job;
use gpuctl_proto::v1 as pb;
use tonic::Status;

use super::convert::json;
use super::proposer::Proposer;
use crate::state::State;

/// Jobs' JSON kept by version; see the module doc.
#[derive(Debug, Default)]
pub struct JobJson {
    /// Job name → the version it was encoded at, and the text.
    kept: Mutex<HashMap<String, (u64, String)>>,
}

/// Kept texts beyond this many over the state's jobs are swept.
const SLACK: usize = 1024;

impl JobJson {
    /// `jobs`, read from `st`, encoded as JSON, in order. Once the kept
    /// texts outnumber the state's jobs by [`SLACK`], those of jobs the
    /// state no longer holds are dropped.
    pub fn encode(&self, jobs: &[&Job], st: &State) -> Result<Vec<String>, Status> {
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
        if kept.len() > st.jobs.len() + SLACK {
            kept.retain(|name, _| st.jobs.contains_key(name));
        }
        Ok(out)
    }
}

/// Where a paged list of jobs goes on: the applied index its first page
/// was read at (every later page reads a state at least that new), and
/// the last listed job's uid and name.
struct ListCursor<'a> {
    index: u64,
    uid: u64,
    name: &'a str,
}

impl<'a> ListCursor<'a> {
    fn token(index: u64, last: &Job) -> String {
        let uid = last.metadata.uid.unwrap_or(0);
        format!("{index}:{uid}:{}", last.metadata.name)
    }

    fn parse(t: &'a str) -> Result<Self, Status> {
        let parsed = (|| {
            let (index, rest) = t.split_once(':')?;
            let (uid, name) = rest.split_once(':')?;
            Some(ListCursor {
                index: index.parse().ok()?,
                uid: uid.parse().ok()?,
                name: Some(name).filter(|n| !n.is_empty())?,
            })
        })();
        parsed.ok_or_else(|| {
            Status::invalid_argument(format!(
                "continue_token {t:?} is not one this server gave (it is the previous answer's continue_token, as given)"
            ))
        })
    }
}

impl JobJson {
    /// One page of `get jobs` (`limit`, `continue_token`), in submission
    /// order; only this page's jobs are encoded. The first page reads after
    /// a read barrier, as every `Get`; the next ones, as a Kubernetes list's
    /// continuation, need no round to the leader: they are read here once
    /// this replica has applied what the first page saw (at once, almost
    /// always; otherwise after a barrier).
    /// `proposer` reads and waits on this replica's Raft.
    pub(super) async fn page(
        &self,
        proposer: Proposer<'_>,
        req: &pb::GetRequest,
    ) -> Result<pb::GetResponse, Status> {
        let shared = &proposer.raft.shared;
        let cursor = match req.continue_token.as_str() {
            "" => None,
            t => Some(ListCursor::parse(t)?),
        };
        let seen = cursor.as_ref().map_or(u64::MAX, |c| c.index);
        if *shared.version.borrow() < seen {
            proposer.read_barrier().await?;
        }
        // The first page's applied index, taken before the read: the state
        // read is at least it.
        let index = cursor
            .as_ref()
            .map_or_else(|| *shared.version.borrow(), |c| c.index);
        let after = cursor.as_ref().map(|c| (c.uid, c.name));
        let st = shared.read();
        let (jobs, more) = st.jobs_page(after, req.limit as usize);
        let continue_token = match (more, jobs.last()) {
            (true, Some(last)) => ListCursor::token(index, last),
            _ => String::new(),
        };
        let objects_json = self.encode(&jobs, &st)?;
        Ok(pb::GetResponse {
            objects_json,
            continue_token,
        })
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
        let st = State::from_objects(vec![a1.clone(), b1.clone()], vec![]);
        let first = cache.encode(&[&a1, &b1], &st).unwrap();
        assert_eq!(first, [json(&a1).unwrap(), json(&b1).unwrap()]);
        let a3 = job("a", 3, 7);
        let second = cache.encode(&[&a3, &b1], &st).unwrap();
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
        let all = State::from_objects(many.clone(), vec![]);
        cache.encode(&refs, &all).unwrap();
        // The state now holds j0 and j1: the next list (of j0 alone, its
        // first page) sweeps the rest.
        let st = State::from_objects(many[..2].to_vec(), vec![]);
        cache.encode(&[&many[0]], &st).unwrap();
        let kept = cache.kept.lock().unwrap();
        let mut names: Vec<&String> = kept.keys().collect();
        names.sort();
        assert_eq!(names, ["j0", "j1"]);
    }
}
