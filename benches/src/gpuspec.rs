//! GPU-model constraints for a pod list that has none, in the manner of the
//! openb `gpuspec` lists: the FGD authors report that about a third of the
//! GPU tasks of the production cluster name the GPU types they accept
//! (ATC'23 §6.5), and their `openb_pod_list_gpuspec*.csv` lists give that
//! share of the GPU pods a `gpu_spec`. The three lists this replay reads
//! carry the `gpu_spec` column but leave it empty, so `trace-replay
//! --gpu-spec-share 0.33` draws one: a GPU pod, with that probability,
//! accepts one model, drawn among the models of the nodes that could hold
//! it when empty, weighted by their GPUs (so a constrained pod still fits
//! the cluster somewhere). The draw has its own seed: every replay seed and
//! every policy sees the same constrained list, as with a list read from a
//! file. Pods that already name models keep them.

use gpuctl_scheduler::placement::{NodeView, PodRequest};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Seed of the constraint draw.
pub const SPEC_SEED: u64 = 0x6770_7573_7065_6333;

/// Give about `share` of the GPU pods that name no model a constraint to
/// one model of `nodes` (see the module doc). Returns how many got one.
pub fn add_model_constraints(
    pods: &mut [PodRequest],
    nodes: &[NodeView],
    share: f64,
    seed: u64,
) -> usize {
    let mut draw = StdRng::seed_from_u64(seed);
    let mut added = 0;
    for pod in pods.iter_mut() {
        if pod.gpus == 0 || !pod.models.is_empty() {
            continue;
        }
        // Drawn for every GPU pod, so that which pods are constrained does
        // not depend on the share's effect on earlier pods.
        let pick: f64 = draw.gen();
        let at: f64 = draw.gen();
        if pick >= share {
            continue;
        }
        // (model, GPUs of that model on nodes that could hold the pod).
        let mut models: Vec<(&str, u64)> = Vec::new();
        for n in nodes {
            let holds = n.gpus.len() >= pod.gpus as usize
                && n.cpu_milli >= pod.cpu_milli
                && n.memory_bytes >= pod.memory_bytes;
            let Some(model) = n.gpus.first().map(|g| g.model.as_str()) else {
                continue;
            };
            if !holds || model.is_empty() {
                continue;
            }
            match models.iter_mut().find(|(m, _)| *m == model) {
                Some((_, w)) => *w += n.gpus.len() as u64,
                None => models.push((model, n.gpus.len() as u64)),
            }
        }
        let total: u64 = models.iter().map(|(_, w)| w).sum();
        if total == 0 {
            continue;
        }
        let mut left = (at * total as f64) as u64;
        for (m, w) in &models {
            if left < *w {
                pod.models = vec![m.to_string()];
                added += 1;
                break;
            }
            left -= w;
        }
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::{parse_nodes, parse_pods};

    #[test]
    fn constraints_name_a_model_that_could_hold_the_pod() {
        let nodes = parse_nodes(
            "n.csv",
            "sn,cpu_milli,memory_mib,gpu,model\n\
             a,8000,16384,2,T4\n\
             b,96000,786432,8,V100M32\n\
             c,96000,786432,8,G2\n\
             d,32000,16384,0,\n",
        )
        .unwrap();
        let mut text = String::from("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n");
        for i in 0..300 {
            let (gpus, milli, spec) = match i % 4 {
                0 => (0, 0, ""),
                1 => (1, 500, ""),
                2 => (8, 1000, ""),
                _ => (1, 1000, "T4"),
            };
            text.push_str(&format!("p{i},4000,4096,{gpus},{milli},{spec}\n"));
        }
        let pods = parse_pods("p.csv", &text).unwrap();
        let mut got = pods.clone();
        let added = add_model_constraints(&mut got, &nodes, 0.5, SPEC_SEED);
        // 150 GPU pods without a model, about half drawn.
        assert!((50..=100).contains(&added), "{added}");
        let mut again = pods.clone();
        assert_eq!(
            add_model_constraints(&mut again, &nodes, 0.5, SPEC_SEED),
            added
        );
        assert_eq!(again, got, "the draw is seeded");
        let mut seen = std::collections::BTreeSet::new();
        for (before, after) in pods.iter().zip(&got) {
            if before.gpus == 0 || !before.models.is_empty() {
                assert_eq!(before, after, "CPU-only pods and named models are kept");
                continue;
            }
            for m in &after.models {
                seen.insert(m.clone());
                if after.gpus == 8 {
                    assert_ne!(m, "T4", "no T4 node has 8 GPUs");
                }
            }
        }
        assert!(seen.contains("T4") && seen.contains("G2"), "{seen:?}");
        let mut none = pods.clone();
        assert_eq!(add_model_constraints(&mut none, &nodes, 0.0, SPEC_SEED), 0);
        assert_eq!(none, pods);
    }
}
