//! A task's own `/tmp`: a folder on the host, `<work-dir>/tmp/<job>-<index>-<attempt>`,
//! bound onto `/tmp` in a mount namespace of the task's own (made in the
//! child before exec, see [`super`]). Two tasks that write `/tmp/out` write
//! two files; the daemon reads a workflow step's `/tmp/...` outputs from
//! the folder ([`PrivateTmp::host_path`]) and removes it when the task is
//! over.
//!
//! When the daemon's work folder is itself under `/tmp` (a `gpuctl dev`
//! cluster in a temporary folder), the top folder of `/tmp` that holds it
//! stays visible at the same path inside the task's `/tmp`: the task's
//! script, working directory and secret files live there.

use std::path::{Component, Path, PathBuf};

use crate::owner::{self, RunAs};

/// One task's `/tmp`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrivateTmp {
    /// The folder bound onto `/tmp`.
    pub dir: PathBuf,
    /// Host folders under `/tmp` bound back at their own path inside it.
    pub keep: Vec<PathBuf>,
}

/// The top folder of `/tmp` holding `path` (an absolute, canonical path),
/// if `path` is under `/tmp`: `/tmp/.tmpAbc/state/node-1` → `/tmp/.tmpAbc`.
pub fn top_of_tmp(path: &Path) -> Option<PathBuf> {
    let rest = path.strip_prefix("/tmp").ok()?;
    match rest.components().next()? {
        Component::Normal(first) => Some(Path::new("/tmp").join(first)),
        _ => None,
    }
}

/// Adds to `keep` the top `/tmp` folder of each of `paths` (made canonical;
/// those not under `/tmp` or not there add nothing), once each.
pub fn keep_tops<'a>(keep: &mut Vec<PathBuf>, paths: impl IntoIterator<Item = &'a Path>) {
    for p in paths {
        let Ok(p) = p.canonicalize() else { continue };
        if let Some(top) = top_of_tmp(&p) {
            if !keep.contains(&top) {
                keep.push(top);
            }
        }
    }
}

impl PrivateTmp {
    /// Keeps the host's `/tmp` folders that hold these paths visible too
    /// (a program or working directory the task names under `/tmp`).
    pub fn keep_also<'a>(&mut self, paths: impl IntoIterator<Item = &'a Path>) {
        keep_tops(&mut self.keep, paths);
    }

    /// Where `keep`'s folder is bound inside `dir`.
    fn target(&self, kept: &Path) -> PathBuf {
        self.dir.join(kept.strip_prefix("/tmp").unwrap_or(kept))
    }

    /// The host path of `path` as the task sees it: under `/tmp` (and not
    /// in a kept folder) it is in the task's folder; relative paths and
    /// others are unchanged. `..` never leaves the folder: such a path is
    /// returned unchanged, i.e. not found there.
    pub fn host_path(&self, path: &Path) -> PathBuf {
        let Ok(rest) = path.strip_prefix("/tmp") else {
            return path.to_path_buf();
        };
        if self.keep.iter().any(|k| path.starts_with(k))
            || rest
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return path.to_path_buf();
        }
        self.dir.join(rest)
    }

    /// Create the folder (the task's user's, mode 0700; world-writable
    /// with the sticky bit, like `/tmp`, for a task run as the daemon's
    /// user) and the mount points of the kept folders.
    pub fn create(&self, run_as: Option<&RunAs>) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let made = match run_as.filter(|r| r.switch) {
            Some(r) => owner::own_dir(&self.dir, r),
            None => std::fs::create_dir_all(&self.dir).and_then(|_| {
                std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o1777))
            }),
        };
        made.map_err(|e| format!("creating the task's /tmp {}: {e}", self.dir.display()))?;
        for k in &self.keep {
            let t = self.target(k);
            std::fs::create_dir_all(&t)
                .map_err(|e| format!("creating the mount point {}: {e}", t.display()))?;
        }
        Ok(())
    }

    /// (source, target) of each bind of a kept folder, in mount order.
    pub fn binds(&self) -> Vec<(PathBuf, PathBuf)> {
        self.keep
            .iter()
            .map(|k| (k.clone(), self.target(k)))
            .collect()
    }

    /// Remove the folder (its mounts went with the task's namespace).
    pub fn remove(&self) {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("removing the task's /tmp {}: {e}", self.dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_paths_map_into_the_tasks_folder() {
        let t = PrivateTmp {
            dir: "/w/tmp/j-0-1".into(),
            keep: vec!["/tmp/.tmpAbc".into()],
        };
        assert_eq!(
            t.host_path(Path::new("/tmp/out")),
            Path::new("/w/tmp/j-0-1/out")
        );
        assert_eq!(
            t.host_path(Path::new("/tmp/a/b")),
            Path::new("/w/tmp/j-0-1/a/b")
        );
        assert_eq!(t.host_path(Path::new("/tmp")), Path::new("/w/tmp/j-0-1"));
        // Outside /tmp, relative, kept, or climbing out: as given.
        for p in [
            "/data/out",
            "out",
            "/tmp/.tmpAbc/state/x",
            "/tmp/../etc/passwd",
        ] {
            assert_eq!(t.host_path(Path::new(p)), Path::new(p), "{p}");
        }
        assert_eq!(
            t.binds(),
            [(
                PathBuf::from("/tmp/.tmpAbc"),
                PathBuf::from("/w/tmp/j-0-1/.tmpAbc")
            )]
        );
    }

    #[test]
    fn the_top_folder_of_tmp() {
        assert_eq!(
            top_of_tmp(Path::new("/tmp/.tmpAbc/state/node-1")),
            Some(PathBuf::from("/tmp/.tmpAbc"))
        );
        assert_eq!(top_of_tmp(Path::new("/tmp")), None);
        assert_eq!(top_of_tmp(Path::new("/var/lib/gpu-node")), None);
        assert_eq!(top_of_tmp(Path::new("/tmpx/a")), None);
    }
}
