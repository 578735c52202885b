//! The compatibility folder `tests/argo-examples/`: Argo's own example
//! workflows (their source is noted at the top of each file). Every file of
//! `runs/` is accepted as it is; every file of `refused/` is refused with
//! the plain reason the README's compatibility table gives. What the
//! accepted ones do when they run is checked on a real cluster by
//! `gpuctl/tests/argo_examples.rs`.

use std::path::{Path, PathBuf};

use gpuctl_pipelines::spec::parse_unvalidated;
use gpuctl_pipelines::{parse_workflow, validate_all};

fn files(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/argo-examples")
        .join(kind);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_in_runs_is_accepted_unchanged_or_with_its_noted_edit() {
    let runs = files("runs");
    assert!(runs.len() >= 17, "{runs:?}");
    for f in runs {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("# Source: https://github.com/argoproj/argo-workflows/"));
        if let Err(e) = parse_workflow(&f.display().to_string(), &text) {
            panic!("{e}");
        }
    }
}

#[test]
fn every_example_in_refused_is_refused_with_a_plain_reason() {
    let want = [
        (
            "daemon-step.yaml",
            "spec.templates[1].daemon",
            "Kubernetes-only Argo feature \"daemon\"",
        ),
        (
            "input-artifact-s3.yaml",
            "spec.templates[0].inputs.artifacts[0].s3",
            "not supported yet",
        ),
        (
            "k8s-jobs.yaml",
            "spec.templates[0].resource",
            "Kubernetes-only Argo feature \"resource\"",
        ),
        (
            "sidecar.yaml",
            "spec.templates[0].sidecars",
            "Kubernetes-only Argo feature \"sidecars\"",
        ),
        (
            "volumes-pvc.yaml",
            "spec.volumeClaimTemplates",
            "Kubernetes-only Argo feature \"volumeClaimTemplates\"",
        ),
    ];
    let refused = files("refused");
    assert_eq!(refused.len(), want.len(), "{refused:?}");
    for (f, (name, path, reason)) in refused.iter().zip(want) {
        assert!(f.ends_with(name), "{f:?}");
        let text = std::fs::read_to_string(f).unwrap();
        let wf = parse_unvalidated(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let errors = validate_all(&wf);
        assert!(
            errors
                .iter()
                .any(|e| e.path == path && e.reason.contains(reason)),
            "{name}: wanted {path}: {reason}; got {errors:#?}"
        );
        assert!(parse_workflow(name, &text).is_err());
        assert!(
            !errors.iter().any(|e| e.reason.contains("unknown field")),
            "{name}: {errors:#?}"
        );
    }
}
