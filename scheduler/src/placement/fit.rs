//! Whether one task fits one node: the filters in order, and nowhere else.
//!
//! The round asks [`passes`] for every candidate node (the hot path) and
//! [`fit`] when it needs the reason; the submit-time check
//! ([`infeasible`](super::infeasible)) and the re-check of a binding as it
//! is applied ask [`fit_node`] about a node object and what runs on it, the
//! way Nomad's plan applier re-checks a plan with the same `AllocsFit` its
//! scheduler used.

use std::collections::BTreeMap;

use gpuctl_common::api::{GpuShare, Node, Resources};

use super::filter::{gpu_fit, host_fit, schedulable, Fit};
use super::node::{GpuSlot, NodeModel, MILLI};
use super::request::PodRequest;

/// Whether `n` can take `req` now: every filter, cheapest first. `accept`
/// is the request's [`PodRequest::accept_table`] for the model's kinds.
#[inline]
pub fn passes(n: &NodeModel, req: &PodRequest, accept: &[bool]) -> bool {
    schedulable::passes(n) && host_fit::passes(n, req) && gpu_fit::passes(n, req, accept)
}

/// [`passes`], with the reason when it does not: every filter's answer,
/// the worst first, so that a node too small for the task says so even when
/// it is also cordoned or busy.
pub fn fit(n: &NodeModel, req: &PodRequest, accept: &[bool]) -> Fit {
    schedulable::filter(n)
        .or(host_fit::filter(n, req))
        .or(gpu_fit::filter(n, req, accept))
}

/// [`fit`] for a task whose GPUs are chosen already (`gpus`, by device
/// index, with what each takes): those GPUs instead of any with room. Of
/// two reasons alike, the GPUs' comes first, as a refused binding always
/// named it.
pub fn fit_chosen(n: &NodeModel, req: &PodRequest, accept: &[bool], gpus: &[GpuShare]) -> Fit {
    schedulable::filter(n)
        .or(gpu_fit::chosen(n, accept, gpus))
        .or(host_fit::filter(n, req))
}

/// What already runs on a node, in the state's terms (its `NodeUsage`).
#[derive(Debug, Clone, Copy)]
pub struct InUse<'a> {
    /// Thousandths of each GPU in use, by device index.
    pub gpu_milli: &'a BTreeMap<u32, u32>,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
}

impl InUse<'_> {
    /// Nothing in use.
    pub const NONE: InUse<'static> = InUse {
        gpu_milli: &BTreeMap::new(),
        cpu_milli: 0,
        memory_bytes: 0,
    };
}

/// Whether `node`, with `in_use` taken, can take a task that asks for
/// `resources`: on the GPUs `gpus` names when they are chosen already (a
/// binding), else on any with room.
pub fn fit_node(
    node: &Node,
    in_use: InUse<'_>,
    resources: &Resources,
    gpus: Option<&[GpuShare]>,
) -> Fit {
    fit_request(node, in_use, &PodRequest::from_resources(resources), gpus)
}

/// [`fit_node`] for a request already read.
pub(super) fn fit_request(
    node: &Node,
    in_use: InUse<'_>,
    req: &PodRequest,
    gpus: Option<&[GpuShare]>,
) -> Fit {
    let s = &node.status;
    // Each GPU is a kind of its own: one node, matched once.
    let accept: Vec<bool> = s
        .gpus
        .iter()
        .map(|g| req.accepts_gpu(&g.model, g.memory_bytes))
        .collect();
    // Names and UUIDs are left out: no filter reads them.
    let n = NodeModel {
        name: String::new(),
        schedulable: schedulable::node_object(node),
        cpu_milli: s.cpu_milli,
        memory_bytes: s.memory_bytes,
        cpu_used: in_use.cpu_milli,
        memory_used: in_use.memory_bytes,
        gpus: s
            .gpus
            .iter()
            .enumerate()
            .map(|(k, g)| GpuSlot {
                index: g.index,
                uuid: String::new(),
                kind: k as u16,
                domain: 0,
                healthy: g.healthy,
                free: MILLI.saturating_sub(in_use.gpu_milli.get(&g.index).copied().unwrap_or(0)),
            })
            .collect(),
    };
    match gpus {
        Some(gpus) => fit_chosen(&n, req, &accept, gpus),
        None => fit(&n, req, &accept),
    }
}

#[cfg(test)]
mod tests {
    use gpuctl_common::api::Cpu;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::*;
    use crate::placement::filter::testutil::node;
    use crate::placement::filter::Misfit;

    /// `passes` is `fit`'s yes; and `fit` says never exactly when the node
    /// emptied, healthy and uncordoned would not take the task either.
    #[test]
    fn fit_agrees_with_passes_and_with_the_empty_node() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..2000 {
            let used: Vec<u32> = (0..rng.gen_range(0..5))
                .map(|_| [0, 300, 1000][rng.gen_range(0..3)])
                .collect();
            let mut n = node(rng.gen_range(0..3) * 4000, rng.gen_range(0..3) * 100, &used);
            n.cpu_used = rng.gen_range(0..8000);
            n.memory_used = rng.gen_range(0..200);
            n.schedulable = rng.gen_bool(0.8);
            for g in &mut n.gpus {
                g.healthy = rng.gen_bool(0.8);
                g.kind = rng.gen_range(0..2);
            }
            let (gpus, gpu_milli) = [(0, 0), (1, 500), (1, 1000), (3, 1000)][rng.gen_range(0..4)];
            let req = PodRequest {
                cpu_milli: rng.gen_range(0..3) * 3000,
                memory_bytes: rng.gen_range(0..3) * 80,
                gpus,
                gpu_milli,
                ..Default::default()
            };
            let accept = [true, rng.gen_bool(0.5)];
            let got = fit(&n, &req, &accept);
            assert_eq!(passes(&n, &req, &accept), got.fits(), "{n:?} {req:?}");
            let mut empty = n.clone();
            empty.schedulable = true;
            empty.cpu_used = 0;
            empty.memory_used = 0;
            for g in &mut empty.gpus {
                g.healthy = true;
                g.free = MILLI;
            }
            assert_eq!(
                got.is_never(),
                !passes(&empty, &req, &accept),
                "{n:?} {req:?}: {got:?}"
            );
        }
    }

    fn object(cordoned: bool) -> Node {
        let n = gpuctl_testkit::node("n1")
            .gpus(2, gpuctl_testkit::A100)
            .unhealthy(1)
            .cpu_milli(8000);
        if cordoned {
            n.unschedulable().build()
        } else {
            n.build()
        }
    }

    /// A node object with what runs on it, as a binding is re-checked.
    #[test]
    fn fit_node_table() {
        let share = |index, milli| GpuShare {
            index,
            uuid: String::new(),
            milli,
        };
        let res = |gpus: f64, cpu: u64, model: Option<&str>| Resources {
            gpus,
            cpu: Some(Cpu(cpu)),
            gpu_model: model.map(str::to_string),
            ..Default::default()
        };
        let used: BTreeMap<u32, u32> = [(0, 600)].into();
        let in_use = InUse {
            gpu_milli: &used,
            cpu_milli: 6000,
            memory_bytes: 0,
        };
        // (cordoned, in use, resources, chosen GPUs, want, as a refused binding says it)
        type Case<'a> = (
            bool,
            InUse<'a>,
            Resources,
            Option<Vec<GpuShare>>,
            Fit,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (
                false,
                InUse::NONE,
                res(1.0, 8000, None),
                None,
                Fit::Fits,
                "",
            ),
            (
                false,
                in_use,
                res(0.5, 1000, None),
                None,
                Fit::NotNow(Misfit::Gpus {
                    need: 1,
                    milli: 500,
                    have: 0,
                }),
                "",
            ),
            (
                true,
                InUse::NONE,
                res(4.0, 1000, None),
                None,
                Fit::Never(Misfit::Gpus {
                    need: 4,
                    milli: 1000,
                    have: 2,
                }),
                "",
            ),
            (
                false,
                in_use,
                res(0.5, 1000, None),
                Some(vec![share(0, 500)]),
                Fit::NotNow(Misfit::Overcommitted {
                    index: 0,
                    milli: 500,
                }),
                "GPU 0 on n1 is over-committed",
            ),
            (
                false,
                InUse::NONE,
                res(1.0, 1000, None),
                Some(vec![share(1, 1000)]),
                Fit::NotNow(Misfit::Unhealthy { index: 1 }),
                "GPU 1 on n1 is unhealthy",
            ),
            (
                false,
                InUse::NONE,
                res(1.0, 1000, None),
                Some(vec![share(5, 1000)]),
                Fit::Never(Misfit::NoGpu { index: 5 }),
                "node n1 has no GPU 5",
            ),
            (
                false,
                in_use,
                res(0.0, 4000, None),
                Some(vec![]),
                Fit::NotNow(Misfit::Cpu {
                    need: 4000,
                    have: 2000,
                }),
                "not enough CPU on n1",
            ),
            (
                true,
                InUse::NONE,
                res(0.0, 0, None),
                Some(vec![]),
                Fit::NotNow(Misfit::Unschedulable),
                "node n1 is not schedulable",
            ),
            (
                false,
                InUse::NONE,
                res(1.0, 0, Some("H100")),
                None,
                Fit::Never(Misfit::Gpus {
                    need: 1,
                    milli: 1000,
                    have: 0,
                }),
                "",
            ),
        ];
        for (i, (cordoned, in_use, r, gpus, want, text)) in cases.into_iter().enumerate() {
            let got = fit_node(&object(cordoned), in_use, &r, gpus.as_deref());
            assert_eq!(got, want, "case {i}");
            if !text.is_empty() {
                assert_eq!(got.misfit().unwrap().on("n1"), text, "case {i}");
            }
        }
    }
}
