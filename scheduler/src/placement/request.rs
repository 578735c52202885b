//! What one task (one pod of a trace) asks for, in the units placement
//! counts in, and which GPU kinds satisfy its model and memory constraints.

use gpuctl_common::api::{model_matches, Resources};

use super::node::{GpuKind, MILLI};

/// What one task (one pod of a trace) asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PodRequest {
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    /// Number of GPUs; 0 for a CPU-only task.
    pub gpus: u32,
    /// Thousandths taken on each of those GPUs: below 1000 only when `gpus`
    /// is 1 (a shared GPU), else 1000.
    pub gpu_milli: u32,
    /// Acceptable GPU models; empty: any.
    pub models: Vec<String>,
    /// Least memory each GPU must have; 0: any.
    pub gpu_memory: u64,
}

impl PodRequest {
    /// The request of one task of a job. A whole-GPU count with a fraction
    /// (2.5) takes the whole part, as the first-fit engine did.
    pub fn from_resources(r: &Resources) -> PodRequest {
        let milli = r.gpu_milli();
        let (gpus, gpu_milli) = match milli {
            0 => (0, 0),
            m if m < u64::from(MILLI) => (1, m as u32),
            m => ((m / u64::from(MILLI)) as u32, MILLI),
        };
        PodRequest {
            cpu_milli: r.cpu.map(|c| c.0).unwrap_or(0),
            memory_bytes: r.memory.map(|m| m.0).unwrap_or(0),
            gpus,
            gpu_milli,
            models: r
                .gpu_model
                .as_deref()
                .map(|m| {
                    m.split('|')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            gpu_memory: r.gpu_memory.map(|m| m.0).unwrap_or(0),
        }
    }

    /// Thousandths of GPU asked for in all.
    pub fn total_gpu_milli(&self) -> u64 {
        u64::from(self.gpus) * u64::from(self.gpu_milli)
    }

    /// A share of one GPU, which may sit next to other shares.
    pub fn is_share(&self) -> bool {
        self.gpus == 1 && self.gpu_milli < MILLI
    }

    /// Whether a GPU of `kind` satisfies the model and memory constraints.
    pub fn accepts(&self, kind: &GpuKind) -> bool {
        self.accepts_gpu(&kind.model, kind.memory_bytes)
    }

    /// Whether a GPU of `model` with `memory_bytes` satisfies the model and
    /// memory constraints.
    pub fn accepts_gpu(&self, model: &str, memory_bytes: u64) -> bool {
        (self.gpu_memory == 0 || memory_bytes >= self.gpu_memory)
            && (self.models.is_empty() || self.models.iter().any(|m| model_matches(m, model)))
    }

    /// `accepts` for every kind of the cluster, by kind number.
    pub fn accept_table(&self, kinds: &[GpuKind]) -> Vec<bool> {
        if self.gpu_memory == 0 && self.models.is_empty() {
            return vec![true; kinds.len()];
        }
        kinds.iter().map(|k| self.accepts(k)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_shapes() {
        let r = |gpus: f64| {
            PodRequest::from_resources(&Resources {
                gpus,
                gpu_model: Some("A100 | H100".into()),
                ..Default::default()
            })
        };
        let cases = [(0.0, 0, 0), (0.25, 1, 250), (1.0, 1, 1000), (4.0, 4, 1000)];
        for (gpus, n, m) in cases {
            let p = r(gpus);
            assert_eq!((p.gpus, p.gpu_milli), (n, m), "{gpus}");
            assert_eq!(p.models, vec!["A100".to_string(), "H100".to_string()]);
        }
    }
}
