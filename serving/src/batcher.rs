//! Dynamic batching: which queued requests run together, and when. Pure: no tokio, time
//! is passed in.
//!
//! Requests are grouped by a key (for the model server: the non-batch dimensions of
//! every input), because only requests whose other dimensions agree can be stacked
//! along the batch dimension. Within a group, requests leave in arrival order. A group is
//! ready when its queued rows reach `max_batch_size`, or when its oldest request has
//! waited `max_delay`. A batch never holds more than `max_batch_size` rows, except a
//! single request that is larger on its own, which runs alone.
//!
//! [`merge`] and [`split`] do the stacking of tensors along dimension 0 and the cutting
//! back into per-request outputs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::protocol::{Tensor, TensorData};

/// When to close a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most rows (sum of the requests' batch dimensions) in one run.
    pub max_batch_size: usize,
    /// Longest a request waits for company before its batch runs anyway.
    pub max_delay: Duration,
}

struct Entry<T> {
    rows: usize,
    enqueued_at: Instant,
    payload: T,
}

struct Group<K, T> {
    key: K,
    entries: VecDeque<Entry<T>>,
    rows: usize,
}

/// The queue of requests waiting to be batched.
pub struct Batcher<K, T> {
    policy: BatchPolicy,
    // A Vec, not a map: there are a handful of distinct shapes at a time, and a Vec keeps
    // the order in which groups became ready deterministic.
    groups: Vec<Group<K, T>>,
}

/// Requests that run together, in arrival order.
#[derive(Debug)]
pub struct Batch<K, T> {
    pub key: K,
    pub items: Vec<T>,
    pub rows: usize,
}

impl<K: PartialEq + Clone, T> Batcher<K, T> {
    pub fn new(policy: BatchPolicy) -> Self {
        Batcher {
            policy: BatchPolicy {
                max_batch_size: policy.max_batch_size.max(1),
                ..policy
            },
            groups: Vec::new(),
        }
    }

    /// Queues a request of `rows` rows.
    pub fn push(&mut self, key: K, rows: usize, payload: T, now: Instant) {
        let entry = Entry {
            rows,
            enqueued_at: now,
            payload,
        };
        match self.groups.iter_mut().find(|g| g.key == key) {
            Some(g) => {
                g.rows += rows;
                g.entries.push_back(entry);
            }
            None => self.groups.push(Group {
                key,
                entries: VecDeque::from([entry]),
                rows,
            }),
        }
    }

    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    fn group_ready(&self, g: &Group<K, T>, now: Instant) -> bool {
        g.rows >= self.policy.max_batch_size
            || g.entries.front().is_some_and(|e| {
                now.saturating_duration_since(e.enqueued_at) >= self.policy.max_delay
            })
    }

    /// Whether [`Batcher::pop_ready`] would return a batch at `now`.
    pub fn has_ready(&self, now: Instant) -> bool {
        self.groups.iter().any(|g| self.group_ready(g, now))
    }

    /// When the next group times out, if anything is queued.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.groups
            .iter()
            .filter_map(|g| g.entries.front())
            .map(|e| e.enqueued_at + self.policy.max_delay)
            .min()
    }

    /// Takes the next batch that is ready at `now`: the group whose oldest request has
    /// waited longest goes first.
    pub fn pop_ready(&mut self, now: Instant) -> Option<Batch<K, T>> {
        let idx = self
            .groups
            .iter()
            .enumerate()
            .filter(|(_, g)| self.group_ready(g, now))
            .min_by_key(|(_, g)| g.entries.front().map(|e| e.enqueued_at))
            .map(|(i, _)| i)?;
        let max = self.policy.max_batch_size;
        let group = &mut self.groups[idx];
        let mut items = Vec::new();
        let mut rows = 0;
        while let Some(front) = group.entries.front() {
            if !items.is_empty() && rows + front.rows > max {
                break;
            }
            let e = group.entries.pop_front().expect("front exists");
            rows += e.rows;
            items.push(e.payload);
            if rows >= max {
                break;
            }
        }
        group.rows -= rows;
        let key = group.key.clone();
        if group.entries.is_empty() {
            self.groups.remove(idx);
        }
        Some(Batch { key, items, rows })
    }
}

/// Stacks each input across requests along dimension 0. `requests[r][i]` is input `i` of
/// request `r`; all requests must have the same inputs with the same non-batch dims (the
/// batch key guarantees it). Row-major data makes this a concatenation.
pub fn merge(requests: &[Vec<Tensor>]) -> Vec<Tensor> {
    let Some(first) = requests.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(i, t0)| {
            let total: usize = requests.iter().map(|r| r[i].data.len()).sum();
            let mut data = t0.data.empty_like(total);
            let mut rows = 0;
            for r in requests {
                data.extend_from(&r[i].data);
                rows += r[i].shape.first().copied().unwrap_or(1);
            }
            let mut shape = t0.shape.clone();
            if let Some(d0) = shape.first_mut() {
                *d0 = rows;
            }
            Tensor {
                name: t0.name.clone(),
                shape,
                data,
            }
        })
        .collect()
}

/// Cuts batched outputs back into per-request outputs, `rows[r]` rows for request `r`.
/// Returns `None` if an output's first dimension is not the total row count (a model that
/// does not keep the batch dimension cannot be split).
pub fn split(outputs: &[Tensor], rows: &[usize]) -> Option<Vec<Vec<Tensor>>> {
    let total: usize = rows.iter().sum();
    let mut per_request: Vec<Vec<Tensor>> = rows.iter().map(|_| Vec::new()).collect();
    for out in outputs {
        if out.shape.first() != Some(&total) {
            return None;
        }
        let row_len: usize = out.shape[1..].iter().product();
        let mut start = 0;
        for (r, &n) in rows.iter().enumerate() {
            let mut shape = out.shape.clone();
            shape[0] = n;
            let data: TensorData = out.data.slice(start * row_len..(start + n) * row_len);
            per_request[r].push(Tensor {
                name: out.name.clone(),
                shape,
                data,
            });
            start += n;
        }
    }
    Some(per_request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: usize, ms: u64) -> BatchPolicy {
        BatchPolicy {
            max_batch_size: max,
            max_delay: Duration::from_millis(ms),
        }
    }

    #[test]
    fn closes_on_size_or_delay() {
        let t0 = Instant::now();
        let mut b: Batcher<u8, &str> = Batcher::new(policy(3, 5));
        b.push(0, 1, "a", t0);
        b.push(0, 1, "b", t0 + Duration::from_millis(1));
        assert!(!b.has_ready(t0 + Duration::from_millis(4)));
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_millis(5)));
        b.push(0, 1, "c", t0 + Duration::from_millis(2));
        b.push(0, 1, "d", t0 + Duration::from_millis(2));
        // Full at three rows, even before the delay.
        let batch = b.pop_ready(t0 + Duration::from_millis(2)).unwrap();
        assert_eq!((batch.items, batch.rows), (vec!["a", "b", "c"], 3));
        assert!(b.pop_ready(t0 + Duration::from_millis(6)).is_none());
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_millis(7)));
        let batch = b.pop_ready(t0 + Duration::from_millis(7)).unwrap();
        assert_eq!(batch.items, vec!["d"]);
        assert!(b.is_empty());
        assert_eq!(b.next_deadline(), None);
    }

    #[test]
    fn different_keys_run_separately_and_oldest_first() {
        let t0 = Instant::now();
        let mut b: Batcher<Vec<usize>, u32> = Batcher::new(policy(8, 5));
        b.push(vec![4], 1, 1, t0);
        b.push(vec![3], 1, 2, t0 + Duration::from_millis(1));
        b.push(vec![4], 1, 3, t0 + Duration::from_millis(2));
        assert_eq!(b.len(), 3);
        let now = t0 + Duration::from_millis(10);
        let first = b.pop_ready(now).unwrap();
        assert_eq!((first.key, first.items), (vec![4], vec![1, 3]));
        let second = b.pop_ready(now).unwrap();
        assert_eq!((second.key, second.items), (vec![3], vec![2]));
        assert!(b.pop_ready(now).is_none());
    }

    #[test]
    fn multi_row_requests_never_overflow_a_batch() {
        let t0 = Instant::now();
        let mut b: Batcher<(), char> = Batcher::new(policy(4, 5));
        b.push((), 3, 'a', t0);
        b.push((), 2, 'b', t0);
        b.push((), 9, 'c', t0);
        let now = t0 + Duration::from_millis(5);
        assert_eq!(b.pop_ready(now).unwrap().items, vec!['a']);
        assert_eq!(b.pop_ready(now).unwrap().items, vec!['b']);
        // Larger than the maximum on its own: runs alone rather than never.
        let big = b.pop_ready(now).unwrap();
        assert_eq!((big.items, big.rows), (vec!['c'], 9));
    }

    #[test]
    fn zero_delay_or_size_one_is_immediate() {
        let t0 = Instant::now();
        let mut b: Batcher<(), u8> = Batcher::new(policy(8, 0));
        b.push((), 1, 1, t0);
        assert!(b.has_ready(t0));
        let mut b: Batcher<(), u8> = Batcher::new(policy(0, 100));
        b.push((), 1, 1, t0);
        assert!(b.has_ready(t0));
    }

    #[test]
    fn merge_then_split_round_trips() {
        let t = |shape: Vec<usize>, v: Vec<f32>| Tensor {
            name: "x".into(),
            shape,
            data: TensorData::Fp32(v),
        };
        let reqs = vec![
            vec![t(vec![1, 2], vec![1.0, 2.0])],
            vec![t(vec![2, 2], vec![3.0, 4.0, 5.0, 6.0])],
        ];
        let merged = merge(&reqs);
        assert_eq!(merged[0].shape, vec![3, 2]);
        assert_eq!(
            merged[0].data,
            TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        );
        let back = split(&merged, &[1, 2]).unwrap();
        assert_eq!(back, reqs);
        assert!(split(&merged, &[1, 1]).is_none());
    }
}
