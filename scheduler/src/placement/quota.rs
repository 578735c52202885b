//! Queue quota admission: before placement, a pending job whose queue has a
//! GPU quota (and may not borrow) is held back when its GPUs on top of what
//! the queue already holds would pass the quota. Pure; jobs come in priority
//! order and those admitted earlier in the same pass count against the quota
//! (as if they were bound), so one pass never overshoots.

use std::collections::BTreeMap;

use gpuctl_common::api::Job;
use gpuctl_common::queue::{Queue, DEFAULT_QUEUE};

/// Split `pending` (in priority order) into the jobs placement may consider
/// and those held back by their queue's quota, with the reason.
/// `held_milli` is what each queue's bound and running tasks hold now.
pub fn admit<'a>(
    pending: &[&'a Job],
    queues: &BTreeMap<String, Queue>,
    held_milli: &BTreeMap<String, u64>,
) -> (Vec<&'a Job>, Vec<(&'a Job, String)>) {
    let mut used = held_milli.clone();
    let mut admitted = Vec::with_capacity(pending.len());
    let mut held = Vec::new();
    for &job in pending {
        let qname = job.metadata.queue.as_deref().unwrap_or(DEFAULT_QUEUE);
        let want = job.gpu_milli_requested();
        let limit = queues
            .get(qname)
            .filter(|q| !q.spec.borrow)
            .and_then(|q| q.quota_milli());
        let have = used.entry(qname.to_string()).or_default();
        match limit {
            Some(limit) if want > 0 && *have + want > limit => held.push((
                job,
                format!(
                    "queue {qname:?} is at its GPU quota: {} of {} in use, this job needs {}",
                    gpus(*have),
                    gpus(limit),
                    gpus(want)
                ),
            )),
            _ => {
                *have += want;
                admitted.push(job);
            }
        }
    }
    (admitted, held)
}

fn gpus(milli: u64) -> String {
    if milli.is_multiple_of(1000) {
        format!("{}", milli / 1000)
    } else {
        format!("{:.3}", milli as f64 / 1000.0)
            .trim_end_matches('0')
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::testutil;
    use gpuctl_common::queue::QueueSpec;

    fn job(name: &str, queue: &str, replicas: u32, gpus: f64) -> Job {
        testutil::job(name, Some(queue), 0, replicas, gpus)
    }

    fn queue(name: &str, quota: Option<f64>, borrow: bool) -> (String, Queue) {
        testutil::queue(
            name,
            QueueSpec {
                gpu_quota: quota,
                borrow,
                ..Default::default()
            },
        )
    }

    #[test]
    fn admission_table() {
        let queues: BTreeMap<String, Queue> = [
            queue("capped", Some(4.0), false),
            queue("lender", Some(1.0), true),
            queue("frac", Some(0.5), false),
        ]
        .into();
        // (jobs as (queue, replicas, gpus), held now per queue, admitted names)
        type Case<'a> = (
            &'a [(&'a str, u32, f64)],
            &'a [(&'a str, u64)],
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            // Under the quota: everything goes.
            (
                &[("capped", 2, 1.0), ("capped", 1, 2.0)],
                &[],
                &["j0", "j1"],
            ),
            // The second job would pass 4 GPUs: held; a later small one fits.
            (
                &[("capped", 1, 2.0), ("capped", 1, 2.0), ("capped", 0, 0.0)],
                &[("capped", 1000)],
                &["j0", "j2"],
            ),
            // Already at the quota: only GPU-less jobs pass.
            (&[("capped", 1, 1.0)], &[("capped", 4000)], &[]),
            // Borrowing queues and queues with no object are not capped.
            (
                &[("lender", 4, 1.0), ("default", 8, 1.0)],
                &[],
                &["j0", "j1"],
            ),
            // Fractions add up exactly.
            (
                &[("frac", 1, 0.25), ("frac", 1, 0.25), ("frac", 1, 0.25)],
                &[],
                &["j0", "j1"],
            ),
        ];
        for (i, (jobs, held_now, want)) in cases.iter().enumerate() {
            let jobs: Vec<Job> = jobs
                .iter()
                .enumerate()
                .map(|(k, (q, r, g))| {
                    job(
                        &format!("j{k}"),
                        q,
                        (*r).max(1),
                        if *r == 0 { 0.0 } else { *g },
                    )
                })
                .collect();
            let refs: Vec<&Job> = jobs.iter().collect();
            let held_now: BTreeMap<String, u64> =
                held_now.iter().map(|(q, m)| (q.to_string(), *m)).collect();
            let (ok, held) = admit(&refs, &queues, &held_now);
            let names: Vec<&str> = ok.iter().map(|j| j.metadata.name.as_str()).collect();
            assert_eq!(&names, want, "case {i}");
            assert_eq!(ok.len() + held.len(), jobs.len(), "case {i}");
            for (_, why) in held {
                assert!(why.contains("at its GPU quota"), "case {i}: {why}");
            }
        }
    }

    #[test]
    fn reasons_show_gpus_readably() {
        assert_eq!(gpus(4000), "4");
        assert_eq!(gpus(250), "0.25");
        assert_eq!(gpus(1500), "1.5");
    }
}
