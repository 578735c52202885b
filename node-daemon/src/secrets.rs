//! A task's secret files: written before it starts into a folder of its own
//! (`<secrets_dir>/<job>-<index>-<attempt>/<dir>/<key>`, folders 0700, files
//! 0400, owned by the task's user), passed as `$GPUCTL_SECRETS_DIR`, and
//! removed when the task ends or the daemon starts again.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::runtime::TaskKey;

/// The folder of one task's secret files.
pub fn task_dir(root: &Path, key: &TaskKey) -> PathBuf {
    root.join(format!("{}-{}-{}", key.job, key.task_index, key.attempt))
}

/// A relative path the scheduler sent (`dir/key`), checked again here: two
/// plain components, neither `.` nor `..`.
fn checked(rel: &str) -> Result<&str, String> {
    let ok = rel.split('/').count() == 2
        && rel.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        });
    if ok {
        Ok(rel)
    } else {
        Err(format!("refusing secret file path {rel:?}"))
    }
}

/// Write `files` for `key`; `owner` (uid, gid) owns them when given. Returns
/// the folder (`$GPUCTL_SECRETS_DIR`).
pub fn write(
    root: &Path,
    key: &TaskKey,
    files: &BTreeMap<String, Vec<u8>>,
    owner: Option<(u32, u32)>,
) -> Result<PathBuf, String> {
    let dir = task_dir(root, key);
    let _ = std::fs::remove_dir_all(&dir);
    let mkdir = |d: &Path| -> Result<(), String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(d)
            .map_err(|e| format!("creating {}: {e}", d.display()))?;
        chown(d, owner)
    };
    std::fs::create_dir_all(root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    mkdir(&dir)?;
    for (rel, content) in files {
        let path = dir.join(checked(rel)?);
        if let Some(parent) = path.parent() {
            mkdir(parent)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o400)
            .open(&path)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        f.write_all(content)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        chown(&path, owner)?;
    }
    Ok(dir)
}

fn chown(p: &Path, owner: Option<(u32, u32)>) -> Result<(), String> {
    match owner {
        Some((uid, gid)) => std::os::unix::fs::chown(p, Some(uid), Some(gid))
            .map_err(|e| format!("giving {} to uid {uid}: {e}", p.display())),
        None => Ok(()),
    }
}

/// Remove one task's secret files (gone already is fine).
pub fn remove(root: &Path, key: &TaskKey) {
    let _ = std::fs::remove_dir_all(task_dir(root, key));
}

/// Remove every task's secret files (at start: no task of an earlier run
/// of the daemon is kept).
pub fn remove_all(root: &Path) {
    let _ = std::fs::remove_dir_all(root);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key() -> TaskKey {
        TaskKey {
            job: "train".into(),
            task_index: 0,
            attempt: 1,
        }
    }

    #[test]
    fn files_are_written_owner_only_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let files = BTreeMap::from([("hf/token".to_string(), b"s3cret".to_vec())]);
        let dir = write(root.path(), &key(), &files, None).unwrap();
        let f = dir.join("hf/token");
        assert_eq!(std::fs::read(&f).unwrap(), b"s3cret");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&f), 0o400);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("hf")), 0o700);
        remove(root.path(), &key());
        assert!(!dir.exists());
    }

    #[test]
    fn paths_that_leave_the_folder_are_refused() {
        let root = tempfile::tempdir().unwrap();
        for bad in ["../x", "a/../../b", "/etc/passwd", "a", "a/b/c", "a/."] {
            let files = BTreeMap::from([(bad.to_string(), b"x".to_vec())]);
            let e = write(root.path(), &key(), &files, None).unwrap_err();
            assert!(e.contains("refusing"), "{bad}: {e}");
        }
    }
}
