//! Resources a step asks for: GPU counts (whole GPUs or a share of one),
//! which the run state machine and the scheduler parse the same way.

use gpuctl_common::api::MAX_GPUS_PER_TASK;

use super::checker::Validator;
use crate::spec::ResourceRequirements;

/// GPUs from `nvidia.com/gpu`: whole GPUs or a share of one.
pub fn parse_gpus(s: &str) -> Result<f64, String> {
    let g: f64 = match s.trim().strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().map(|m| m / 1000.0),
        None => s.trim().parse(),
    }
    .map_err(|_| format!("invalid GPU count {s:?} (expected e.g. 1, 2 or 0.5)"))?;
    if !g.is_finite() || g < 0.0 {
        return Err(format!("must be zero or more, got {s}"));
    }
    if g > MAX_GPUS_PER_TASK {
        return Err(format!(
            "{g} GPUs for one step is more than any node has (limit {MAX_GPUS_PER_TASK})"
        ));
    }
    if g > 1.0 && g.fract() != 0.0 {
        return Err(format!(
            "{g} is neither whole GPUs nor a share of one GPU (use e.g. 2 or 0.5)"
        ));
    }
    Ok(g)
}

impl Validator<'_> {
    /// `resources.limits` and `resources.requests` of a container or script.
    pub(super) fn resources(&mut self, p: &str, r: &ResourceRequirements) {
        for (name, list) in [("limits", &r.limits), ("requests", &r.requests)] {
            if let Some(g) = list.as_ref().and_then(|l| l.gpu.as_ref()) {
                if let Err(e) = parse_gpus(&g.0) {
                    self.err(format!("{p}.resources.{name}.nvidia.com/gpu"), e);
                }
            }
        }
    }
}
