//! Every example a new user is shown must run on the default `gpuctl dev`
//! of a small machine: one node with 8 simulated A100-80GB GPUs, the host's
//! CPUs (2 here) and its memory (4 GiB here). The objects in `examples/` and
//! in README.md's YAML blocks, the README's `gpuctl submit` lines and the
//! `--example` job go through the same parsing as `gpuctl apply`/`submit`
//! and the scheduler's own "could this ever run?" check, and the whole job
//! must fit the one node at once (a gang needs all its tasks together).
//!
//! Cheap: no processes, no network.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use gpuctl::manifest::{self, Loaded, Object};
use gpuctl_common::api::{Job, Manifest, Node, Resources};

/// The host `gpuctl dev` reports when nothing says otherwise.
const DEV_CPU_MILLI: u64 = 2_000;
const DEV_MEMORY: u64 = 4 << 30;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("gpuctl/ is inside the workspace")
        .to_path_buf()
}

/// The node `gpuctl dev` registers by default (`--gpus 8xA100-80GB`).
fn dev_node() -> Node {
    let (count, model) = gpuctl::dev::DEFAULT_GPUS
        .split_once('x')
        .expect("COUNTxMODEL");
    gpuctl_testkit::node("dev-node-1")
        .uuid_prefix("GPU-dev")
        .gpus(count.parse().unwrap(), model)
        .nvlink("nvl0")
        .cpu_milli(DEV_CPU_MILLI)
        .memory_bytes(DEV_MEMORY)
        .build()
}

/// Why `job` would be refused or never start on the dev node; `None` when
/// it runs.
fn why_not(node: &Node, job: &Job) -> Option<String> {
    if let Some(why) = gpuctl_scheduler::placement::infeasible([node], job) {
        return Some(why);
    }
    let tasks = &job.spec.tasks;
    let sum = |f: &dyn Fn(&Resources) -> u64| -> u64 {
        tasks
            .iter()
            .map(|t| u64::from(t.replicas) * f(&t.resources))
            .sum()
    };
    let cpu = sum(&|r| r.cpu.map_or(0, |c| c.0));
    let memory = sum(&|r| r.memory.map_or(0, |m| m.0));
    let gpu_milli = sum(&|r| r.gpu_milli());
    let s = &node.status;
    if cpu > s.cpu_milli || memory > s.memory_bytes || gpu_milli > s.gpus.len() as u64 * 1000 {
        return Some(format!(
            "all its tasks together ask for {cpu}m CPU, {memory} bytes and {gpu_milli} GPU \
             thousandths; the dev node has {}m, {} bytes and {} GPUs",
            s.cpu_milli,
            s.memory_bytes,
            s.gpus.len()
        ));
    }
    None
}

/// A one-task job with a workflow leaf's resources, as the scheduler checks
/// a workflow at submit and later runs each step.
fn step_job(r: &gpuctl_pipelines::spec::ResourceRequirements) -> Job {
    let step = gpuctl_pipelines::step_resources(r).expect("valid resources");
    let resources = Resources {
        gpus: step.gpus,
        cpu: step.cpu,
        memory: step.memory,
        ..Default::default()
    };
    gpuctl_testkit::job("step")
        .with_resources(resources)
        .build()
}

/// Every problem with the objects of one file or block, as `SOURCE: why`.
fn check_objects(node: &Node, objects: Vec<Object>, model_files_exist: bool) -> Vec<String> {
    let mut problems = Vec::new();
    for o in objects {
        match o {
            Object::Manifest(l) => {
                let mut l = [*l];
                gpuctl::endpoints::resolve_model_paths(&mut l, &repo_root());
                let [Loaded { source, manifest }] = l;
                match manifest {
                    Manifest::Job(job) => {
                        if let Some(why) = why_not(node, &job) {
                            problems.push(format!("{source}: job {}: {why}", job.metadata.name));
                        }
                    }
                    Manifest::Endpoint(ep) => {
                        let replica = gpuctl_scheduler::endpoints::replica_job(&ep, "replica-0");
                        if let Some(why) = why_not(node, &replica) {
                            problems.push(format!(
                                "{source}: endpoint {}: a replica: {why}",
                                ep.metadata.name
                            ));
                        }
                        if let Some(m) = ep.spec.model.as_ref().filter(|_| model_files_exist) {
                            if !Path::new(&m.path).is_file() {
                                problems.push(format!("{source}: no model file at {}", m.path));
                            }
                        }
                    }
                    Manifest::Queue(_) | Manifest::Secret(_) => {}
                }
            }
            Object::Workflow { source, workflow } => {
                for (i, t) in workflow.spec.templates.iter().enumerate() {
                    let resources = match (&t.container, &t.script) {
                        (Some(c), _) => c.resources.as_ref(),
                        (_, Some(s)) => s.resources.as_ref(),
                        _ => None,
                    };
                    if let Some(why) = resources.and_then(|r| why_not(node, &step_job(r))) {
                        problems.push(format!("{source}: spec.templates[{i}]: {why}"));
                    }
                }
            }
            // Checked when read; they run through the workflows that use them.
            Object::Argo(_) => {}
        }
    }
    problems
}

/// The fenced blocks of `lang` in a Markdown text.
fn fenced_blocks(text: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l == format!("```{lang}") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// A command line split as `sh` would for the README's simple cases
/// (single quotes, no escapes); a `#` outside quotes starts a comment.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            '#' if !quoted && word.is_none() => break,
            c if c.is_whitespace() && !quoted => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

#[test]
fn every_example_file_runs_on_the_default_dev_cluster() {
    let node = dev_node();
    let dir = repo_root().join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        // Manifests; programs an example runs (e.g. openai-server.py) sit beside them.
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "examples/ has {files:?}");
    let mut problems = Vec::new();
    for f in &files {
        let path = f.display().to_string();
        match manifest::load_objects(&[path], &mut std::io::empty()) {
            Ok(objects) => {
                assert!(!objects.is_empty(), "{} holds no object", f.display());
                problems.extend(check_objects(&node, objects, true));
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn readme_yaml_blocks_and_submit_lines_run_on_the_default_dev_cluster() {
    let node = dev_node();
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let mut problems = Vec::new();
    let yaml = fenced_blocks(&readme, "yaml");
    assert!(yaml.len() >= 3, "README.md has {} YAML blocks", yaml.len());
    for block in yaml {
        // A replica's encryption configuration is a file for
        // `--encryption-provider-config`, not an object to apply.
        if block.contains("kind: EncryptionConfiguration") {
            if let Err(e) = gpuctl_security::sealing::Keyring::parse(&block) {
                problems.push(format!("{e}\n{block}"));
            }
            continue;
        }
        // The README's endpoint block shows the format with a placeholder
        // model file: its resources are checked, not its path.
        match manifest::load_objects(&["-".into()], &mut block.as_bytes()) {
            Ok(objects) => problems.extend(check_objects(&node, objects, false)),
            Err(e) => problems.push(format!("{e}\n{block}")),
        }
    }
    let mut submits = 0;
    for line in fenced_blocks(&readme, "sh").iter().flat_map(|b| b.lines()) {
        let words = shell_words(line);
        if words.len() < 2 || words[0] != "gpuctl" || words[1] != "submit" {
            continue;
        }
        let cli = match gpuctl::Cli::try_parse_from(&words) {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("{line}: {e}"));
                continue;
            }
        };
        let gpuctl::Command::Submit(flags) = cli.command else {
            unreachable!("a submit line")
        };
        if flags.file.is_some() {
            continue;
        }
        submits += 1;
        match manifest::build_submit_job(&flags.to_args(), || "readme".into()) {
            Ok(job) => problems.extend(why_not(&node, &job).map(|why| format!("{line}: {why}"))),
            Err(e) => problems.push(format!("{line}: {e}")),
        }
    }
    assert!(
        submits >= 2,
        "README.md has {submits} `gpuctl submit` lines"
    );
    let example = gpuctl::dev::example_job().unwrap();
    problems.extend(why_not(&node, &example).map(|why| format!("gpuctl dev --example: {why}")));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_check_refuses_what_a_two_cpu_node_cannot_run() {
    let node = dev_node();
    let text = "apiVersion: gpuctl.io/v1\nkind: Job\nmetadata: {name: big}\nspec:\n  tasks:\n  \
                - name: w\n    replicas: 2\n    command: [\"true\"]\n    resources: {gpus: 1, cpu: 4}\n";
    let objects = manifest::load_objects(&["-".into()], &mut text.as_bytes()).unwrap();
    let problems = check_objects(&node, objects, true);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("CPU"), "{problems:?}");
    // Each task fits alone, but the gang of two does not fit at once.
    let text = text.replace("cpu: 4", "cpu: 2");
    let objects = manifest::load_objects(&["-".into()], &mut text.as_bytes()).unwrap();
    let problems = check_objects(&node, objects, true);
    assert!(
        problems.len() == 1 && problems[0].contains("all its tasks together"),
        "{problems:?}"
    );
}
