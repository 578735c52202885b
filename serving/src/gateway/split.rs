//! A canary's share of an endpoint's requests while a revision rolls out
//! (KServe's `canaryTrafficPercent`), chosen by a deterministic weighted
//! round-robin: request k of the endpoint goes to the canary when
//! `k·p mod 100 < p`, so any 100 requests in a row give it exactly p of them
//! (20%: every fifth). Within the chosen group, p2c picks the replica as
//! usual; a group with no ready replica leaves the request to the other.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct Split {
    percent: u32,
    /// Base URLs of the canary revision's replicas.
    canary: HashSet<String>,
    /// Requests counted so far.
    next: AtomicU64,
}

impl Split {
    /// `percent` (0-100) of requests for the replicas at `canary`; the count
    /// goes on from `carried` (a split replaced by a new one keeps its place).
    pub fn new(percent: u32, canary: impl IntoIterator<Item = String>, carried: u64) -> Split {
        Split {
            percent: percent.min(100),
            canary: canary
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            next: AtomicU64::new(carried),
        }
    }

    /// Whether this split already says `percent` for these replicas.
    pub fn same(&self, percent: u32, canary: &[String]) -> bool {
        self.percent == percent
            && canary.len() == self.canary.len()
            && canary
                .iter()
                .all(|u| self.canary.contains(u.trim_end_matches('/')))
    }

    pub fn count(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// Whether the next request goes to the canary.
    pub fn next_is_canary(&self) -> bool {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let p = u64::from(self.percent);
        (k.wrapping_mul(p)) % 100 < p
    }

    /// Keeps in `candidates` the group the next request goes to, unless that
    /// group has none of them.
    pub fn keep_group<T>(&self, candidates: &mut Vec<T>, url: impl Fn(&T) -> &str) {
        let canary = self.next_is_canary();
        if candidates
            .iter()
            .any(|r| self.canary.contains(url(r)) == canary)
        {
            candidates.retain(|r| self.canary.contains(url(r)) == canary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Split;

    #[test]
    fn any_hundred_requests_in_a_row_give_the_canary_exactly_its_share() {
        for p in [0, 1, 20, 33, 50, 99, 100] {
            let s = Split::new(p, ["http://c:1".to_string()], 17);
            let n = (0..100).filter(|_| s.next_is_canary()).count();
            assert_eq!(n, p as usize, "{p}%");
        }
        let s = Split::new(20, ["http://c:1/".to_string()], 0);
        let picks: Vec<bool> = (0..10).map(|_| s.next_is_canary()).collect();
        assert_eq!(picks.iter().filter(|c| **c).count(), 2);
        assert!(s.same(20, &["http://c:1".to_string()]));
        assert!(!s.same(30, &["http://c:1".to_string()]));
    }

    #[test]
    fn a_group_without_replicas_leaves_the_request_to_the_other() {
        let s = Split::new(100, ["http://c:1".to_string()], 0);
        let mut only_old = vec!["http://o:1", "http://o:2"];
        s.keep_group(&mut only_old, |u| u);
        assert_eq!(only_old.len(), 2);
        let mut both = vec!["http://o:1", "http://c:1"];
        s.keep_group(&mut both, |u| u);
        assert_eq!(both, vec!["http://c:1"]);
    }
}
