//! Filter: the node has GPUs for the request: enough whole free GPUs, or one
//! GPU with room for a share, among healthy GPUs whose model and memory the
//! request accepts; or, for a task whose GPUs are chosen already, those
//! GPUs are there, accepted, healthy and have room.

use gpuctl_common::api::GpuShare;

use super::{Fit, Misfit};
use crate::placement::node::{GpuSlot, NodeModel, MILLI};
use crate::placement::request::PodRequest;

/// A GPU the request may use at all (whatever it has free).
pub fn usable(g: &GpuSlot, accept: &[bool]) -> bool {
    g.healthy && accepts(g, accept)
}

/// A GPU of a kind the request accepts (healthy or not).
fn accepts(g: &GpuSlot, accept: &[bool]) -> bool {
    accept.get(g.kind as usize).copied().unwrap_or(false)
}

/// A GPU with room for `milli` more (a whole GPU needs all of it free).
pub fn has_room(g: &GpuSlot, accept: &[bool], milli: u32) -> bool {
    usable(g, accept) && g.free >= milli.min(MILLI)
}

pub fn passes(n: &NodeModel, req: &PodRequest, accept: &[bool]) -> bool {
    req.gpus == 0 || room(n, req, accept) >= req.gpus as usize
}

pub fn filter(n: &NodeModel, req: &PodRequest, accept: &[bool]) -> Fit {
    if req.gpus == 0 {
        return Fit::Fits;
    }
    let room = room(n, req, accept);
    if room >= req.gpus as usize {
        return Fit::Fits;
    }
    // Waiting helps only when the node has enough GPUs the request accepts,
    // in use or unhealthy now.
    let accepted = n.gpus.iter().filter(|g| accepts(g, accept)).count();
    let why = |have: usize| Misfit::Gpus {
        need: req.gpus,
        milli: req.gpu_milli,
        have: have as u32,
    };
    if accepted < req.gpus as usize {
        Fit::Never(why(accepted))
    } else {
        Fit::NotNow(why(room))
    }
}

/// How many GPUs of `n` have room for one of `req`'s.
fn room(n: &NodeModel, req: &PodRequest, accept: &[bool]) -> usize {
    n.gpus
        .iter()
        .filter(|g| has_room(g, accept, req.gpu_milli))
        .count()
}

/// The filter for a task whose GPUs are chosen: each GPU named in `gpus`
/// (by device index) is on the node, of a kind the request accepts,
/// healthy, and has room for what `gpus` puts on it in all.
pub fn chosen(n: &NodeModel, accept: &[bool], gpus: &[GpuShare]) -> Fit {
    let mut out = Fit::Fits;
    for (i, g) in gpus.iter().enumerate() {
        if gpus[..i].iter().any(|h| h.index == g.index) {
            continue;
        }
        let index = g.index;
        let milli: u32 = gpus[i..]
            .iter()
            .filter(|h| h.index == index)
            .map(|h| h.milli)
            .sum();
        let fit = match n.gpus.iter().find(|s| s.index == index) {
            None => Fit::Never(Misfit::NoGpu { index }),
            Some(s) if !accepts(s, accept) => Fit::Never(Misfit::NotAccepted { index }),
            Some(s) if !s.healthy => Fit::NotNow(Misfit::Unhealthy { index }),
            Some(s) if milli > s.free => Fit::NotNow(Misfit::Overcommitted { index, milli }),
            Some(_) => Fit::Fits,
        };
        out = out.or(fit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::filter::testutil::node;

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            used: &'static [u32],
            gpus: u32,
            milli: u32,
            accept: &'static [bool],
            unhealthy: Option<usize>,
            want: bool,
        }
        let c = |name, used, gpus, milli, want| Case {
            name,
            used,
            gpus,
            milli,
            accept: &[true],
            unhealthy: None,
            want,
        };
        let cases = [
            c("cpu-only task needs no GPU", &[1000], 0, 0, true),
            c("two whole GPUs free", &[0, 0], 2, 1000, true),
            c("a used GPU is not whole", &[0, 1], 2, 1000, false),
            c("share fits next to another", &[600], 1, 400, true),
            c("share does not fit", &[601], 1, 400, false),
            c("more GPUs than the node has", &[0; 4], 8, 1000, false),
            Case {
                accept: &[false],
                ..c("model not accepted", &[0], 1, 1000, false)
            },
            Case {
                accept: &[],
                ..c("unknown kind is not accepted", &[0], 1, 500, false)
            },
            Case {
                unhealthy: Some(1),
                ..c("unhealthy GPU does not count", &[0, 0], 2, 1000, false)
            },
        ];
        for k in cases {
            let mut n = node(0, 0, k.used);
            if let Some(i) = k.unhealthy {
                n.gpus[i].healthy = false;
            }
            let req = PodRequest {
                gpus: k.gpus,
                gpu_milli: k.milli,
                ..Default::default()
            };
            assert_eq!(passes(&n, &req, k.accept), k.want, "{}", k.name);
        }
    }

    #[test]
    fn waiting_helps_only_with_enough_accepted_gpus() {
        // (used, unhealthy, gpus, milli, accept, want)
        let not_now = |need, milli, have| Fit::NotNow(Misfit::Gpus { need, milli, have });
        let never = |need, milli, have| Fit::Never(Misfit::Gpus { need, milli, have });
        type Case = (
            &'static [u32],
            Option<usize>,
            u32,
            u32,
            &'static [bool],
            Fit,
        );
        let cases: [Case; 5] = [
            (&[1000, 0], None, 2, 1000, &[true], not_now(2, 1000, 1)),
            (&[0, 0], Some(0), 2, 1000, &[true], not_now(2, 1000, 1)),
            (&[0, 0], None, 3, 1000, &[true], never(3, 1000, 2)),
            (&[0], None, 1, 500, &[false], never(1, 500, 0)),
            (&[700], None, 1, 500, &[true], not_now(1, 500, 0)),
        ];
        for (i, (used, unhealthy, need, milli, accept, want)) in cases.into_iter().enumerate() {
            let mut n = node(0, 0, used);
            if let Some(g) = unhealthy {
                n.gpus[g].healthy = false;
            }
            let req = PodRequest {
                gpus: need,
                gpu_milli: milli,
                ..Default::default()
            };
            assert_eq!(filter(&n, &req, accept), want, "case {i}");
        }
    }

    #[test]
    fn chosen_gpus_table() {
        let share = |index, milli| GpuShare {
            index,
            uuid: String::new(),
            milli,
        };
        let mut n = node(0, 0, &[0, 600, 0]);
        n.gpus[2].healthy = false;
        // (chosen, accept, want)
        let cases: [(Vec<GpuShare>, &[bool], Fit); 7] = [
            (vec![share(0, 1000)], &[true], Fit::Fits),
            (vec![share(1, 400)], &[true], Fit::Fits),
            (
                vec![share(1, 500)],
                &[true],
                Fit::NotNow(Misfit::Overcommitted {
                    index: 1,
                    milli: 500,
                }),
            ),
            (
                vec![share(0, 600), share(0, 600)],
                &[true],
                Fit::NotNow(Misfit::Overcommitted {
                    index: 0,
                    milli: 1200,
                }),
            ),
            (
                vec![share(2, 100)],
                &[true],
                Fit::NotNow(Misfit::Unhealthy { index: 2 }),
            ),
            (
                vec![share(2, 100), share(7, 100)],
                &[true],
                Fit::Never(Misfit::NoGpu { index: 7 }),
            ),
            (
                vec![share(0, 1000)],
                &[false],
                Fit::Never(Misfit::NotAccepted { index: 0 }),
            ),
        ];
        for (i, (gpus, accept, want)) in cases.into_iter().enumerate() {
            assert_eq!(chosen(&n, accept, &gpus), want, "case {i}");
        }
    }
}
