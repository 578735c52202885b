//! Score: topology. A multi-GPU task takes its GPUs from as few NVLink
//! domains as possible, and a gang's tasks land on as few nodes as
//! possible.

use crate::placement::filter::gpu_fit;
use crate::placement::node::NodeModel;

/// `count` whole free GPUs of `n`: all from one NVLink domain when one has
/// enough (the one with the fewest that suffice, so larger domains stay
/// whole for larger tasks), else from the fewest domains, largest first.
/// Index order within a domain. `None` when the node has too few.
pub fn pick_whole(n: &NodeModel, accept: &[bool], count: usize) -> Option<Vec<usize>> {
    let mut domains: Vec<(u16, Vec<usize>)> = Vec::new();
    for (i, g) in n.gpus.iter().enumerate() {
        if !gpu_fit::has_room(g, accept, 1000) {
            continue;
        }
        match domains.iter_mut().find(|(d, _)| *d == g.domain) {
            Some((_, v)) => v.push(i),
            None => domains.push((g.domain, vec![i])),
        }
    }
    if domains.iter().map(|(_, v)| v.len()).sum::<usize>() < count {
        return None;
    }
    if let Some((_, v)) = domains
        .iter()
        .filter(|(_, v)| v.len() >= count)
        .min_by_key(|(d, v)| (v.len(), *d))
    {
        return Some(v[..count].to_vec());
    }
    domains.sort_by_key(|(d, v)| (std::cmp::Reverse(v.len()), *d));
    let mut out: Vec<usize> = domains
        .into_iter()
        .flat_map(|(_, v)| v)
        .take(count)
        .collect();
    out.sort_unstable();
    Some(out)
}

/// Distinct NVLink domains among `gpus` of `n`.
pub fn domains_used(n: &NodeModel, gpus: &[usize]) -> usize {
    let mut d: Vec<u16> = gpus.iter().map(|&g| n.gpus[g].domain).collect();
    d.sort_unstable();
    d.dedup();
    d.len()
}

/// 0 when `node` already holds a task of the gang (or the task is not part
/// of a packed gang), else 1: a new node for the gang.
pub fn gang_spread(node: usize, gang_nodes: &[usize]) -> u32 {
    u32::from(!gang_nodes.is_empty() && !gang_nodes.contains(&node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::filter::testutil::node;

    #[test]
    fn pick_whole_table() {
        // (used per GPU, domain per GPU, count, want)
        let cases = [
            (vec![0, 0, 0, 0], vec![0, 0, 0, 0], 2, Some(vec![0, 1])),
            (vec![1000, 0, 500, 0], vec![0, 0, 0, 0], 2, Some(vec![1, 3])),
            // Domain 2 has exactly two free: keep domain 1's four whole.
            (
                vec![0, 0, 0, 0, 0, 0],
                vec![1, 1, 1, 1, 2, 2],
                2,
                Some(vec![4, 5]),
            ),
            // No domain has four: the larger one first, then the other.
            (
                vec![0, 0, 1000, 0, 0, 0],
                vec![1, 1, 1, 2, 2, 2],
                4,
                Some(vec![0, 3, 4, 5]),
            ),
            (vec![0, 1000], vec![0, 0], 2, None),
        ];
        for (i, (used, dom, count, want)) in cases.into_iter().enumerate() {
            let mut n = node(0, 0, &used);
            for (g, d) in n.gpus.iter_mut().zip(&dom) {
                g.domain = *d;
            }
            let got = pick_whole(&n, &[true], count);
            assert_eq!(got, want, "case {i}");
            if let Some(g) = got {
                assert!(domains_used(&n, &g) >= 1);
            }
        }
    }

    #[test]
    fn gang_spread_table() {
        assert_eq!(gang_spread(3, &[]), 0);
        assert_eq!(gang_spread(3, &[1, 3]), 0);
        assert_eq!(gang_spread(2, &[1, 3]), 1);
    }
}
