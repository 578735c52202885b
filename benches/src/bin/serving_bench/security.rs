//! `security`: the gateway on `gpuctl dev` with TLS and an endpoint API key
//! vs plaintext and an open endpoint: the same model endpoint (one replica
//! of `serving/testdata/linear.onnx`), the same `wrk` load, one after the
//! other in one run.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use benches::dev::{Dev, Security};

use crate::stats::LoadResult;
use crate::wrk::parse_wrk;

const BODY: &str = r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,1,1]}]}"#;
const API_KEY: &str = "bench-api-key-0123456789";

/// A wrk script that POSTs [`BODY`] with `headers`.
fn script(headers: &[(&str, &str)]) -> String {
    let mut s = format!(
        "wrk.method = \"POST\"\nwrk.body = \"{}\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
        BODY.replace('"', "\\\"")
    );
    for (k, v) in headers {
        s.push_str(&format!("wrk.headers[\"{k}\"] = \"{v}\"\n"));
    }
    s
}

fn wrk(
    wrk: &str,
    script: &std::path::Path,
    url: &str,
    connections: usize,
    secs: u64,
) -> anyhow::Result<LoadResult> {
    let out = Command::new(wrk)
        .arg(format!("-t{}", connections.clamp(1, 2)))
        .args([format!("-c{connections}"), format!("-d{secs}s")])
        .args(["--latency", "-s", &script.display().to_string(), url])
        .output()
        .with_context(|| format!("running {wrk} (apt-get install wrk)"))?;
    if !out.status.success() {
        bail!("{wrk}: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

/// One mode: start the cluster, serve the endpoint, measure.
fn measure(
    security: Security,
    wrk_bin: &str,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<LoadResult> {
    let tmp = tempfile::tempdir()?;
    let dev = Dev::start_with(tmp.path(), &["--gpus", "4xA100-80GB"], security)?;
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../serving/testdata/linear.onnx")
        .canonicalize()?;
    let auth = match security {
        Security::On => "  auth: {apiKeySecret: {name: bench-keys}}\n",
        Security::Off => "",
    };
    let manifest = tmp.path().join("ep.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: gpuctl.io/v1\nkind: Secret\nmetadata: {{name: bench-keys}}\nstringData: {{key: {API_KEY}}}\n---\n\
             apiVersion: gpuctl.io/v1\nkind: Endpoint\nmetadata: {{name: linear}}\nspec:\n  model: {{path: {}}}\n  resources: {{gpus: 1}}\n{auth}  autoscaling: {{minReplicas: 1, maxReplicas: 1}}\n",
            model.display()
        ),
    )?;
    dev.gpuctl(&["apply", "-f", &manifest.display().to_string()])?;
    let headers: &[(&str, &str)] = match security {
        Security::On => &[("Authorization", "Bearer bench-api-key-0123456789")],
        Security::Off => &[],
    };
    let lua = tmp.path().join("post.lua");
    std::fs::write(&lua, script(headers))?;
    let url = format!("{}/v2/models/linear/infer", dev.url("gateway")?);
    // Until the replica serves: a one-second run without errors.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = wrk(wrk_bin, &lua, &url, 1, 1)?;
        if r.errors == 0 && r.rps > 0.0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the endpoint did not serve within 90 s; see {}",
                dev.log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    wrk(wrk_bin, &lua, &url, connections, 2)?;
    let r = wrk(wrk_bin, &lua, &url, connections, seconds)?;
    dev.stop();
    Ok(r)
}

pub(crate) fn security(
    connections: usize,
    seconds: u64,
    wrk_bin: &str,
    json: bool,
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for mode in [Security::Off, Security::On] {
        let r = measure(mode, wrk_bin, connections, seconds)?;
        eprintln!(
            "{:<20} {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
            mode.label(),
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.errors
        );
        rows.push(serde_json::json!({"security": mode.label(), "result": r}));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_script_sends_the_key_as_a_header() {
        let s = super::script(&[("Authorization", "Bearer k")]);
        assert!(
            s.contains("wrk.headers[\"Authorization\"] = \"Bearer k\""),
            "{s}"
        );
        assert!(s.contains("wrk.method = \"POST\""), "{s}");
    }
}
