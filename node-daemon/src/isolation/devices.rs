//! GPU device rules: a task may open only its own GPUs' device files.
//!
//! NVIDIA's character devices share one major number (195): `/dev/nvidiaN`
//! for GPU N (minor N), `nvidiactl` (255) and `nvidia-modeset` (254) that
//! every CUDA process opens. The rules deny major 195 as a whole, then allow
//! the task's own GPUs and the two control devices. Everything else stays
//! as the daemon's cgroup has it: `/dev/null`, `/dev/zero`, the terminals,
//! and `nvidia-uvm`/`nvidia-uvm-tools`/`nvidia-caps` (majors of their own,
//! given dynamically; UVM holds no GPU's memory by itself).
//!
//! A task's GPUs are given here by their device-file minors: the
//! inventory reports each GPU's (NVML's `minor_number`), since CUDA's index
//! and the driver's minor can differ; a GPU whose minor is unknown (the
//! simulated inventory) is taken to be `/dev/nvidia<index>`.
//!
//! Applied through the v1 `devices` controller (`devices.deny`,
//! `devices.allow`). cgroup v2 has no such files: the kernel checks device
//! access there with a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to
//! the cgroup (what runc and crun load); [`super::bpf`] builds and
//! attaches one to a task's v2 cgroup with the same rules.

use std::path::Path;

/// The major number of NVIDIA's GPU and control device files.
pub const NVIDIA_MAJOR: u32 = 195;

/// A character device file under `/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// The file name, e.g. `nvidia0`, `nvidiactl`.
    pub name: String,
    pub major: u32,
    pub minor: u32,
}

/// Lines for the v1 `devices.deny` and then `devices.allow` files, and
/// the same as the minors of major 195 a v2 device program allows
/// ([`super::bpf`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rules {
    pub deny: Vec<String>,
    pub allow: Vec<String>,
    #[serde(default)]
    pub minors: Vec<u32>,
}

/// The rules for a task bound to `gpus` (device-file minors) on a host with
/// `nodes`; `None` when the host has no NVIDIA GPU device file (nothing to
/// guard). Pure.
pub fn rules(nodes: &[DeviceNode], gpus: &[u32]) -> Option<Rules> {
    let gpu_index = |n: &DeviceNode| -> Option<u32> {
        let digits = n.name.strip_prefix("nvidia")?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let is_gpu = |n: &DeviceNode| n.major == NVIDIA_MAJOR && gpu_index(n).is_some();
    if !nodes.iter().any(is_gpu) {
        return None;
    }
    let mut allow: Vec<(u32, String)> = nodes
        .iter()
        .filter(|n| n.major == NVIDIA_MAJOR)
        .filter(|n| match gpu_index(n) {
            Some(i) => gpus.contains(&i),
            None => matches!(n.name.as_str(), "nvidiactl" | "nvidia-modeset"),
        })
        .map(|n| (n.minor, format!("c {}:{} rwm", n.major, n.minor)))
        .collect();
    allow.sort();
    allow.dedup();
    Some(Rules {
        deny: vec![format!("c {NVIDIA_MAJOR}:* rwm")],
        minors: allow.iter().map(|(m, _)| *m).collect(),
        allow: allow.into_iter().map(|(_, l)| l).collect(),
    })
}

/// `st_rdev` → (major, minor), as glibc's `major()`/`minor()`.
fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// The `nvidia*` character devices directly under `dev` (normally `/dev`).
pub fn scan(dev: &Path) -> Vec<DeviceNode> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(entries) = std::fs::read_dir(dev) else {
        return Vec::new();
    };
    let mut out: Vec<DeviceNode> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            if !name.starts_with("nvidia") {
                return None;
            }
            let meta = std::fs::metadata(e.path()).ok()?;
            if !meta.file_type().is_char_device() {
                return None;
            }
            let (major, minor) = split_dev(meta.rdev());
            Some(DeviceNode { name, major, minor })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, major: u32, minor: u32) -> DeviceNode {
        DeviceNode {
            name: name.into(),
            major,
            minor,
        }
    }

    fn host() -> Vec<DeviceNode> {
        vec![
            node("nvidia0", 195, 0),
            node("nvidia1", 195, 1),
            node("nvidia2", 195, 2),
            node("nvidia3", 195, 3),
            node("nvidiactl", 195, 255),
            node("nvidia-modeset", 195, 254),
            node("nvidia-uvm", 509, 0),
            node("nvidia-uvm-tools", 509, 1),
        ]
    }

    #[test]
    fn a_task_gets_its_gpus_and_the_control_devices_only() {
        let r = rules(&host(), &[1, 3]).unwrap();
        assert_eq!(r.deny, ["c 195:* rwm"]);
        assert_eq!(
            r.allow,
            [
                "c 195:1 rwm",
                "c 195:3 rwm",
                "c 195:254 rwm",
                "c 195:255 rwm"
            ]
        );
    }

    #[test]
    fn a_task_without_gpus_gets_none_of_them() {
        let r = rules(&host(), &[]).unwrap();
        assert_eq!(r.deny, ["c 195:* rwm"]);
        assert_eq!(r.allow, ["c 195:254 rwm", "c 195:255 rwm"]);
    }

    #[test]
    fn hosts_without_gpu_device_files_get_no_rules() {
        assert_eq!(rules(&[], &[0]), None);
        // Only UVM (or a look-alike name with another major): nothing to guard.
        let odd = vec![node("nvidia-uvm", 509, 0), node("nvidia0", 12, 0)];
        assert_eq!(rules(&odd, &[0]), None);
    }

    #[test]
    fn device_numbers_split_as_glibc_does() {
        assert_eq!(split_dev((195 << 8) | 3), (195, 3));
        // makedev(509, 300): minor bits above 8 go to bits 20 and up.
        let dev = (509u64 << 8) | (300 & 0xff) | ((300u64 & !0xff) << 12);
        assert_eq!(split_dev(dev), (509, 300));
        // /dev here has no GPU; /dev/null is not an nvidia file.
        assert!(scan(Path::new("/dev"))
            .iter()
            .all(|n| n.name.starts_with("nvidia")));
    }
}
