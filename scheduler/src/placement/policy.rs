//! Placement policies: how the scores pick one option among the feasible.

use std::fmt;

use super::mix::MixOptions;

/// A placement policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// The first feasible node in order, its GPUs in index order (the
    /// engine's first version).
    FirstFit,
    /// A feasible node uniformly at random (the FGD paper's baseline).
    Random { seed: u64 },
    /// The node left tightest, CPU and GPU weighted equally (the FGD paper's
    /// baseline): the simulator's integer score, ties at random.
    BestFit,
    /// Fragmentation Gradient Descent as in the FGD paper's simulator: the
    /// node (and GPU) whose fragmentation grows least, scored as a
    /// truncated sigmoid, ties at random; the mix is FGD's typical pods.
    Fgd,
    /// Ours: FGD's measure over the whole mix with host memory, compared
    /// exactly (no truncation), plus twice the GPU the task would leave
    /// stranded (free GPU the node's CPU and memory left cannot back at the
    /// mix's ratio), plus ten times the growth of the gap that the mix's
    /// common shares could not fill on the GPU a share takes
    /// ([`waste`](super::score::waste)); near-equal totals go to the tighter GPU, then the
    /// tighter node; a gang packs onto nodes it already holds;
    /// deterministic.
    #[default]
    FragAware,
}

impl Policy {
    /// Names accepted by [`Policy::parse`].
    pub const NAMES: [&'static str; 5] = ["firstfit", "random", "bestfit", "fgd", "fragaware"];

    /// `firstfit`, `random`, `bestfit`, `fgd` or `fragaware` (any case, `-`
    /// and `_` ignored); `random` takes `seed`.
    pub fn parse(name: &str, seed: u64) -> Option<Policy> {
        let n: String = name
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        Some(match n.as_str() {
            "firstfit" => Policy::FirstFit,
            "random" => Policy::Random { seed },
            "bestfit" => Policy::BestFit,
            "fgd" => Policy::Fgd,
            "fragaware" | "default" => Policy::FragAware,
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Policy::FirstFit => "firstfit",
            Policy::Random { .. } => "random",
            Policy::BestFit => "bestfit",
            Policy::Fgd => "fgd",
            Policy::FragAware => "fragaware",
        }
    }

    /// How this policy builds its workload mix from the requests it sees.
    pub fn mix_options(&self) -> MixOptions {
        match self {
            Policy::FragAware => MixOptions::FULL,
            _ => MixOptions::FGD,
        }
    }

    /// Seed for the tie-breaking generator `place_with` makes.
    pub fn seed(&self) -> u64 {
        match self {
            Policy::Random { seed } => *seed,
            _ => 0,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in Policy::NAMES {
            assert_eq!(Policy::parse(n, 7).unwrap().name(), n);
        }
        assert_eq!(Policy::parse("Best-Fit", 0), Some(Policy::BestFit));
        assert_eq!(Policy::parse("random", 7), Some(Policy::Random { seed: 7 }));
        assert_eq!(Policy::parse("gandiva", 0), None);
        assert_eq!(Policy::default(), Policy::FragAware);
    }
}
