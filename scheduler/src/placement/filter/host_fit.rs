//! Filter: CPU and host memory left on the node cover the request
//! (a capacity of 0 means "not reported" and is not enforced).

use super::{Fit, Misfit};
use crate::placement::node::NodeModel;
use crate::placement::request::PodRequest;

pub fn passes(n: &NodeModel, req: &PodRequest) -> bool {
    req.cpu_milli <= n.cpu_left() && req.memory_bytes <= n.memory_left()
}

pub fn filter(n: &NodeModel, req: &PodRequest) -> Fit {
    let (cpu, memory) = (req.cpu_milli, req.memory_bytes);
    room(cpu, n.cpu_milli, n.cpu_left(), |have| Misfit::Cpu {
        need: cpu,
        have,
    })
    .or(room(memory, n.memory_bytes, n.memory_left(), |have| {
        Misfit::Memory { need: memory, have }
    }))
}

/// Whether `need` fits in what is `left` of `capacity` (0: not enforced);
/// `why` states the shortfall from what the node has.
fn room(need: u64, capacity: u64, left: u64, why: impl Fn(u64) -> Misfit) -> Fit {
    if need <= left {
        Fit::Fits
    } else if capacity != 0 && need > capacity {
        Fit::Never(why(capacity))
    } else {
        Fit::NotNow(why(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::filter::testutil::node;

    #[test]
    fn table() {
        // (cpu cap, cpu used, mem cap, mem used, ask cpu, ask mem, want)
        let cases = [
            (4000, 0, 100, 0, 4000, 100, true),
            (4000, 1, 100, 0, 4000, 0, false),
            (4000, 0, 100, 50, 0, 51, false),
            (0, 999, 0, 999, 1 << 40, 1 << 40, true),
            (4000, 4000, 100, 100, 0, 0, true),
        ];
        for (i, (cc, cu, mc, mu, ac, am, want)) in cases.into_iter().enumerate() {
            let mut n = node(cc, mc, &[]);
            n.cpu_used = cu;
            n.memory_used = mu;
            let req = PodRequest {
                cpu_milli: ac,
                memory_bytes: am,
                ..Default::default()
            };
            assert_eq!(passes(&n, &req), want, "case {i}");
        }
    }

    #[test]
    fn waiting_helps_only_within_capacity() {
        // (cpu used, mem used, ask cpu, ask mem, want)
        let cpu = |need, have| Misfit::Cpu { need, have };
        let cases = [
            (1000, 0, 4000, 0, Fit::NotNow(cpu(4000, 3000))),
            (0, 0, 5000, 0, Fit::Never(cpu(5000, 4000))),
            (
                1000,
                0,
                4000,
                200,
                Fit::Never(Misfit::Memory {
                    need: 200,
                    have: 100,
                }),
            ),
            (
                0,
                60,
                0,
                50,
                Fit::NotNow(Misfit::Memory { need: 50, have: 40 }),
            ),
        ];
        for (i, (cu, mu, ac, am, want)) in cases.into_iter().enumerate() {
            let mut n = node(4000, 100, &[]);
            n.cpu_used = cu;
            n.memory_used = mu;
            let req = PodRequest {
                cpu_milli: ac,
                memory_bytes: am,
                ..Default::default()
            };
            assert_eq!(filter(&n, &req), want, "case {i}");
        }
    }
}
