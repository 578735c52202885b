//! Filter: CPU and host memory left on the node cover the request
//! (a capacity of 0 means "not reported" and is not enforced).

use crate::placement::model::{NodeModel, PodRequest};

pub fn passes(n: &NodeModel, req: &PodRequest) -> bool {
    req.cpu_milli <= n.cpu_left() && req.memory_bytes <= n.memory_left()
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
}
