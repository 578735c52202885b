//! The web UI in a real browser: Chromium driven through chromedriver by
//! Python's Selenium (`tests/web_ui/browser.py`) against a `gpuctl dev`
//! cluster with TLS and tokens. The cluster gets a job that runs until the
//! browser script releases it, a finished job, a workflow with a fan-out
//! and an endpoint with one replica; the script checks each page, the live
//! updates and the login wall, and saves screenshots
//! (`GPUCTL_UI_SCREENSHOTS=DIR` keeps them; `docs/ui/` holds a set).
//!
//! Needs `chromium` and `chromium-driver` (scripts/install-deps installs
//! them) and Python with `selenium` (scripts/test installs it in its venv);
//! skipped, saying so, where either is missing.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::{eventually, DevCluster};

/// chromedriver, from `CHROMEDRIVER` or the PATH.
fn chromedriver() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMEDRIVER") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromedriver"))
            .find(|p| p.is_file())
    })
}

/// Python with Selenium (`GPUCTL_TEST_PYTHON`, else `python3`).
fn python() -> Option<String> {
    let py = std::env::var("GPUCTL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import selenium"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(py)
}

const WORKFLOW: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: ui-pipeline}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: prepare, template: echo, arguments: {parameters: [{name: msg, value: prepared}]}}
      - {name: train, template: echo, dependencies: [prepare], withItems: ["a", "b"],
         arguments: {parameters: [{name: msg, value: "{{item}}"}]}}
      - {name: report, template: echo, dependencies: [train], arguments: {parameters: [{name: msg, value: done}]}}
  - name: echo
    inputs: {parameters: [{name: msg}]}
    script:
      image: none
      command: [sh]
      source: echo step-output-{{inputs.parameters.msg}}
"#;

/// An endpoint at zero replicas until traffic arrives, staying up a while after.
fn endpoint() -> String {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../serving/testdata/linear.onnx");
    format!(
        r#"
apiVersion: gpuctl.io/v1
kind: Endpoint
metadata: {{name: ui-linear}}
spec:
  model: {{name: linear, path: {}, format: onnx}}
  resources: {{gpus: 1}}
  autoscaling: {{minReplicas: 0, maxReplicas: 2, scaleToZeroAfterSeconds: 120}}
"#,
        model.display()
    )
}

#[test]
fn every_page_shows_the_cluster_live_to_a_signed_in_browser_only() {
    let (Some(driver), Some(py)) = (chromedriver(), python()) else {
        eprintln!(
            "skipped: needs chromedriver (apt-get install chromium chromium-driver) and python3 with selenium (pip install selenium); scripts/test installs both"
        );
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().to_path_buf();
    let dev = DevCluster::start(root, &["--task-isolation", "off"], Duration::from_secs(90));
    // The objects the pages must show.
    let release = dir.join("release");
    dev.ok(&["submit", "--name", "done", "--", "echo", "hi"]);
    dev.ok(&["wait", "done"]);
    let gate = format!(
        "echo hello-from-gated; i=0; while [ ! -f {} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; echo released-gated",
        release.display()
    );
    dev.ok(&[
        "submit", "--name", "gated", "--gpus", "1", "--", "sh", "-c", &gate,
    ]);
    let wf = dir.join("workflow.yaml");
    std::fs::write(&wf, WORKFLOW).unwrap();
    dev.ok(&["apply", "-f", wf.to_str().unwrap()]);
    dev.ok(&["wait", "ui-pipeline"]);
    let ep = dir.join("endpoint.yaml");
    std::fs::write(&ep, endpoint()).unwrap();
    dev.ok(&["apply", "-f", ep.to_str().unwrap()]);
    eventually(Duration::from_secs(60), "job gated running", || {
        dev.ok(&["get", "job", "gated"])
            .contains("Running")
            .then_some(())
    });

    // The same views in a terminal.
    let top = dev.ok(&["top", "nodes", "--once"]);
    assert!(
        top.contains("node(s) ready") && top.contains("dev-node-1"),
        "{top}"
    );
    let top = dev.ok(&["top", "jobs", "--once"]);
    assert!(top.contains("gated") && !top.contains("done "), "{top}");

    let cluster: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dev.state().join("cluster.json")).unwrap())
            .unwrap();
    let url = cluster["schedulers"][0]["ui"]
        .as_str()
        .expect("cluster.json names the web UI's URL")
        .to_string();
    assert!(url.starts_with("https://"), "the UI speaks TLS: {url}");
    let shots = std::env::var_os("GPUCTL_UI_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("screenshots"));
    let ctx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dev.config().join("context.json")).unwrap())
            .unwrap();
    let gateway = ctx["gateway"]
        .as_str()
        .expect("the context names the gateway");
    let ca = ctx["ca"].as_str().expect("the context names the CA");
    let steps = serde_json::json!({
        "prepare": "Succeeded", "train(0:a)": "Succeeded",
        "train(1:b)": "Succeeded", "report": "Succeeded",
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/web_ui/browser.py");
    let out = Command::new(&py)
        .arg(&script)
        .args(["--url", &url])
        .arg("--token-file")
        .arg(dev.state().join("admin.token"))
        .arg("--chromedriver")
        .arg(&driver)
        .arg("--shots")
        .arg(&shots)
        .args(["--job", "gated"])
        .arg("--release")
        .arg(&release)
        .args(["--log-text", "hello-from-gated", "--done-job", "done"])
        .args(["--log-after-text", "released-gated"])
        .args(["--workflow", "ui-pipeline"])
        .args(["--workflow-steps", &steps.to_string()])
        .args(["--endpoint", "ui-linear"])
        .args(["--gateway", gateway, "--ca", ca])
        .env("GPUCTL_CONFIG_DIR", dev.config())
        .env_remove("GPUCTL_SERVER")
        .env_remove("GPUCTL_TOKEN")
        .output()
        .expect("run the browser script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "the browser checks failed:\n{text}");
    assert!(text.contains("ok: every page checked"), "{text}");
    for page in [
        "login",
        "cluster",
        "jobs",
        "job",
        "workflow",
        "endpoints-idle",
        "endpoints",
        "control",
    ] {
        assert!(
            shots.join(format!("{page}.png")).is_file(),
            "no screenshot of the {page} page in {}",
            shots.display()
        );
    }
    // What the browser saw finish, the CLI agrees with.
    assert!(dev.ok(&["get", "job", "gated"]).contains("Succeeded"));
}
