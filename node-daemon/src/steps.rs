//! Workflow steps' files: before a step starts, its script is written and
//! its input artifacts are placed; after it exits, its output parameters,
//! its standard output (`outputs.result`) and its output artifacts are
//! collected and reported with the exit.
//!
//! ```text
//!  <steps-dir>/<job>-<attempt>/       the step's folder (its working
//!      script                          directory unless it names one)
//!      stdout                          a script's standard output
//!  <artifact-dir>/<workflow>/<step>/<name>   the artifact store
//! ```
//!
//! Relative paths in the workflow (`valueFrom.path`, artifact `path`) are
//! relative to the step's folder, so parallel steps do not collide. The
//! folder is removed once the step's outputs are collected (a stopped step's
//! is left).
//!
//! A step with its own `/tmp` ([`crate::isolation::private_tmp`]) has its
//! `/tmp/...` inputs placed in, and its outputs read from, that folder: two
//! parallel steps that both write `/tmp/out` each report their own.
//!
//! A step with an owner gets its folder, script and inputs as that user's
//! (inputs outside its folder are written with the user's rights), and its
//! outputs are read back only from files that user owns.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use gpuctl_common::artifact::{ArtifactError, ArtifactKey, ArtifactStore};
use gpuctl_proto::v1::{ArtifactRef, StepIo, StepOutputs};

use crate::isolation::PrivateTmp;
use crate::owner::{self, RunAs};

/// Most bytes of standard output kept as `outputs.result` (the last ones).
pub const MAX_RESULT_BYTES: u64 = 256 * 1024;
/// Most bytes of an output parameter file.
pub const MAX_PARAMETER_BYTES: u64 = 256 * 1024;

/// An [`ArtifactStore`] in a folder: one file per artifact under
/// `<root>/<workflow>/<step>/<name>`. Every node of a single-machine
/// cluster points at the same folder.
#[derive(Debug, Clone)]
pub struct FsArtifactStore {
    root: PathBuf,
}

/// One path component from any string: `/`, `%` and a leading `.` are
/// escaped so a name cannot leave its folder.
fn component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        match c {
            '/' => out.push_str("%2F"),
            '%' => out.push_str("%25"),
            '\0' => out.push_str("%00"),
            '.' if i == 0 => out.push_str("%2E"),
            c => out.push(c),
        }
    }
    if out.is_empty() {
        out.push_str("%25");
    }
    out
}

/// The string [`component`] made `c` from, if `c` is one it makes.
fn from_component(c: &str) -> Option<String> {
    let mut out = String::with_capacity(c.len());
    let mut rest = c;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let (ch, n) = match rest.get(i..i + 3)? {
            "%2F" => ('/', 3),
            "%25" => ('%', 3),
            "%00" => ('\0', 3),
            "%2E" if i == 0 && out.is_empty() => ('.', 3),
            _ => return None,
        };
        out.push(ch);
        rest = &rest[i + n..];
    }
    out.push_str(rest);
    // Only names `component` gives back (a stray folder is left alone).
    (component(&out) == c).then_some(out)
}

impl FsArtifactStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsArtifactStore { root: root.into() }
    }

    /// The workflows with artifacts here whose folder has not changed for
    /// `quiet` (a folder changes when a step stores its first artifact).
    pub fn workflows_quiet_for(&self, quiet: std::time::Duration) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let now = std::time::SystemTime::now();
        let mut out: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= quiet)
            })
            .filter_map(|e| from_component(e.file_name().to_str()?))
            .collect();
        out.sort();
        out
    }

    fn path(&self, key: &ArtifactKey) -> PathBuf {
        self.root
            .join(component(&key.workflow))
            .join(component(&key.step))
            .join(component(&key.name))
    }

    fn io(key: &ArtifactKey, what: &str, e: std::io::Error) -> ArtifactError {
        ArtifactError::Io(format!(
            "{what} artifact {:?} of step {:?}: {e}",
            key.name, key.step
        ))
    }

    /// Copy an open file into the store (no reading into memory).
    pub fn put_file(&self, key: &ArtifactKey, from: &mut File) -> Result<(), ArtifactError> {
        let to = self.path(key);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Self::io(key, "storing", e))?;
        }
        let tmp = to.with_extension("partial");
        private_file(&tmp)
            .and_then(|mut out| std::io::copy(from, &mut out))
            .map_err(|e| Self::io(key, "storing", e))?;
        std::fs::rename(&tmp, &to).map_err(|e| Self::io(key, "storing", e))
    }

    /// A stored artifact, open for reading.
    pub fn open(&self, key: &ArtifactKey) -> Result<File, ArtifactError> {
        File::open(self.path(key)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ArtifactError::NotFound {
                workflow: key.workflow.clone(),
                step: key.step.clone(),
                name: key.name.clone(),
            },
            _ => Self::io(key, "reading", e),
        })
    }

    /// Copy a stored artifact to a file.
    pub fn get_file(&self, key: &ArtifactKey, to: &Path) -> Result<(), ArtifactError> {
        let from = self.path(key);
        if !from.is_file() {
            return Err(ArtifactError::NotFound {
                workflow: key.workflow.clone(),
                step: key.step.clone(),
                name: key.name.clone(),
            });
        }
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Self::io(key, "placing", e))?;
        }
        std::fs::copy(&from, to)
            .map(|_| ())
            .map_err(|e| Self::io(key, "placing", e))
    }
}

impl ArtifactStore for FsArtifactStore {
    fn put(&mut self, key: &ArtifactKey, data: Vec<u8>) -> Result<(), ArtifactError> {
        let to = self.path(key);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Self::io(key, "storing", e))?;
        }
        private_file(&to)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &data))
            .map_err(|e| Self::io(key, "storing", e))
    }
    fn get(&self, key: &ArtifactKey) -> Result<Vec<u8>, ArtifactError> {
        std::fs::read(self.path(key)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ArtifactError::NotFound {
                workflow: key.workflow.clone(),
                step: key.step.clone(),
                name: key.name.clone(),
            },
            _ => Self::io(key, "reading", e),
        })
    }
    fn contains(&self, key: &ArtifactKey) -> bool {
        self.path(key).is_file()
    }
    fn delete_workflow(&mut self, workflow: &str) -> Result<(), ArtifactError> {
        match std::fs::remove_dir_all(self.root.join(component(workflow))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ArtifactError::Io(format!(
                "deleting the artifacts of workflow {workflow:?}: {e}"
            ))),
            _ => Ok(()),
        }
    }
}

/// A new (or emptied) file only the daemon's user can read: stored
/// artifacts reach a task through the daemon, never by the task's rights.
fn private_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

fn key_of(a: &ArtifactRef) -> ArtifactKey {
    ArtifactKey {
        workflow: a.store_workflow.clone(),
        step: a.store_step.clone(),
        name: a.store_name.clone(),
    }
}

/// A path of the workflow, relative to the step's working directory.
fn resolve(cwd: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// A step ready to start: its command (with the script inserted), working
/// directory and where its standard output goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub command: Vec<String>,
    pub working_dir: PathBuf,
    /// `Some` for a step whose standard output is its result.
    pub stdout: Option<PathBuf>,
    /// The step's own `/tmp`, where its `/tmp/...` paths are on the host.
    pub tmp: Option<PrivateTmp>,
}

impl Prepared {
    /// Where a path of the workflow (relative to the step's working
    /// directory, or under its own `/tmp`) is on the host.
    fn host_path(&self, p: &str) -> PathBuf {
        host_path(&self.working_dir, self.tmp.as_ref(), p)
    }
}

fn host_path(cwd: &Path, tmp: Option<&PrivateTmp>, p: &str) -> PathBuf {
    let path = resolve(cwd, p);
    match tmp {
        Some(t) => t.host_path(&path),
        None => path,
    }
}

/// Where a step's files go on the host.
#[derive(Debug, Clone, Copy)]
pub struct StepFiles<'a> {
    /// The step's folder (script, standard output, relative paths).
    pub dir: &'a Path,
    /// The step's own `/tmp`, made here when inputs go there.
    pub tmp: Option<&'a PrivateTmp>,
}

/// Whether `path` is inside `dir` without leaving it through `..`.
fn inside(dir: &Path, path: &Path) -> bool {
    path.starts_with(dir) && !path.components().any(|c| c == Component::ParentDir)
}

/// Create the step's folder, write its script, place its input artifacts;
/// with `run_as`, all of it becomes that user's.
pub fn prepare(
    files: &StepFiles<'_>,
    io: &StepIo,
    command: &[String],
    working_dir: &str,
    store: &FsArtifactStore,
    run_as: Option<&RunAs>,
) -> Result<Prepared, String> {
    let dir = files.dir;
    // A fresh folder: a retried attempt runs on a new job, but be safe.
    let _ = std::fs::remove_dir_all(dir);
    if let Some(t) = files.tmp {
        t.create(run_as)?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating the step folder {dir:?}: {e}"))?;
    let cwd = if working_dir.is_empty() {
        dir.to_path_buf()
    } else {
        PathBuf::from(working_dir)
    };
    let mut command = command.to_vec();
    if io.has_script {
        let script = dir.join("script");
        std::fs::write(&script, &io.script_source)
            .map_err(|e| format!("writing the script to {script:?}: {e}"))?;
        // Executable, as Argo leaves it: `command: [sh, -c]` runs the
        // script file as a command.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("making the script {script:?} executable: {e}"))?;
        }
        let at = (io.script_arg_index as usize).min(command.len());
        command.insert(at, script.display().to_string());
    }
    for a in &io.input_artifacts {
        if a.path.is_empty() {
            continue;
        }
        let to = host_path(&cwd, files.tmp, &a.path);
        if let Some(raw) = &a.raw {
            place_raw(dir, &to, raw, run_as).map_err(|e| {
                format!(
                    "input artifact {:?} (raw) could not be written at {}: {e}",
                    a.name, a.path
                )
            })?;
            continue;
        }
        let placed = match run_as.filter(|r| r.switch && !inside(dir, &to)) {
            // Outside the step's folder: written with the user's rights.
            Some(r) => store
                .open(&key_of(a))
                .map_err(|e| e.to_string())
                .and_then(|from| owner::copy_as(r, from, &to)),
            None => store.get_file(&key_of(a), &to).map_err(|e| e.to_string()),
        };
        placed.map_err(|e| {
            format!(
                "input artifact {:?} could not be placed at {}: {e}",
                a.name, a.path
            )
        })?;
    }
    if let Some(r) = run_as {
        owner::own_tree(dir, r)
            .map_err(|e| format!("giving the step folder {dir:?} to uid {}: {e}", r.uid))?;
    }
    Ok(Prepared {
        command,
        working_dir: cwd,
        stdout: io.capture_result.then(|| dir.join("stdout")),
        tmp: files.tmp.cloned(),
    })
}

/// The last `limit` bytes of a file (plus one, so that a final newline,
/// which the run trims, does not cost a byte of output): Argo keeps the end
/// of a long standard output as `outputs.result`.
fn read_tail(path: &Path, limit: u64, uid: Option<u32>) -> std::io::Result<String> {
    use std::io::{Seek, SeekFrom};
    let mut f = owner::open_owned(path, uid)?;
    let len = f.metadata()?.len();
    let keep = limit + 1;
    if len > keep {
        f.seek(SeekFrom::Start(len - keep))?;
    }
    let mut buf = Vec::new();
    f.take(keep).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn read_bounded(path: &Path, limit: u64, uid: Option<u32>) -> std::io::Result<String> {
    let f = owner::open_owned(path, uid)?;
    let mut buf = Vec::new();
    f.take(limit).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// After the step exited: read its outputs and store its artifacts. Only a
/// step that succeeded has outputs collected (its result is kept always).
/// With `uid` (a step run as its owner), only files that uid owns are read.
pub fn collect(
    prepared: &Prepared,
    io: &StepIo,
    succeeded: bool,
    store: &FsArtifactStore,
    uid: Option<u32>,
) -> StepOutputs {
    let mut out = StepOutputs::default();
    if let Some(p) = &prepared.stdout {
        if let Ok(s) = read_tail(p, MAX_RESULT_BYTES, uid) {
            out.has_result = true;
            out.result = s;
        }
    }
    if !succeeded {
        return out;
    }
    for p in &io.output_parameters {
        // A missing file is left out: the run then names the parameter and
        // its path in the step's error (or uses the declared default).
        if let Ok(v) = read_bounded(&prepared.host_path(&p.path), MAX_PARAMETER_BYTES, uid) {
            out.parameters
                .insert(p.name.clone(), v.trim_end_matches('\n').to_string());
        }
    }
    for a in &io.output_artifacts {
        let from = prepared.host_path(&a.path);
        if from.is_dir() {
            out.error = format!(
                "output artifact {:?}: {} is a folder; only files are supported",
                a.name, a.path
            );
            break;
        }
        if !from.is_file() {
            continue; // the run reports it missing unless it is optional
        }
        let stored = owner::open_owned(&from, uid)
            .map_err(|e| format!("reading {}: {e}", a.path))
            .and_then(|mut f| {
                store
                    .put_file(&key_of(a), &mut f)
                    .map_err(|e| e.to_string())
            });
        match stored {
            Ok(()) => out.artifacts.push(a.name.clone()),
            Err(e) => {
                out.error = format!("output artifact {:?}: {e}", a.name);
                break;
            }
        }
    }
    out
}

/// Append a script's standard output to the task log, so `gpuctl logs`
/// shows it (with `uid`, only a file that uid owns).
pub fn append_to_log(stdout: &Path, log: &Path, uid: Option<u32>) {
    use std::io::Write;
    let Ok(mut from) = owner::open_owned(stdout, uid) else {
        return;
    };
    if let Ok(mut to) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
    {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.flush();
    }
}

/// A `raw` input artifact's content written at `to`: directly inside the
/// step's folder (given to the step's user with the folder), with the
/// user's rights elsewhere.
fn place_raw(dir: &Path, to: &Path, raw: &str, run_as: Option<&RunAs>) -> Result<(), String> {
    match run_as.filter(|r| r.switch && !inside(dir, to)) {
        Some(r) => {
            let staged = dir.join(".raw-artifact");
            std::fs::write(&staged, raw).map_err(|e| e.to_string())?;
            let file = std::fs::File::open(&staged).map_err(|e| e.to_string())?;
            let placed = owner::copy_as(r, file, to);
            let _ = std::fs::remove_file(&staged);
            placed
        }
        None => {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(to, raw).map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> StepFiles<'_> {
        StepFiles { dir, tmp: None }
    }

    #[test]
    fn tmp_paths_are_in_the_steps_own_tmp() {
        let root = tempfile::tempdir().unwrap();
        let store = FsArtifactStore::new(root.path().join("store"));
        let own = PrivateTmp {
            dir: root.path().join("tmp/s-0-1"),
            keep: Vec::new(),
        };
        let io = StepIo {
            workflow: "wf".into(),
            step: "wf.a".into(),
            output_parameters: vec![gpuctl_proto::v1::OutputParameter {
                name: "p".into(),
                path: "/tmp/out".into(),
            }],
            input_artifacts: vec![aref("model", "/tmp/in/m.bin", "wf.a")],
            output_artifacts: vec![aref("log", "/tmp/log.txt", "wf.b")],
            ..Default::default()
        };
        let mut put = store.clone();
        let key = key_of(&io.input_artifacts[0]);
        put.put(&key, b"weights".to_vec()).unwrap();
        let dir = root.path().join("s-1");
        let step = StepFiles {
            dir: &dir,
            tmp: Some(&own),
        };
        let p = prepare(&step, &io, &["true".to_string()], "", &store, None).unwrap();
        // The input is where the step sees /tmp/in/m.bin.
        assert_eq!(
            std::fs::read_to_string(own.dir.join("in/m.bin")).unwrap(),
            "weights"
        );
        // What the step wrote to /tmp/out and /tmp/log.txt is read from its folder.
        std::fs::write(own.dir.join("out"), "mine\n").unwrap();
        std::fs::write(own.dir.join("log.txt"), "lines").unwrap();
        let o = collect(&p, &io, true, &store, None);
        assert_eq!(o.parameters["p"], "mine");
        assert_eq!(o.artifacts, ["log"]);
        assert_eq!(
            store.get(&key_of(&io.output_artifacts[0])).unwrap(),
            b"lines"
        );
    }

    #[test]
    fn workflow_folders_name_their_workflows() {
        for name in ["train", "a/b", "%x", ".hidden", "a.b", "x%2Fy", "\0"] {
            assert_eq!(from_component(&component(name)).as_deref(), Some(name));
        }
        for stray in ["%zz", "a%2", "b%2E", "%2"] {
            assert_eq!(from_component(stray), None, "{stray}");
        }
    }

    #[test]
    fn quiet_workflow_folders_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FsArtifactStore::new(dir.path());
        for wf in ["b", "a/x"] {
            let key = ArtifactKey {
                workflow: wf.into(),
                step: "s".into(),
                name: "n".into(),
            };
            store.put(&key, b"1".to_vec()).unwrap();
        }
        std::fs::write(dir.path().join("not-a-folder"), b"").unwrap();
        std::fs::create_dir(dir.path().join("%zz")).unwrap();
        let zero = std::time::Duration::ZERO;
        assert_eq!(store.workflows_quiet_for(zero), vec!["a/x", "b"]);
        let hour = std::time::Duration::from_secs(3600);
        assert!(store.workflows_quiet_for(hour).is_empty());
        store.delete_workflow("a/x").unwrap();
        assert_eq!(store.workflows_quiet_for(zero), vec!["b"]);
        let gone = FsArtifactStore::new(dir.path().join("missing"));
        assert!(gone.workflows_quiet_for(zero).is_empty());
    }

    fn aref(name: &str, path: &str, step: &str) -> ArtifactRef {
        ArtifactRef {
            name: name.into(),
            path: path.into(),
            optional: false,
            store_workflow: "wf".into(),
            store_step: step.into(),
            store_name: name.into(),
            raw: None,
        }
    }

    #[test]
    fn a_raw_input_artifact_is_written_at_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FsArtifactStore::new(tmp.path().join("store"));
        let io = StepIo {
            input_artifacts: vec![ArtifactRef {
                raw: Some("this is\nthe raw file\ncontents\n".into()),
                // Nothing is stored under its key.
                ..aref("myfile", "in/file", "wf.a")
            }],
            ..Default::default()
        };
        let dir = tmp.path().join("a-1");
        let cmd = vec!["cat".to_string()];
        prepare(&files(&dir), &io, &cmd, "", &store, None).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("in/file")).unwrap(),
            "this is\nthe raw file\ncontents\n"
        );
    }

    #[test]
    fn script_outputs_and_artifacts_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FsArtifactStore::new(tmp.path().join("store"));
        let io = StepIo {
            workflow: "wf".into(),
            step: "wf.a".into(),
            has_script: true,
            script_source: "echo hi".into(),
            script_arg_index: 1,
            capture_result: true,
            output_parameters: vec![gpuctl_proto::v1::OutputParameter {
                name: "p".into(),
                path: "out/p.txt".into(),
            }],
            input_artifacts: vec![],
            output_artifacts: vec![aref("model", "model.bin", "wf.a")],
        };
        let dir = tmp.path().join("a-1");
        let cmd = vec!["sh".to_string(), "-x".to_string()];
        let p = prepare(&files(&dir), &io, &cmd, "", &store, None).unwrap();
        assert_eq!(p.command[0], "sh");
        assert!(p.command[1].ends_with("/script"));
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p.command[1])
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o111, 0o111, "the script is executable");
        }
        assert_eq!(p.command[2], "-x");
        std::fs::create_dir_all(dir.join("out")).unwrap();
        std::fs::write(dir.join("out/p.txt"), "42\n").unwrap();
        std::fs::write(dir.join("model.bin"), "weights").unwrap();
        std::fs::write(dir.join("stdout"), "hello\n").unwrap();
        let o = collect(&p, &io, true, &store, None);
        assert_eq!(o.parameters["p"], "42");
        assert_eq!(o.result, "hello\n");
        assert_eq!(o.artifacts, ["model"]);
        // A long output keeps its end, as Argo does.
        let long = format!("{}END\n", "x".repeat(MAX_RESULT_BYTES as usize + 100));
        std::fs::write(dir.join("stdout"), &long).unwrap();
        let o = collect(&p, &io, false, &store, None);
        assert_eq!(o.result.len(), MAX_RESULT_BYTES as usize + 1);
        assert!(o.result.ends_with("xEND\n"));
        // A later step gets the artifact placed at its own path.
        let io2 = StepIo {
            input_artifacts: vec![aref("model", "in/m.bin", "wf.a")],
            ..Default::default()
        };
        let dir2 = tmp.path().join("b-1");
        prepare(&files(&dir2), &io2, &cmd, "", &store, None).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir2.join("in/m.bin")).unwrap(),
            "weights"
        );
        // A missing input artifact is a clear error.
        let io3 = StepIo {
            input_artifacts: vec![aref("nope", "x", "wf.zz")],
            ..Default::default()
        };
        let c = tmp.path().join("c-1");
        let e = prepare(&files(&c), &io3, &cmd, "", &store, None).unwrap_err();
        assert!(e.contains("input artifact \"nope\""), "{e}");
    }

    #[test]
    fn store_keys_cannot_escape_the_root() {
        assert_eq!(component("../x"), "%2E.%2Fx");
        assert_eq!(component("a(0:b/c)"), "a(0:b%2Fc)");
    }
}
