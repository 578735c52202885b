//! Power of two choices over least outstanding requests (as linkerd2-proxy's p2c pool):
//! pick two distinct replicas at random and take the one with fewer requests in flight.
//! Pure; the randomness is injected so tests and simulations repeat exactly.

/// A source of random numbers. [`SplitMix64`] is the seeded default.
pub trait Rng: Send {
    fn next_u64(&mut self) -> u64;

    /// A number in `0..n` (`n > 0`). The modulo bias is negligible for replica counts.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// SplitMix64: small, fast, and good enough to spread load; seeded for repeatability.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
}

impl Rng for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Picks an index into `loads` (outstanding requests per replica): two distinct random
/// candidates, the less loaded wins (the first drawn on a tie). `None` when empty.
pub fn pick(loads: &[usize], rng: &mut dyn Rng) -> Option<usize> {
    pick_by(loads.len(), |i| loads[i], rng)
}

/// [`pick`] over `n` replicas whose loads `load(i)` reads, for callers that hold the
/// replicas rather than a slice of loads: only the two drawn are read.
pub fn pick_by(n: usize, load: impl Fn(usize) -> usize, rng: &mut dyn Rng) -> Option<usize> {
    match n {
        0 => None,
        1 => Some(0),
        n => {
            let a = rng.below(n);
            // A second draw from the other n-1 replicas keeps the two distinct.
            let mut b = rng.below(n - 1);
            if b >= a {
                b += 1;
            }
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_replicas_always_picks_the_less_loaded() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..100 {
            assert_eq!(pick(&[5, 2], &mut rng), Some(1));
            assert_eq!(pick(&[0, 9], &mut rng), Some(0));
        }
        assert_eq!(pick(&[], &mut rng), None);
        assert_eq!(pick(&[3], &mut rng), Some(0));
    }

    #[test]
    fn the_most_loaded_replica_is_never_picked_and_the_rest_share() {
        let mut rng = SplitMix64::new(42);
        let loads = [1, 1, 1, 10];
        let mut counts = [0usize; 4];
        for _ in 0..3000 {
            counts[pick(&loads, &mut rng).unwrap()] += 1;
        }
        assert_eq!(counts[3], 0);
        for c in &counts[..3] {
            assert!(*c > 700, "{counts:?}");
        }
    }

    #[test]
    fn pick_by_reads_only_the_two_drawn_and_agrees_with_pick() {
        let loads = [4, 0, 7, 2, 2, 9];
        let (mut r1, mut r2) = (SplitMix64::new(11), SplitMix64::new(11));
        for _ in 0..200 {
            let read = std::cell::Cell::new(0);
            let by = pick_by(
                loads.len(),
                |i| {
                    read.set(read.get() + 1);
                    loads[i]
                },
                &mut r2,
            );
            assert_eq!(read.get(), 2);
            assert_eq!(by, pick(&loads, &mut r1));
        }
    }

    #[test]
    fn seeded_runs_repeat() {
        let run = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..50)
                .map(|_| pick(&[0, 0, 0, 0, 0], &mut rng).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
