//! A simulated GPU inventory, described by `--gpus 4xA100-80GB` specs or a
//! YAML file (`--gpu-file node.yaml`). Deterministic: the same description and
//! node name give the same UUIDs and the same metrics.
//!
//! ```yaml
//! gpus:
//!   - model: A100-80GB
//!     count: 4
//!     memory: 80Gi        # optional; default from the model's -<N>GB suffix
//!     nvlinkDomain: a     # optional; default nvl<group index>
//!   - model: T4-16GB
//!     count: 2
//! faults:
//!   - gpu: 1
//!     xid: 79             # that GPU reports this XID error (unhealthy if fatal)
//! ```
//!
//! Faults can also be injected while the daemon runs (chaos drills, capacity
//! planning, tests): each line `GPU XID` appended to the inject file
//! (`<work-dir>/inject-xid`, e.g. `echo "1 79" >> gpu-node-n1/inject-xid`)
//! is applied within a second, as if that GPU had just reported the XID.
//! The file is read again after a restart, so an injected fault lasts
//! until its line is removed (as a real one lasts until the GPU is reset).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;

use super::gpu::{GpuInfo, GpuInventory, GpuSample};

/// More GPUs than any node has: a typo, not a machine.
pub const MAX_GPUS_PER_NODE: u32 = 64;

/// Memory of a simulated GPU whose model names none (`4xT4`).
pub const DEFAULT_GPU_MEMORY: u64 = 16 << 30;

/// Why a simulated inventory description was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    #[error("invalid --gpus {spec:?}: {reason} (expected COUNTxMODEL, e.g. 4xA100-80GB)")]
    Spec { spec: String, reason: String },
    #[error("{file}: {reason}")]
    File { file: String, reason: String },
    #[error("{file}: {path}: {reason}")]
    Field {
        file: String,
        path: String,
        reason: String,
    },
    #[error("{total} GPUs on one node is more than the limit of {MAX_GPUS_PER_NODE}")]
    TooMany { total: u64 },
}

/// One group of identical GPUs, as a spec or a YAML entry describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    model: String,
    count: u32,
    memory_bytes: u64,
    nvlink_domain: String,
}

/// Parse one `--gpus` spec: `COUNTxMODEL`, e.g. `4xA100-80GB`. Returns the
/// count, the model and its memory (from a `-<N>GB` suffix, else 16 GiB).
pub fn parse_gpu_spec(spec: &str) -> Result<(u32, String, u64), SimError> {
    let bad = |reason: &str| SimError::Spec {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let s = spec.trim();
    let Some((count, model)) = s.split_once(['x', 'X']) else {
        return Err(bad("missing \"x\" between count and model"));
    };
    if count.is_empty() {
        return Err(bad("missing GPU count before \"x\""));
    }
    if !count.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad("the GPU count must be a whole number from 1 to 64"));
    }
    let count: u64 = count
        .parse()
        .map_err(|_| bad("the GPU count must be a whole number from 1 to 64"))?;
    if count == 0 {
        return Err(bad("the GPU count must be at least 1"));
    }
    if count > u64::from(MAX_GPUS_PER_NODE) {
        return Err(bad(&format!(
            "{count} GPUs on one node is more than the limit of {MAX_GPUS_PER_NODE}"
        )));
    }
    check_model(model).map_err(|r| bad(&r))?;
    Ok((count as u32, model.to_string(), model_memory(model)))
}

fn check_model(model: &str) -> Result<(), String> {
    if model.is_empty() {
        return Err("missing GPU model after \"x\"".into());
    }
    if model.len() > 64 {
        return Err("the model name is longer than 64 characters".into());
    }
    if let Some(c) = model
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "the model name may hold letters, digits, '-', '_' and '.', not {c:?}"
        ));
    }
    Ok(())
}

/// `A100-80GB` → 80 GiB: NVIDIA's "80GB" cards hold about 80 GiB.
fn model_memory(model: &str) -> u64 {
    let upper = model.to_ascii_uppercase();
    let digits = upper
        .rsplit_once('-')
        .and_then(|(_, tail)| tail.strip_suffix("GB").or_else(|| tail.strip_suffix('G')))
        .and_then(|n| n.parse::<u64>().ok());
    match digits {
        Some(n) if (1..=4096).contains(&n) => n << 30,
        _ => DEFAULT_GPU_MEMORY,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileDoc {
    gpus: Vec<FileGroup>,
    #[serde(default)]
    faults: Vec<FileFault>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileGroup {
    model: String,
    count: u32,
    #[serde(default)]
    memory: Option<gpuctl_common::api::Bytes>,
    #[serde(default)]
    nvlink_domain: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileFault {
    gpu: u32,
    xid: u64,
}

/// A node's GPUs as described, plus which of them running tasks hold.
#[derive(Debug)]
pub struct SimulatedInventory {
    /// As described; health and XIDs are in `faults`.
    devices: Vec<GpuInfo>,
    /// XID per GPU index (0: no fault); injected ones are added at run time.
    faults: Mutex<Vec<u64>>,
    busy: Mutex<BTreeSet<u32>>,
    /// Where run-time faults are read from, and the lines already reported
    /// as bad (so a bad line is logged once, not every second).
    inject: Option<(PathBuf, Mutex<BTreeSet<String>>)>,
}

impl SimulatedInventory {
    /// From repeatable `--gpus` specs; each spec is its own NVLink domain.
    pub fn from_specs(node: &str, specs: &[String]) -> Result<Self, SimError> {
        let mut groups = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let (count, model, memory_bytes) = parse_gpu_spec(spec)?;
            groups.push(Group {
                model,
                count,
                memory_bytes,
                nvlink_domain: format!("nvl{i}"),
            });
        }
        Self::build(node, groups, Vec::new())
    }

    /// From a YAML file (see the module docs).
    pub fn from_file(node: &str, path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::File {
            file: path.display().to_string(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::from_yaml(node, &path.display().to_string(), &text)
    }

    /// From YAML text; `file` names the source in errors.
    pub fn from_yaml(node: &str, file: &str, text: &str) -> Result<Self, SimError> {
        // Through a Value, as gpuctl-common parses manifests: syntax errors
        // carry their line, field errors their path (and nothing twice).
        let value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| SimError::File {
                file: file.to_string(),
                reason: format!("malformed YAML: {e}"),
            })?;
        let doc: FileDoc = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let reason = e.into_inner().to_string();
            if path == "." || path.is_empty() {
                SimError::File {
                    file: file.to_string(),
                    reason,
                }
            } else {
                SimError::Field {
                    file: file.to_string(),
                    path,
                    reason,
                }
            }
        })?;
        let field = |path: String, reason: String| SimError::Field {
            file: file.to_string(),
            path,
            reason,
        };
        if doc.gpus.is_empty() {
            return Err(field("gpus".into(), "list at least one GPU group".into()));
        }
        let mut groups = Vec::new();
        for (i, g) in doc.gpus.into_iter().enumerate() {
            check_model(&g.model).map_err(|r| field(format!("gpus[{i}].model"), r))?;
            if g.count == 0 || g.count > MAX_GPUS_PER_NODE {
                return Err(field(
                    format!("gpus[{i}].count"),
                    format!("must be from 1 to {MAX_GPUS_PER_NODE}, got {}", g.count),
                ));
            }
            let memory_bytes = match g.memory {
                Some(b) if b.0 == 0 => {
                    return Err(field(
                        format!("gpus[{i}].memory"),
                        "must be more than zero".into(),
                    ))
                }
                Some(b) => b.0,
                None => model_memory(&g.model),
            };
            let nvlink_domain = match g.nvlink_domain {
                Some(d) if d.trim().is_empty() => {
                    return Err(field(
                        format!("gpus[{i}].nvlinkDomain"),
                        "must not be empty (leave it out for the default)".into(),
                    ))
                }
                Some(d) => d,
                None => format!("nvl{i}"),
            };
            groups.push(Group {
                model: g.model,
                count: g.count,
                memory_bytes,
                nvlink_domain,
            });
        }
        let total: u64 = groups.iter().map(|g| u64::from(g.count)).sum();
        let mut faults = Vec::new();
        for (i, f) in doc.faults.into_iter().enumerate() {
            if u64::from(f.gpu) >= total {
                return Err(field(
                    format!("faults[{i}].gpu"),
                    format!(
                        "no GPU {} on this node (indices run from 0 to {})",
                        f.gpu,
                        total.saturating_sub(1)
                    ),
                ));
            }
            if f.xid == 0 {
                return Err(field(
                    format!("faults[{i}].xid"),
                    "an XID error is a number above 0, e.g. 79 (GPU fell off the bus)".into(),
                ));
            }
            faults.push((f.gpu, f.xid));
        }
        Self::build(node, groups, faults)
    }

    fn build(node: &str, groups: Vec<Group>, faults: Vec<(u32, u64)>) -> Result<Self, SimError> {
        let total: u64 = groups.iter().map(|g| u64::from(g.count)).sum();
        if total > u64::from(MAX_GPUS_PER_NODE) {
            return Err(SimError::TooMany { total });
        }
        let mut devices = Vec::new();
        for g in groups {
            for _ in 0..g.count {
                let index = devices.len() as u32;
                devices.push(GpuInfo {
                    uuid: sim_uuid(node, index),
                    index,
                    model: g.model.clone(),
                    memory_bytes: g.memory_bytes,
                    nvlink_domain: g.nvlink_domain.clone(),
                    healthy: true,
                    xid: 0,
                    minor: None,
                });
            }
        }
        let mut xids = vec![0; devices.len()];
        for (gpu, xid) in faults {
            xids[gpu as usize] = xid;
        }
        Ok(SimulatedInventory {
            devices,
            faults: Mutex::new(xids),
            busy: Mutex::new(BTreeSet::new()),
            inject: None,
        })
    }

    /// Read run-time faults from `path` (see the module docs), now and on
    /// every [`GpuInventory::poll_faults`].
    pub fn with_inject_file(mut self, path: PathBuf) -> Self {
        self.inject = Some((path, Mutex::new(BTreeSet::new())));
        self.poll_faults();
        self
    }

    /// GPU `gpu` reports `xid` from now on (a fatal one makes it unhealthy).
    pub fn inject_xid(&self, gpu: u32, xid: u64) -> Result<(), String> {
        let n = self.devices.len();
        if gpu as usize >= n {
            return Err(format!(
                "no GPU {gpu} on this node (indices run from 0 to {})",
                n.saturating_sub(1)
            ));
        }
        if xid == 0 {
            return Err("an XID error is a number above 0, e.g. 79".into());
        }
        let mut faults = lock(&self.faults);
        if faults[gpu as usize] != xid {
            tracing::warn!(
                "GPU {gpu} ({}): injected XID {xid}",
                self.devices[gpu as usize].uuid
            );
            faults[gpu as usize] = xid;
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// One line of the inject file: `GPU XID`, blank, or a `#` comment.
fn parse_inject_line(line: &str) -> Result<Option<(u32, u64)>, String> {
    let line = line.split('#').next().unwrap_or_default().trim();
    if line.is_empty() {
        return Ok(None);
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let [gpu, xid] = words[..] else {
        return Err("expected GPU XID, e.g. \"1 79\"".into());
    };
    let gpu = gpu
        .parse()
        .map_err(|_| format!("GPU {gpu:?} is not a GPU index"))?;
    let xid = xid
        .parse()
        .map_err(|_| format!("XID {xid:?} is not a number"))?;
    Ok(Some((gpu, xid)))
}

/// A UUID-shaped, deterministic identity: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`
/// from the node name and index, so restarts keep the same GPU identities.
fn sim_uuid(node: &str, index: u32) -> String {
    fn fnv1a(seed: u64, data: &[u8]) -> u64 {
        let mut h = seed;
        for b in data {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
    // splitmix64's finalizer, so neighbouring indices differ in every digit.
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let key = format!("gpuctl-sim/{node}/{index}");
    let a = mix(fnv1a(0xcbf2_9ce4_8422_2325, key.as_bytes()));
    let b = mix(a ^ 0x9e37_79b9_7f4a_7c15);
    format!(
        "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// Board power of a model family, for plausible simulated power readings.
fn model_tdp_watts(model: &str) -> f64 {
    let m = model.to_ascii_uppercase();
    if m.starts_with("H100") || m.starts_with("H200") || m.starts_with("B200") {
        700.0
    } else if m.starts_with("A100") {
        400.0
    } else if m.starts_with("T4") || m.starts_with("L4") {
        70.0
    } else {
        300.0
    }
}

impl GpuInventory for SimulatedInventory {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    fn devices(&self) -> Vec<GpuInfo> {
        let faults = lock(&self.faults).clone();
        let mut devices = self.devices.clone();
        for (d, &xid) in devices.iter_mut().zip(&faults) {
            if gpuctl_common::xid::is_fatal(xid) {
                d.healthy = false;
                d.xid = xid;
            }
        }
        devices
    }

    fn poll_faults(&self) {
        let Some((path, bad)) = &self.inject else {
            return;
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                if lock(bad).insert(format!("read: {e}")) {
                    tracing::warn!("{}: cannot read: {e}", path.display());
                }
                return;
            }
        };
        for (i, line) in text.lines().enumerate() {
            let applied = parse_inject_line(line)
                .and_then(|f| f.map_or(Ok(()), |(gpu, xid)| self.inject_xid(gpu, xid)));
            if let Err(why) = applied {
                let what = format!("{}:{}: {line:?}: {why}", path.display(), i + 1);
                if lock(bad).insert(what.clone()) {
                    tracing::warn!("{what}");
                }
            }
        }
    }

    fn metrics(&self) -> Vec<GpuSample> {
        let busy = lock(&self.busy).clone();
        self.devices()
            .iter()
            .map(|d| {
                let is_busy = busy.contains(&d.index);
                let tdp = model_tdp_watts(&d.model);
                GpuSample {
                    uuid: d.uuid.clone(),
                    index: d.index,
                    model: d.model.clone(),
                    memory_total_bytes: d.memory_bytes,
                    utilization_ratio: if is_busy { 1.0 } else { 0.0 },
                    // A training job fills most of the card; an idle card
                    // holds only the driver's reservation.
                    memory_used_bytes: if is_busy { d.memory_bytes / 10 * 9 } else { 0 },
                    temperature_celsius: if is_busy { 68.0 } else { 34.0 },
                    power_watts: if is_busy { tdp * 0.9 } else { tdp * 0.15 },
                    xid_errors: lock(&self.faults)[d.index as usize],
                    healthy: d.healthy,
                }
            })
            .collect()
    }

    fn set_busy(&self, indices: &[u32]) {
        *lock(&self.busy) = indices.iter().copied().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_err(spec: &str) -> String {
        parse_gpu_spec(spec)
            .expect_err("should be rejected")
            .to_string()
    }

    #[test]
    fn good_specs() {
        assert_eq!(
            parse_gpu_spec("4xA100-80GB").unwrap(),
            (4, "A100-80GB".to_string(), 80 << 30)
        );
        assert_eq!(
            parse_gpu_spec("2xT4-16GB").unwrap(),
            (2, "T4-16GB".to_string(), 16 << 30)
        );
        assert_eq!(
            parse_gpu_spec("8xH100").unwrap(),
            (8, "H100".to_string(), DEFAULT_GPU_MEMORY)
        );
        assert_eq!(parse_gpu_spec("1xL4-24g").unwrap().2, 24 << 30);
    }

    #[test]
    fn bad_specs() {
        let cases = [
            ("0xA100", "the GPU count must be at least 1"),
            ("xA100", "missing GPU count before \"x\""),
            ("4x", "missing GPU model after \"x\""),
            (
                "-1xA100",
                "the GPU count must be a whole number from 1 to 64",
            ),
            (
                "65xA100",
                "65 GPUs on one node is more than the limit of 64",
            ),
            ("99999999999999999999xA100", "whole number"),
            ("A100", "missing \"x\" between count and model"),
            ("4xA100/80", "not '/'"),
        ];
        for (spec, want) in cases {
            let got = spec_err(spec);
            assert!(got.contains(want), "{spec}: {got}");
            assert!(got.contains(&format!("{spec:?}")), "{spec}: {got}");
            assert!(got.contains("expected COUNTxMODEL"), "{spec}: {got}");
        }
    }

    #[test]
    fn mixed_specs_number_across_groups() {
        let inv = SimulatedInventory::from_specs(
            "node-a",
            &["4xA100-80GB".to_string(), "2xT4-16GB".to_string()],
        )
        .unwrap();
        let d = inv.devices();
        assert_eq!(d.len(), 6);
        assert_eq!(
            d.iter().map(|g| g.index).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5]
        );
        assert_eq!(d[3].nvlink_domain, "nvl0");
        assert_eq!(d[4].nvlink_domain, "nvl1");
        assert_eq!(d[4].model, "T4-16GB");
        assert_eq!(d[4].memory_bytes, 16 << 30);
        let uuids: BTreeSet<_> = d.iter().map(|g| g.uuid.clone()).collect();
        assert_eq!(uuids.len(), 6, "UUIDs are unique");
        assert!(d[0].uuid.starts_with("GPU-") && d[0].uuid.len() == 40);
        // Deterministic across restarts, distinct across nodes.
        let again = SimulatedInventory::from_specs("node-a", &["1xA100".into()]).unwrap();
        assert_eq!(again.devices()[0].uuid, d[0].uuid);
        let other = SimulatedInventory::from_specs("node-b", &["1xA100".into()]).unwrap();
        assert_ne!(other.devices()[0].uuid, d[0].uuid);
    }

    #[test]
    fn too_many_across_specs() {
        let err =
            SimulatedInventory::from_specs("n", &["40xA100".into(), "40xT4".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "80 GPUs on one node is more than the limit of 64"
        );
    }

    #[test]
    fn busy_gpus_report_load() {
        let inv = SimulatedInventory::from_specs("n", &["2xA100-80GB".into()]).unwrap();
        inv.set_busy(&[1]);
        let m = inv.metrics();
        assert_eq!(m[0].utilization_ratio, 0.0);
        assert_eq!(m[0].memory_used_bytes, 0);
        assert_eq!(m[1].utilization_ratio, 1.0);
        assert!(m[1].memory_used_bytes > 0 && m[1].memory_used_bytes < 80 << 30);
        assert!(m[1].power_watts > m[0].power_watts);
        assert!(m[1].temperature_celsius > m[0].temperature_celsius);
        inv.set_busy(&[]);
        assert_eq!(inv.metrics()[1].utilization_ratio, 0.0);
    }

    const GOOD_YAML: &str = "
gpus:
  - model: A100-80GB
    count: 4
    memory: 80Gi
    nvlinkDomain: a
  - model: T4-16GB
    count: 2
faults:
  - gpu: 1
    xid: 79
";

    #[test]
    fn yaml_file() {
        let inv = SimulatedInventory::from_yaml("n", "node.yaml", GOOD_YAML).unwrap();
        let d = inv.devices();
        assert_eq!(d.len(), 6);
        assert_eq!(d[0].nvlink_domain, "a");
        assert_eq!(d[5].nvlink_domain, "nvl1");
        assert_eq!(d[0].memory_bytes, 80 << 30);
        assert!(!d[1].healthy);
        assert!(d[0].healthy);
        let m = inv.metrics();
        assert_eq!(m[1].xid_errors, 79);
        assert!(!m[1].healthy);
        assert_eq!(m[0].xid_errors, 0);
    }

    #[test]
    fn bad_yaml() {
        let cases = [
            (
                "gpus:\n  - model: A100\n    count: 2\n    colour: red\n",
                "node.yaml: gpus[0].colour: unknown field `colour`, expected one of `model`, `count`, `memory`, `nvlinkDomain`",
            ),
            (
                "gpus:\n  - model: A100\n    count: 0\n",
                "node.yaml: gpus[0].count: must be from 1 to 64, got 0",
            ),
            (
                "gpus:\n  - model: A100\n    count: 65\n",
                "node.yaml: gpus[0].count: must be from 1 to 64, got 65",
            ),
            (
                "gpus:\n  - model: A100\n    count: -1\n",
                "node.yaml: gpus[0].count: invalid value",
            ),
            (
                "gpus:\n  - model: A100\n    count: 2\n    memory: lots\n",
                "node.yaml: gpus[0].memory: invalid size",
            ),
            (
                "gpus:\n  - model: ''\n    count: 2\n",
                "node.yaml: gpus[0].model: missing GPU model",
            ),
            (
                "gpus:\n  - model: A100\n    count: 2\nfaults:\n  - gpu: 2\n    xid: 79\n",
                "node.yaml: faults[0].gpu: no GPU 2 on this node (indices run from 0 to 1)",
            ),
            (
                "gpus:\n  - model: A100\n    count: 2\nfaults:\n  - gpu: 0\n",
                "node.yaml: faults[0]: missing field `xid`",
            ),
            ("gpus: []\n", "node.yaml: gpus: list at least one GPU group"),
            ("gpus: [\n", "node.yaml: malformed YAML"),
            ("", "node.yaml: missing field `gpus`"),
            ("gpu: []\n", "node.yaml: gpu: unknown field `gpu`, expected `gpus` or `faults`"),
            (
                "gpus:\n  - model: A100\n    count: 40\n  - model: T4\n    count: 40\n",
                "80 GPUs on one node is more than the limit of 64",
            ),
        ];
        for (text, want) in cases {
            let got = SimulatedInventory::from_yaml("n", "node.yaml", text)
                .expect_err(text)
                .to_string();
            assert!(got.contains(want), "{text:?}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn application_xids_leave_the_gpu_healthy() {
        let text = "gpus:\n  - model: A100\n    count: 2\nfaults:\n  - gpu: 0\n    xid: 13\n";
        let inv = SimulatedInventory::from_yaml("n", "node.yaml", text).unwrap();
        assert!(inv.devices()[0].healthy);
        assert_eq!(inv.metrics()[0].xid_errors, 13);
    }

    #[test]
    fn inject_file_adds_faults_at_run_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inject-xid");
        let inv = SimulatedInventory::from_specs("n", &["4xA100".into()])
            .unwrap()
            .with_inject_file(path.clone());
        assert!(inv.devices().iter().all(|d| d.healthy), "no file yet");
        std::fs::write(&path, "# chaos drill\n2 79\n\nnine 79\n9 48\n1 13\n").unwrap();
        inv.poll_faults();
        let d = inv.devices();
        assert!(!d[2].healthy);
        assert_eq!(d[2].xid, 79);
        assert!(d[1].healthy, "XID 13 is the application's");
        assert_eq!(inv.metrics()[1].xid_errors, 13);
        assert!(d[0].healthy && d[3].healthy);
        // Bad lines are remembered (logged once), good ones applied.
        let (_, bad) = inv.inject.as_ref().unwrap();
        let bad: Vec<String> = lock(bad).iter().cloned().collect();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad
            .iter()
            .any(|b| b.contains(":4: \"nine 79\": GPU \"nine\" is not a GPU index")));
        assert!(bad
            .iter()
            .any(|b| b.contains(":5: \"9 48\": no GPU 9 on this node (indices run from 0 to 3)")));
        // A restarted daemon reads the file again.
        let again = SimulatedInventory::from_specs("n", &["4xA100".into()])
            .unwrap()
            .with_inject_file(path);
        assert!(!again.devices()[2].healthy);
    }

    #[test]
    fn inject_line_parsing() {
        assert_eq!(parse_inject_line(" 1   79 # fell off"), Ok(Some((1, 79))));
        assert_eq!(parse_inject_line("# only a comment"), Ok(None));
        assert!(parse_inject_line("1")
            .unwrap_err()
            .contains("expected GPU XID"));
        assert!(parse_inject_line("1 x")
            .unwrap_err()
            .contains("XID \"x\" is not a number"));
    }

    #[test]
    fn missing_file_is_named() {
        let err = SimulatedInventory::from_file("n", Path::new("/nonexistent/node.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/nonexistent/node.yaml: cannot read"),
            "{err}"
        );
    }
}
