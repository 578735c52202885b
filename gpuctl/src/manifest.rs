//! Turning what the user gave into objects, before anything is sent:
//! `apply -f` files and folders, and `submit` flags.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::path::Path;

use gpuctl_common::api::{
    parse_bytes, parse_manifests, Bytes, Cpu, FieldError, Job, JobSpec, Manifest, ManifestError,
    Resources, TaskSpec,
};

use crate::error::{Error, Result};

/// Source name of objects built from `gpuctl submit` flags.
pub const SUBMIT_SOURCE: &str = "<submit>";
/// Source name of objects read with `-f -`.
pub const STDIN_SOURCE: &str = "<stdin>";

/// Extensions `apply -f FOLDER` reads.
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// One parsed object and the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub source: String,
    pub manifest: Manifest,
}

/// Read and validate every `-f` argument: a file, a folder (its `*.yaml`,
/// `*.yml` and `*.json` files, sorted, not recursive) or `-` for `stdin`.
/// The first error stops everything, so nothing is sent when any file is bad.
pub fn load_manifests(paths: &[String], stdin: &mut dyn Read) -> Result<Vec<Loaded>> {
    let mut out = Vec::new();
    for (source, text) in read_sources(paths, stdin)? {
        for manifest in parse_manifests(&source, &text)? {
            out.push(Loaded {
                source: source.clone(),
                manifest,
            });
        }
    }
    Ok(out)
}

/// One object to apply: a gpuctl object, or an Argo workflow.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Manifest(Box<Loaded>),
    Workflow {
        source: String,
        workflow: Box<gpuctl_pipelines::Workflow>,
    },
    /// A WorkflowTemplate, ClusterWorkflowTemplate or CronWorkflow.
    Argo(Box<crate::argo_objects::ArgoObject>),
}

/// Like [`load_manifests`], also reading `kind: Workflow` files (one
/// workflow per file), validated with their file and field in errors.
pub fn load_objects(paths: &[String], stdin: &mut dyn Read) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    for (source, text) in read_sources(paths, stdin)? {
        if crate::argo_objects::is_argo_object_text(&text) {
            for o in crate::argo_objects::parse_file(&source, &text)? {
                out.push(Object::Argo(Box::new(o)));
            }
            continue;
        }
        if crate::workflows::is_workflow_text(&text) {
            let workflow = crate::workflows::parse_workflow_file(&source, &text)?;
            out.push(Object::Workflow {
                source,
                workflow: Box::new(workflow),
            });
            continue;
        }
        for manifest in parse_manifests(&source, &text)? {
            out.push(Object::Manifest(Box::new(Loaded {
                source: source.clone(),
                manifest,
            })));
        }
    }
    Ok(out)
}

/// The text of every `-f` argument, with its source name.
fn read_sources(paths: &[String], stdin: &mut dyn Read) -> Result<Vec<(String, String)>> {
    if paths.is_empty() {
        return Err(Error::Usage(
            "no manifests given: use -f FILE, -f FOLDER or -f - (stdin)".into(),
        ));
    }
    let mut files: Vec<(String, String)> = Vec::new();
    for p in paths {
        if p == "-" {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|e| Error::io("cannot read stdin", e))?;
            files.push((STDIN_SOURCE.to_string(), text));
            continue;
        }
        let path = Path::new(p);
        let meta = std::fs::metadata(path).map_err(|e| Error::io(format!("cannot read {p}"), e))?;
        if meta.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| Error::io(format!("cannot read folder {p}"), e))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|f| f.is_file() && has_manifest_extension(f))
                .collect();
            entries.sort();
            if entries.is_empty() {
                return Err(Error::Other(format!(
                    "{p}: no *.yaml, *.yml or *.json files in this folder"
                )));
            }
            for f in entries {
                let name = f.display().to_string();
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| Error::io(format!("cannot read {name}"), e))?;
                files.push((name, text));
            }
        } else {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("cannot read {p}"), e))?;
            files.push((p.clone(), text));
        }
    }
    // Before any YAML parser (also the workflow format's) sees them.
    for (name, text) in &files {
        gpuctl_common::manifest::check_nesting(name, text)?;
    }
    Ok(files)
}

fn has_manifest_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The `gpuctl submit` flags, as plain values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubmitArgs {
    pub name: Option<String>,
    pub gpus: f64,
    pub replicas: u32,
    pub queue: Option<String>,
    pub gpu_model: Option<String>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub env: Vec<String>,
    pub max_retries: u32,
    pub timeout_seconds: Option<u64>,
    pub ttl_seconds_after_finished: Option<u64>,
    pub workdir: Option<String>,
    pub command: Vec<String>,
    /// Higher runs first within the queue and may preempt lower.
    pub priority: i32,
}

/// Build and validate the job `gpuctl submit` sends: one task group `main`.
/// Errors read `<submit>: --flag: reason`.
pub fn build_submit_job(args: &SubmitArgs, default_name: impl FnOnce() -> String) -> Result<Job> {
    if args.command.is_empty() {
        return Err(Error::Usage(
            "missing command: give it after --, e.g. gpuctl submit --gpus 1 -- python train.py"
                .into(),
        ));
    }
    let flag_err = |flag: &str, reason: String| -> Error {
        FieldError::new(flag, reason)
            .in_source(SUBMIT_SOURCE, 0)
            .into()
    };
    let mut env = BTreeMap::new();
    for kv in &args.env {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                env.insert(k.to_string(), v.to_string());
            }
            _ => return Err(flag_err("--env", format!("expected KEY=VALUE, got {kv:?}"))),
        }
    }
    let cpu = match &args.cpu {
        None => None,
        Some(c) => Some(
            serde_json::from_value::<Cpu>(serde_json::Value::String(c.clone()))
                .map_err(|e| flag_err("--cpu", e.to_string()))?,
        ),
    };
    let memory = match &args.memory {
        None => None,
        Some(m) => Some(Bytes(parse_bytes(m).map_err(|e| flag_err("--memory", e))?)),
    };
    let name = args.name.clone().unwrap_or_else(default_name);
    let mut job = Job::new(
        &name,
        JobSpec {
            tasks: vec![TaskSpec {
                name: "main".into(),
                replicas: args.replicas,
                command: args.command.clone(),
                env,
                env_from: Vec::new(),
                secret_files: Vec::new(),
                working_dir: args.workdir.clone(),
                resources: Resources {
                    gpus: args.gpus,
                    gpu_model: args.gpu_model.clone(),
                    gpu_memory: None,
                    cpu,
                    memory,
                },
                image: None,
            }],
            min_available: None,
            priority: args.priority,
            topology: Default::default(),
            max_retries: args.max_retries,
            timeout_seconds: args.timeout_seconds,
            ttl_seconds_after_finished: args.ttl_seconds_after_finished,
        },
    );
    job.metadata.queue = args.queue.clone();
    job.validate().map_err(|e| -> Error {
        ManifestError {
            source_name: SUBMIT_SOURCE.into(),
            document: 0,
            path: flag_for_path(&e.path).unwrap_or(&e.path).to_string(),
            reason: e.reason,
        }
        .into()
    })?;
    Ok(job)
}

/// The `submit` flag that sets a job field, for error messages.
fn flag_for_path(path: &str) -> Option<&'static str> {
    Some(match path {
        "metadata.name" => "--name",
        "metadata.queue" => "--queue",
        "spec.tasks" | "spec.tasks[0].replicas" | "spec.minAvailable" => "--replicas",
        "spec.tasks[0].command" => "-- CMD",
        "spec.tasks[0].env" => "--env",
        "spec.tasks[0].workingDir" => "--workdir",
        "spec.tasks[0].resources.gpus" => "--gpus",
        "spec.tasks[0].resources.gpuModel" => "--gpu-model",
        "spec.tasks[0].resources.cpu" => "--cpu",
        "spec.tasks[0].resources.memory" => "--memory",
        "spec.maxRetries" => "--max-retries",
        "spec.timeoutSeconds" => "--timeout-seconds",
        _ => return None,
    })
}

/// `job-` and six random lowercase letters/digits.
pub fn random_job_name() -> String {
    // RandomState is seeded from the OS; mixing in the time and pid keeps two
    // submits in the same process apart too.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    let mut n = h.finish();
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = String::from("job-");
    for _ in 0..6 {
        s.push(ALPHABET[(n % 36) as usize] as char);
        n /= 36;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "apiVersion: gpuctl.io/v1\nkind: Job\nmetadata: {name: NAME}\nspec:\n  tasks:\n    - command: [echo, hi]\n      resources: {gpus: 1}\n";

    fn args(cmd: &[&str]) -> SubmitArgs {
        SubmitArgs {
            replicas: 1,
            command: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn folder_reads_only_manifest_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yaml"), JOB.replace("NAME", "bee")).unwrap();
        std::fs::write(dir.path().join("a.yml"), JOB.replace("NAME", "ay")).unwrap();
        let json = serde_json::to_string(
            &serde_yaml_ng::from_str::<serde_json::Value>(&JOB.replace("NAME", "jay")).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("c.json"), json).unwrap();
        std::fs::write(dir.path().join("README.md"), "not yaml: [").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "junk").unwrap();
        std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
        let p = dir.path().display().to_string();
        let got = load_manifests(&[p], &mut std::io::empty()).unwrap();
        let names: Vec<_> = got.iter().map(|l| l.manifest.name().to_string()).collect();
        assert_eq!(names, ["ay", "bee", "jay"]);
        assert!(got[0].source.ends_with("a.yml"), "{}", got[0].source);
    }

    #[test]
    fn folder_error_names_the_failing_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), JOB.replace("NAME", "good")).unwrap();
        std::fs::write(
            dir.path().join("bad.yaml"),
            JOB.replace("NAME", "bad").replace("gpus: 1", "gpus: -1"),
        )
        .unwrap();
        let p = dir.path().display().to_string();
        let e = load_manifests(&[p], &mut std::io::empty()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("bad.yaml"), "{msg}");
        assert!(msg.contains("spec.tasks[0].resources.gpus"), "{msg}");
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn empty_folder_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.txt"), "x").unwrap();
        let e =
            load_manifests(&[dir.path().display().to_string()], &mut std::io::empty()).unwrap_err();
        assert!(e.to_string().contains("no *.yaml"), "{e}");

        let mut stdin = JOB.replace("NAME", "from-stdin");
        stdin.push_str("---\n");
        stdin.push_str(&JOB.replace("NAME", "second"));
        let got = load_manifests(&["-".into()], &mut stdin.as_bytes()).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].source, STDIN_SOURCE);
        assert_eq!(got[1].manifest.name(), "second");

        let e = load_manifests(&["/nonexistent/x.yaml".into()], &mut std::io::empty()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.yaml"), "{e}");
    }

    #[test]
    fn submit_builds_one_main_group() {
        let a = SubmitArgs {
            name: Some("train".into()),
            gpus: 0.5,
            replicas: 4,
            queue: Some("research".into()),
            gpu_model: Some("A100|H100".into()),
            cpu: Some("500m".into()),
            memory: Some("16Gi".into()),
            env: vec!["A=1".into(), "B=x=y".into()],
            max_retries: 2,
            timeout_seconds: Some(600),
            ttl_seconds_after_finished: Some(3600),
            workdir: Some("/tmp".into()),
            command: vec!["python".into(), "train.py".into()],
            priority: 7,
        };
        let j = build_submit_job(&a, || unreachable!()).unwrap();
        assert_eq!(j.metadata.name, "train");
        assert_eq!(j.metadata.queue.as_deref(), Some("research"));
        assert_eq!(j.spec.tasks.len(), 1);
        let t = &j.spec.tasks[0];
        assert_eq!(t.name, "main");
        assert_eq!(t.replicas, 4);
        assert_eq!(t.command, ["python", "train.py"]);
        assert_eq!(t.env.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(t.working_dir.as_deref(), Some("/tmp"));
        assert_eq!(t.resources.gpu_milli(), 500);
        assert_eq!(t.resources.cpu, Some(Cpu(500)));
        assert_eq!(t.resources.memory, Some(Bytes(16 << 30)));
        assert_eq!(j.spec.max_retries, 2);
        assert_eq!(j.spec.timeout_seconds, Some(600));
        assert_eq!(j.spec.ttl_seconds_after_finished, Some(3600));
        assert_eq!(j.spec.priority, 7);
        // What goes over the wire parses back the same on the server.
        let json = serde_json::to_string(&j).unwrap();
        let back = gpuctl_common::api::parse_manifest_json(SUBMIT_SOURCE, &json).unwrap();
        assert_eq!(back, Manifest::Job(j));
    }

    #[test]
    fn submit_default_name() {
        let j = build_submit_job(&args(&["true"]), random_job_name).unwrap();
        assert!(j.metadata.name.starts_with("job-"), "{}", j.metadata.name);
        assert_eq!(j.metadata.name.len(), 10);
        assert_ne!(random_job_name(), random_job_name());
    }

    #[test]
    fn submit_errors_name_the_flag() {
        let cases: Vec<(SubmitArgs, &str)> = vec![
            (
                SubmitArgs {
                    gpus: 1.5,
                    ..args(&["x"])
                },
                "<submit>: --gpus: ",
            ),
            (
                SubmitArgs {
                    gpus: 1000.0,
                    ..args(&["x"])
                },
                "<submit>: --gpus: ",
            ),
            (
                SubmitArgs {
                    replicas: 0,
                    ..args(&["x"])
                },
                "<submit>: --replicas: ",
            ),
            (
                SubmitArgs {
                    name: Some("Bad_Name".into()),
                    ..args(&["x"])
                },
                "<submit>: --name: ",
            ),
            (
                SubmitArgs {
                    queue: Some("Q!".into()),
                    ..args(&["x"])
                },
                "<submit>: --queue: ",
            ),
            (
                SubmitArgs {
                    cpu: Some("lots".into()),
                    ..args(&["x"])
                },
                "<submit>: --cpu: ",
            ),
            (
                SubmitArgs {
                    memory: Some("16Qi".into()),
                    ..args(&["x"])
                },
                "<submit>: --memory: ",
            ),
            (
                SubmitArgs {
                    env: vec!["NOEQ".into()],
                    ..args(&["x"])
                },
                "<submit>: --env: ",
            ),
            (
                SubmitArgs {
                    max_retries: 1000,
                    ..args(&["x"])
                },
                "<submit>: --max-retries: ",
            ),
            (
                SubmitArgs {
                    timeout_seconds: Some(0),
                    ..args(&["x"])
                },
                "<submit>: --timeout-seconds: ",
            ),
            (
                SubmitArgs {
                    gpu_model: Some("A100|".into()),
                    ..args(&["x"])
                },
                "<submit>: --gpu-model: ",
            ),
            (args(&[""]), "<submit>: -- CMD: "),
        ];
        for (a, want) in cases {
            let e = build_submit_job(&a, || "n".into()).unwrap_err();
            assert!(e.to_string().starts_with(want), "{a:?}: {e}");
            assert_eq!(e.exit_code(), 1);
        }
        let e = build_submit_job(&args(&[]), || "n".into()).unwrap_err();
        assert!(e.to_string().contains("after --"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
}
