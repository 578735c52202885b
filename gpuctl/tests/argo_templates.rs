//! Argo's WorkflowTemplate and ClusterWorkflowTemplate examples
//! (`pipelines/tests/argo-examples/templates/`) on a real `gpuctl dev`
//! cluster: stored with `apply -f`, listed, used by Argo's example
//! workflows (`templateRef`, `workflowTemplateRef`) with Argo's outcome,
//! copied at submit (deleting a template does not touch a submitted run),
//! and CronWorkflows applied, shown, suspended, resumed, refused with the
//! field named, and deleted. When a CronWorkflow runs is tested on an
//! injected clock in the scheduler (`controllers/cron_tests.rs`).

mod support;
use support::DevCluster;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

fn example(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("pipelines/tests/argo-examples")
        .join(rel)
}

fn path(rel: &str) -> String {
    example(rel).to_str().unwrap().to_string()
}

fn submit(dev: &DevCluster, args: &[&str]) -> String {
    let mut a = vec!["submit"];
    a.extend_from_slice(args);
    let out = dev.ok(&a);
    out.trim()
        .strip_prefix("workflow/")
        .and_then(|s| s.strip_suffix(" submitted"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string()
}

/// The finished workflow (at most 90 s) and the ids of its steps that ran.
fn finished(dev: &DevCluster, name: &str) -> (String, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let wf: Value =
            serde_json::from_str(&dev.ok(&["get", "workflow", name, "-o", "json"])).unwrap();
        let phase = wf["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if phase != "Running" {
            let mut pods = Vec::new();
            fn walk(n: &Value, run: &str, out: &mut Vec<String>) {
                if n["nodeType"] == "Pod" {
                    let id = n["id"].as_str().unwrap_or_default();
                    out.push(id.strip_prefix(run).unwrap_or(id).to_string());
                }
                for c in n["children"].as_array().into_iter().flatten() {
                    walk(c, run, out);
                }
            }
            walk(&wf["status"]["root"], name, &mut pods);
            pods.sort();
            return (phase, pods);
        }
        assert!(Instant::now() < deadline, "{name} still running: {wf:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn templates_are_stored_referenced_copied_at_submit_and_crons_managed() {
    let dev = DevCluster::start(tempfile::tempdir().unwrap(), &[], Duration::from_secs(60));
    let out = dev.ok(&[
        "apply",
        "-f",
        &path("templates/stored/workflow-templates.yaml"),
    ]);
    assert_eq!(out.lines().count(), 5, "{out}");
    assert!(out.contains("workflowtemplate/workflow-template-print-message created"));
    let out = dev.ok(&[
        "apply",
        "-f",
        &path("templates/stored/cluster-workflow-templates.yaml"),
    ]);
    assert!(
        out.contains("clusterworkflowtemplate/cluster-workflow-template-inner-dag created"),
        "{out}"
    );
    // Applying again replaces.
    let out = dev.ok(&[
        "apply",
        "-f",
        &path("templates/stored/workflow-templates.yaml"),
    ]);
    assert!(
        out.contains("workflowtemplate/workflow-template-submittable configured"),
        "{out}"
    );
    let table = dev.ok(&["get", "wftmpl"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("workflow-template-inner-dag"), "{table}");
    assert_eq!(dev.ok(&["get", "cwftmpl"]).lines().count(), 6);

    // Argo's example workflows that use them.
    let dag = submit(&dev, &["-f", &path("templates/runs/dag.yaml")]);
    // Copied at submit: deleting a template it uses does not change it.
    dev.ok(&["delete", "wftmpl", "workflow-template-inner-dag"]);
    let (phase, pods) = finished(&dev, &dag);
    assert_eq!(phase, "Succeeded");
    assert_eq!(
        pods,
        [
            ".A",
            ".B",
            ".C.inner-A",
            ".C.inner-B",
            ".C.inner-C",
            ".C.inner-D",
            ".D"
        ]
    );
    assert_eq!(
        dev.ok(&["logs", "workflow", &dag, "--step", "inner-C"]),
        "inner-C\n"
    );
    // Now it is gone: refused naming the reference and where it is.
    let out = dev.run(&["submit", "-f", &path("templates/runs/dag.yaml")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("templateRef \"workflow-template-inner-dag\" at spec.templates[0].dag.tasks[2]: no WorkflowTemplate named \"workflow-template-inner-dag\""),
        "{err}"
    );

    let steps = submit(
        &dev,
        &[
            "-f",
            &path("templates/runs/mixed-cluster-namespaced-wftmpl-steps.yaml"),
        ],
    );
    let (phase, pods) = finished(&dev, &steps);
    assert_eq!(phase, "Succeeded");
    assert_eq!(
        pods,
        [
            "[0].hello1",
            "[1].hello2a[0].inner-hello1",
            "[1].hello2a[1].inner-hello2a",
            "[1].hello2a[1].inner-hello2b",
            "[1].hello2b"
        ]
    );
    let whole = submit(
        &dev,
        &[
            "-f",
            &path("templates/runs/cluster-workflow-template-ref.yaml"),
            "-p",
            "message=hi",
        ],
    );
    assert_eq!(finished(&dev, &whole).0, "Succeeded");
    assert_eq!(
        dev.ok(&["logs", "workflow", &whole, "--step", &whole]),
        "hi\n"
    );
    let wf: Value =
        serde_json::from_str(&dev.ok(&["get", "workflow", &whole, "-o", "json"])).unwrap();
    assert_eq!(
        wf["metadata"]["labels"]["workflows.argoproj.io/cluster-workflow-template"],
        "cluster-workflow-template-submittable"
    );

    // The rest of the folder: every file of it runs here.
    for f in ["steps.yaml", "workflow-template-ref.yaml"] {
        let name = submit(&dev, &["-f", &path(&format!("templates/runs/{f}"))]);
        assert_eq!(finished(&dev, &name).0, "Succeeded", "{f}");
    }
    assert_eq!(
        std::fs::read_dir(example("templates/runs"))
            .unwrap()
            .count(),
        5
    );

    // CronWorkflows: applied, listed, described, suspended and resumed.
    let cron = path("cron/cron-workflow.yaml");
    assert_eq!(
        dev.ok(&["apply", "-f", &cron]),
        "cronworkflow/hello-world created\n"
    );
    let table = dev.ok(&["get", "cwf"]);
    assert!(
        table.contains("hello-world") && table.contains("America/Los_Angeles"),
        "{table}"
    );
    assert_eq!(
        dev.ok(&["cron", "suspend", "hello-world"]),
        "cronworkflow/hello-world suspended\n"
    );
    let d = dev.ok(&["describe", "cronworkflow", "hello-world"]);
    assert!(d.contains("Suspended:               true"), "{d}");
    assert!(d.contains("ConcurrencyPolicy:       Replace"), "{d}");
    dev.ok(&["cron", "resume", "hello-world"]);
    let v: Value =
        serde_json::from_str(&dev.ok(&["get", "cwf", "hello-world", "-o", "json"])).unwrap();
    assert_eq!(v["spec"]["suspend"], Value::Null);
    assert!(v["status"]["nextScheduledTime"].is_string(), "{v:#}");
    // A bad schedule is refused, naming the file and the field.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(example("cron/cron-workflow.yaml")).unwrap();
    std::fs::write(&bad, text.replace("\"* * * * *\"", "\"* 24 * * *\"")).unwrap();
    let out = dev.run(&["apply", "-f", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.yaml: spec.schedules[0]: hour field: 24 is out of range 0-23"),
        "{err}"
    );
    assert_eq!(
        dev.ok(&["delete", "cwf", "hello-world"]),
        "cronworkflow/hello-world deleted\n"
    );
    assert_eq!(dev.ok(&["get", "cwf"]).lines().count(), 1);

    // `@every` runs soon after it is applied; its stopStrategy stops it
    // after the first success (runs already started carry on), and
    // deleting it stops and deletes every workflow it made, as Argo's
    // owner references do.
    let every = dir.path().join("every.yaml");
    std::fs::write(
        &every,
        "apiVersion: argoproj.io/v1alpha1\nkind: CronWorkflow\nmetadata: {name: every}\nspec:\n  schedules: [\"@every 1s\"]\n  stopStrategy: {expression: \"cronworkflow.succeeded >= 1\"}\n  workflowSpec:\n    entrypoint: main\n    templates:\n    - name: main\n      container: {image: busybox, command: [sh, -c, \"sleep 1; echo hi\"]}\n",
    )
    .unwrap();
    dev.ok(&["apply", "-f", every.to_str().unwrap()]);
    let cwf = || -> Value {
        serde_json::from_str(&dev.ok(&["get", "cwf", "every", "-o", "json"])).unwrap()
    };
    support::eventually(Duration::from_secs(60), "the stopStrategy holds", || {
        (cwf()["status"]["phase"] == "Stopped").then_some(())
    });
    let v = cwf();
    assert!(v["status"]["succeeded"].as_u64() >= Some(1), "{v:#}");
    assert_eq!(
        v["metadata"]["labels"]["cronworkflows.argoproj.io/completed"],
        "true"
    );
    let made = |dev: &DevCluster| -> usize {
        dev.ok(&["get", "workflows"])
            .lines()
            .filter(|l| l.starts_with("every-"))
            .count()
    };
    assert!(made(&dev) >= 1);
    let last = v["status"]["lastScheduledTime"].clone();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(cwf()["status"]["lastScheduledTime"], last, "stopped");
    assert_eq!(
        dev.ok(&["delete", "cwf", "every"]),
        "cronworkflow/every deleted\n"
    );
    assert_eq!(made(&dev), 0, "its workflows went with it");
}
