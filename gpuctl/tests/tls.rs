//! TLS on `gpuctl dev`: the cluster runs on the dev CA's certificate and
//! the CLI finds the CA in the context; each mismatch between client and
//! server is one line that says what to do. `gpuctl dev --insecure` runs
//! everything plaintext.
//!
//! Needs every binary next to `gpuctl` (`cargo build --bins`).

mod support;
use support::DevCluster;

use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::Duration;

fn stderr(o: &Output) -> String {
    assert!(!o.status.success(), "expected a failure: {o:?}");
    String::from_utf8_lossy(&o.stderr).trim_end().to_string()
}

fn context(dev: &DevCluster) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dev.config().join("context.json")).unwrap())
        .unwrap()
}

#[test]
fn a_dev_cluster_speaks_tls_and_mismatches_are_explained() {
    let dev = DevCluster::start(
        tempfile::tempdir().unwrap(),
        &["--gpus", "1xA100-80GB"],
        Duration::from_secs(60),
    );
    let ctx = context(&dev);
    let server = ctx["server"].as_str().unwrap().to_string();
    let tls = dev.state().join("tls");
    assert!(server.starts_with("https://127.0.0.1:"), "{ctx}");
    assert!(
        ctx["gateway"].as_str().unwrap().starts_with("https://"),
        "{ctx}"
    );
    assert_eq!(
        ctx["ca"].as_str().unwrap(),
        tls.join("ca.pem").to_str().unwrap()
    );
    for (f, mode) in [
        ("ca.pem", 0o644),
        ("ca-key.pem", 0o600),
        ("cluster.pem", 0o644),
        ("cluster-key.pem", 0o600),
        ("node-ca.pem", 0o644),
        ("node-ca-key.pem", 0o600),
    ] {
        let m = std::fs::metadata(tls.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, mode, "{f}");
    }
    // The CLI checks the server against the context's CA.
    let nodes = dev.ok(&["get", "nodes"]);
    assert!(nodes.contains("dev-node-1"), "{nodes}");

    // The scheduler's and the node's /metrics ports speak TLS too.
    let rt = tokio::runtime::Runtime::new().unwrap();
    for ready in ["scheduler-1.ready.json", "node-1.ready.json"] {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dev.state().join(ready)).unwrap())
                .unwrap();
        let metrics = doc["metrics"].as_str().unwrap().to_string();
        let tls = rt.block_on(gpuctl_security::tls::speaks_tls(
            &metrics,
            Duration::from_secs(5),
        ));
        assert_eq!(tls, Some(true), "{ready}: {metrics}");
    }

    // A plaintext client.
    let addr = server.trim_start_matches("https://");
    assert_eq!(
        stderr(&dev.run(&["--insecure", "get", "jobs"])),
        format!("error: cannot reach {server}: the server at {addr} speaks TLS: a plaintext client cannot talk to it; drop --insecure and give --ca")
    );
    // A client that trusts another CA.
    let other = gpuctl_security::ca::Ca::new("another CA").unwrap();
    let other_pem = dev.dir().join("other-ca.pem");
    gpuctl_security::ca::write_ca_cert(&other, &other_pem).unwrap();
    assert_eq!(
        stderr(&dev.run(&["--ca", other_pem.to_str().unwrap(), "get", "jobs"])),
        format!(
            "error: cannot reach {server}: the server's certificate is not signed by the CA in {} (unknown issuer)",
            other_pem.display()
        )
    );
    // A CA file that is not there.
    let missing = dev.dir().join("missing.pem");
    assert_eq!(
        stderr(&dev.run(&["--ca", missing.to_str().unwrap(), "get", "jobs"])),
        format!(
            "error: --ca: cannot read the CA certificate {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

#[test]
fn dev_insecure_runs_plaintext_and_a_tls_client_is_told_so() {
    let dev = DevCluster::start(
        tempfile::tempdir().unwrap(),
        &["--insecure", "--gpus", "1xA100-80GB"],
        Duration::from_secs(60),
    );
    let ctx = context(&dev);
    let server = ctx["server"].as_str().unwrap().to_string();
    assert!(server.starts_with("http://127.0.0.1:"), "{ctx}");
    assert!(ctx.get("ca").is_none(), "{ctx}");
    assert!(!dev.state().join("tls").exists());
    let nodes = dev.ok(&["get", "nodes"]);
    assert!(nodes.contains("dev-node-1"), "{nodes}");

    // A TLS client (an https:// URL and a CA) to the plaintext server.
    let files = gpuctl_security::ca::ensure_dev(&dev.dir().join("tls")).unwrap();
    let https = server.replace("http://", "https://");
    let addr = server.trim_start_matches("http://");
    assert_eq!(
        stderr(&dev.run(&[
            "--server",
            &https,
            "--ca",
            files.ca.to_str().unwrap(),
            "get",
            "jobs"
        ])),
        format!("error: cannot reach {https}: the server at {addr} does not speak TLS (started with --insecure?): connect with --insecure")
    );
    // And an https:// URL without any CA.
    assert_eq!(
        stderr(&dev.run(&["--server", &https, "get", "jobs"])),
        format!("error: cannot reach {https}: an https:// server needs the CA that signed its certificate: give --ca FILE (or `ca` in the context)")
    );
}
