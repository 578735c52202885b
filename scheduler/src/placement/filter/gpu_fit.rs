//! Filter: the node has GPUs for the request: enough whole free GPUs, or one
//! GPU with room for a share, among healthy GPUs whose model and memory the
//! request accepts.

use crate::placement::model::{GpuSlot, NodeModel, PodRequest, MILLI};

/// A GPU the request may use at all (whatever it has free).
pub fn usable(g: &GpuSlot, accept: &[bool]) -> bool {
    g.healthy && accept.get(g.kind as usize).copied().unwrap_or(false)
}

/// A GPU with room for `milli` more (a whole GPU needs all of it free).
pub fn has_room(g: &GpuSlot, accept: &[bool], milli: u32) -> bool {
    usable(g, accept) && g.free >= milli.min(MILLI)
}

pub fn passes(n: &NodeModel, req: &PodRequest, accept: &[bool]) -> bool {
    if req.gpus == 0 {
        return true;
    }
    let room = n
        .gpus
        .iter()
        .filter(|g| has_room(g, accept, req.gpu_milli))
        .count();
    room >= req.gpus as usize
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
}
