//! An OpenAI-compatible endpoint end to end on `gpuctl dev`, as the README shows it:
//! `examples/endpoint-openai.yaml` (a `protocol: openai` endpoint whose
//! `server.command` runs `examples/openai-server.py` over HTTPS with the certificate
//! its node gives it), applied at zero replicas, then called through the gateway's
//! TLS port by the official `openai` Python client: the first call wakes it, chat
//! (streamed and not), completions, embeddings, `/v1/models` and an unknown model.
//!
//! Needs every binary next to `gpuctl` (`cargo build --bins`) and `python3` with the
//! `openai` package (scripts/test installs it in target/pyenv).

mod support;
use support::{eventually, gpuctl_bin, require_binaries, DevCluster};

use std::path::{Path, PathBuf};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python_has_openai() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_openai_example_endpoint_answers_the_official_client_through_the_gateway() {
    require_binaries();
    assert!(
        gpuctl_bin().with_file_name("gpu-gateway").exists(),
        "gpu-gateway is not built next to gpuctl; run `cargo build --bins`"
    );
    if !python_has_openai() {
        eprintln!("skipped: python3 with the openai package is not installed (pip install openai)");
        return;
    }
    let dev = DevCluster::start(tempfile::tempdir().unwrap(), &[], Duration::from_secs(90));
    let example = repo().join("examples/endpoint-openai.yaml");
    dev.ok(&["apply", "-f", example.to_str().unwrap()]);

    let text = std::fs::read_to_string(dev.config().join("context.json")).unwrap();
    let ctx: serde_json::Value = serde_json::from_str(&text).unwrap();
    let gateway = ctx["gateway"]
        .as_str()
        .expect("the context names the gateway");
    assert!(gateway.starts_with("https://"), "{gateway}");
    let ca = ctx["ca"].as_str().expect("the context names the CA");

    // The manifest's relative working directory was sent as an absolute one.
    let described = dev.ok(&["describe", "endpoint", "chat"]);
    assert!(described.contains("openai-server.py"), "{described}");

    // At zero replicas until the client's first call wakes it.
    let script = repo().join("serving/tests/openai_client.py");
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .arg(format!("{gateway}/v1"))
        .arg(ca)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let status = eventually(
        Duration::from_secs(120),
        "the openai client to finish",
        || child.try_wait().unwrap(),
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "openai_client.py through the gateway failed:\n{}\n{}\ndev log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        dev.log()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("openai: ok"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The replica that answered is the example's server, run by the node.
    let endpoints = dev.ok(&["get", "endpoints"]);
    assert!(
        endpoints
            .lines()
            .any(|l| l.starts_with("chat") && l.contains("1/")),
        "{endpoints}"
    );
    dev.stop();
}
