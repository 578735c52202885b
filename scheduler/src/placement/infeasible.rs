//! The submit-time check: a job whose task could not run on any node even
//! with the cluster empty is refused instead of waiting forever.

use gpuctl_common::api::{Job, Node, Resources};

use super::fit::{fit_request, InUse};
use super::request::PodRequest;

/// Why no node of the cluster could ever run a task of `job`, even empty;
/// `None` when every task group fits some node. Checked at submit so that an
/// impossible request is refused instead of waiting forever.
///
/// `nodes` is walked lazily: a request that the first nodes can run costs
/// a few node visits, not one per node of the cluster.
pub fn infeasible<'a, I>(nodes: I, job: &Job) -> Option<String>
where
    I: IntoIterator<Item = &'a Node>,
    I::IntoIter: Clone,
{
    let nodes = nodes.into_iter();
    if nodes.clone().next().is_none() {
        return Some(
            "the cluster has no nodes yet; start a node daemon (gpu-node) or `gpuctl dev`".into(),
        );
    }
    for (gi, t) in job.spec.tasks.iter().enumerate() {
        let req = as_submitted(&t.resources);
        let fits = nodes
            .clone()
            .any(|n| !fit_request(n, InUse::NONE, &req, None).is_never());
        if !fits {
            return Some(format!(
                "spec.tasks[{gi}].resources: no node could ever run this task: it {}",
                never_reason(nodes.clone(), &t.resources)
            ));
        }
    }
    gang_too_wide(nodes, job)
}

/// What about `r` no node could ever give: GPUs when even the node with the
/// most GPUs `r` accepts has too few, else CPU or memory.
fn never_reason<'a>(nodes: impl Iterator<Item = &'a Node>, r: &Resources) -> String {
    let milli = r.gpu_milli();
    let largest = nodes
        .map(|n| {
            (
                n.status
                    .gpus
                    .iter()
                    .filter(|g| r.accepts_gpu(&g.model, g.memory_bytes))
                    .count(),
                n,
            )
        })
        .max_by_key(|(c, _)| *c)
        .map(|(c, n)| (c, n.metadata.name.clone()));
    let (count, name) = largest.unwrap_or((0, String::new()));
    let what = match (&r.gpu_model, &r.gpu_memory) {
        (Some(m), _) => format!(" of model {m}"),
        (None, Some(mem)) => {
            format!(" with {} memory", gpuctl_common::api::format_bytes(mem.0))
        }
        _ => String::new(),
    };
    if milli > 0 && (count as u64) * 1000 < milli.max(1) {
        format!(
            "asks for {} GPU(s){what} per task, but the largest node ({name}) has {count} such GPU(s)",
            r.gpus
        )
    } else {
        "asks for more CPU or memory per task than any node has".to_string()
    }
}

/// A gang needs all its GPUs at once (with `minAvailable`, those of its
/// smallest tasks): why the whole cluster is too small for that, if it is.
fn gang_too_wide<'a>(mut nodes: impl Iterator<Item = &'a Node>, job: &Job) -> Option<String> {
    let need: u64 = job
        .spec
        .tasks
        .iter()
        .map(|t| u64::from(t.replicas) * t.resources.gpu_milli())
        .sum();
    let need_min = match job.spec.min_available {
        // With minAvailable, the smallest tasks may be left out.
        Some(min) => {
            let mut per_task: Vec<u64> = job
                .spec
                .tasks
                .iter()
                .flat_map(|t| std::iter::repeat_n(t.resources.gpu_milli(), t.replicas as usize))
                .collect();
            per_task.sort_unstable();
            per_task.iter().take(min as usize).sum()
        }
        None => need,
    };
    // Counted only as far as needed: most jobs fit on the first nodes.
    let mut cluster_milli = 0;
    while cluster_milli < need_min {
        match nodes.next() {
            Some(n) => cluster_milli += n.status.gpus.len() as u64 * 1000,
            None => break,
        }
    }
    if need_min > cluster_milli {
        return Some(format!(
            "spec.tasks: the gang needs {} GPUs at once, but the whole cluster has {}",
            need_min as f64 / 1000.0,
            cluster_milli / 1000
        ));
    }
    None
}

/// `r` as this check has always read it, which is stricter than placement
/// only for requests that validation refuses anyway: a whole count with a
/// fraction (2.5) needs the next whole number of GPUs, and an empty model
/// alternative matches no GPU.
fn as_submitted(r: &Resources) -> PodRequest {
    let mut req = PodRequest::from_resources(r);
    let milli = r.gpu_milli();
    if milli > 1000 {
        req.gpus = milli.div_ceil(1000) as u32;
    }
    if let Some(m) = &r.gpu_model {
        req.models = m.split('|').map(|s| s.trim().to_string()).collect();
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::testutil;

    fn job(name: &str, replicas: u32, gpus: f64) -> Job {
        testutil::job(name, None, 0, replicas, gpus)
    }

    #[test]
    fn infeasible_requests_are_named() {
        let n = gpuctl_testkit::node("n1")
            .gpus(4, gpuctl_testkit::A100)
            .build();
        assert_eq!(infeasible([&n], &job("ok", 1, 4.0)), None);
        let why = infeasible([&n], &job("wide", 3, 4.0)).unwrap();
        assert!(
            why.contains("needs 12 GPUs at once, but the whole cluster has 4"),
            "{why}"
        );
        let mut some = job("some", 3, 2.0);
        some.spec.min_available = Some(2);
        assert_eq!(infeasible([&n], &some), None);
        let why = infeasible([&n], &job("big", 1, 8.0)).unwrap();
        assert!(why.contains("largest node (n1) has 4"), "{why}");
        let mut h = job("h100", 1, 1.0);
        h.spec.tasks[0].resources.gpu_model = Some("H100".into());
        assert!(infeasible([&n], &h).unwrap().contains("model H100"));
        assert!(infeasible([], &job("x", 1, 1.0))
            .unwrap()
            .contains("no nodes"));
    }
}
