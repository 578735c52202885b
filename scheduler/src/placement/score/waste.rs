//! Score: gap waste. A GPU shared by tasks ends up with a gap of free
//! capacity; the gap is wasted for good unless later shares add up to it.
//! The FGD measure sees a gap only as "too small for this shape", so it
//! treats leaving 60 free behind two 470s alike with leaving 350 that a
//! common 320 fills to 30. This measure counts, per free amount, what the
//! common shares of the mix cannot fill: the free amount minus the largest
//! sum of common share sizes that fits in it (a small unbounded knapsack).
//! A share should make the GPU it takes leave as little of this as it can.
//!
//! Only common shares count as fillers. A rare small share (on the openb
//! default list 160 milli, 1% of GPU tasks, the only share that fits the
//! 190 an 810 leaves) would make every gap it fits look fillable, though
//! there are far too few of them to fill those gaps; left out, a gap that
//! only such shares fit counts as waste and the rare share is drawn into
//! one of them.

use crate::placement::request::PodRequest;

/// A one-GPU share size counts as a filler when at least this share of the
/// mix's tasks ask for it (all shapes of that size together). On the openb
/// traces anything from 1.1% to 1.8% picks the same sizes on the default
/// list; 0.5% (which lets 160, 220, 370, 550 and 590 in) gains little and
/// every size (0%) loses.
pub const COMMON_SHARE: f64 = 0.015;

/// Waste per free amount: entry `f` (thousandths, 0..=1000) is `f` minus
/// the largest sum of common share sizes (see [`COMMON_SHARE`]) not above
/// `f`. A whole free GPU is not waste (whole-GPU tasks take it; the FGD
/// measure weighs that). `entries` are the mix's shapes with their weights.
pub fn table<'a>(entries: impl IntoIterator<Item = (&'a PodRequest, f64)>) -> Vec<u16> {
    let mut sizes: Vec<(usize, f64)> = Vec::new();
    for (shape, weight) in entries.into_iter().filter(|(s, _)| s.is_share()) {
        let s = shape.gpu_milli as usize;
        match sizes.iter_mut().find(|x| x.0 == s) {
            Some(x) => x.1 += weight,
            None => sizes.push((s, weight)),
        }
    }
    sizes.retain(|&(s, w)| s > 0 && w >= COMMON_SHARE);
    let mut reach = [false; 1001];
    reach[0] = true;
    reach[1000] = true;
    let (mut best, mut out) = (0, Vec::with_capacity(1001));
    for f in 0..=1000usize {
        reach[f] |= sizes.iter().any(|&(s, _)| s <= f && reach[f - s]);
        if reach[f] {
            best = f;
        }
        out.push((f - best) as u16);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(milli: u32, cpu: u64, weight: f64) -> (PodRequest, f64) {
        let shape = PodRequest {
            cpu_milli: cpu,
            gpus: 1,
            gpu_milli: milli,
            ..Default::default()
        };
        (shape, weight)
    }

    #[test]
    fn waste_table() {
        let whole = (
            PodRequest {
                gpus: 1,
                gpu_milli: 1000,
                ..Default::default()
            },
            0.5,
        );
        // 470 and 320 are common (320 only over its two CPU sizes
        // together); 160 is rare.
        let entries = [
            whole,
            share(470, 1000, 0.4),
            share(320, 1000, 0.01),
            share(320, 4000, 0.01),
            share(160, 1000, 0.005),
        ];
        let t = table(entries.iter().map(|(s, w)| (s, *w)));
        assert_eq!(t.len(), 1001);
        // (free, waste)
        for (f, w) in [
            (0, 0),
            (60, 60),
            (190, 190), // only the rare 160 fits
            (320, 0),
            (350, 30),
            (530, 60),
            (790, 0),  // 470 + 320
            (940, 0),  // 470 + 470
            (1000, 0), // whole
            (999, 39), // 320 × 3 = 960
        ] {
            assert_eq!(t[f], w, "free {f}");
        }
        // No shares at all: every partial gap is waste, a whole GPU is not.
        let t = table([]);
        assert_eq!((t[0], t[500], t[1000]), (0, 500, 0));
    }
}
