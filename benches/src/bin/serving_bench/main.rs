//! Serving benchmarks, run by hand (not in CI):
//!
//! - `proxy`: the gateway vs nginx as a reverse proxy in front of the same
//!   fixed-response upstream, the same load generator at 64 connections;
//! - `batching`: `gpu-model-server` throughput at 64 concurrent clients with dynamic
//!   batching on (`--max-batch-size 64`) vs off (`--max-batch-size 1`), small MLP;
//! - `security`: on `gpuctl dev`, the gateway with TLS and an endpoint API key vs
//!   plaintext and an open endpoint, wrk at 64 connections;
//! - `protocols`: V2 gRPC infer direct to the model server vs through the
//!   gateway, and a 1 MiB input as JSON vs binary tensors;
//! - `cold-start`: on `gpuctl dev`, an endpoint at zero replicas, first request to its
//!   response, over N wake-ups.
//!
//! The load generator is in this file: N tasks, each with one keep-alive HTTP/1.1
//! connection (hyper), sending the next request as soon as the last answered (as
//! `wrk -c N` does). Binaries are looked up next to this one (`cargo build --release
//! --bins`), or given with flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use benches::dev::{sibling, Dev};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

mod procs;
mod protocols;
mod security;
mod stats;
mod wrk;
use procs::{cpu_seconds, free_port, one_request, repo_root, wait_listening, Proc};
use stats::{answered_ok, median, medians, percentile, LoadResult, PairedRounds, Tally, Window};
use wrk::{parse_wrk, wrk_script};

#[derive(Parser)]
#[command(about = "gpuctl serving benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Gateway vs nginx in front of the same fixed-response upstream.
    Proxy {
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Rounds; each measures the gateway then nginx. The medians over the
        /// rounds are printed last (single rounds swing on a shared machine).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value = "nginx")]
        nginx: String,
        /// The gateway binary (default: gpu-gateway next to this one).
        #[arg(long)]
        gateway: Option<PathBuf>,
        /// Drive the load with wrk (e.g. `--wrk wrk`, Debian package `wrk`,
        /// two threads) instead of the built-in generator.
        #[arg(long)]
        wrk: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Model-server throughput with dynamic batching on vs off.
    Batching {
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The model (default: serving/testdata/mlp.onnx).
        #[arg(long)]
        model: Option<PathBuf>,
        /// The model-server binary (default: gpu-model-server next to this one).
        #[arg(long)]
        model_server: Option<PathBuf>,
        /// Drive the load with wrk instead of the built-in generator.
        #[arg(long)]
        wrk: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The gateway with TLS and an endpoint API key vs plaintext and an open
    /// endpoint, on `gpuctl dev`, driven by wrk.
    Security {
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value = "wrk")]
        wrk: String,
        #[arg(long)]
        json: bool,
    },
    /// gRPC infer direct vs through the gateway; 1 MiB of input as JSON vs binary.
    Protocols {
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The model-server binary (default: gpu-model-server next to this one).
        #[arg(long)]
        model_server: Option<PathBuf>,
        /// The gateway binary (default: gpu-gateway next to this one).
        #[arg(long)]
        gateway: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// First request at zero replicas → response, on `gpuctl dev`.
    ColdStart {
        #[arg(long, default_value_t = 20)]
        wakeups: usize,
        #[arg(long)]
        json: bool,
    },
}

/// `connections` keep-alive connections, each sending `body` to `path` back to back
/// for `warmup + measure`; only the `measure` part counts.
async fn load(
    addr: SocketAddr,
    path: &str,
    body: Bytes,
    connections: usize,
    warmup: Duration,
    measure: Duration,
) -> LoadResult {
    let window = Window::new(warmup, measure);
    let path: Arc<str> = path.into();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (path, body) = (path.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally: Tally = (Vec::new(), 0);
            'outer: while window.open() {
                let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                    tally.1 += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let Ok((mut send, conn)) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
                else {
                    tally.1 += 1;
                    continue;
                };
                tokio::spawn(conn);
                while window.open() {
                    let req = Request::builder()
                        .method("POST")
                        .uri(&*path)
                        .header("host", addr.to_string())
                        .header("content-type", "application/json")
                        .body(Full::new(body.clone()))
                        .expect("valid request");
                    let t = Instant::now();
                    let ok = answered_ok(&mut send, req).await;
                    window.record(t, ok, &mut tally);
                    if !ok {
                        continue 'outer; // a fresh connection
                    }
                }
            }
            tally
        }));
    }
    LoadResult::gather(tasks, measure).await
}

/// The fixed-response upstream: any request gets the same small JSON.
async fn upstream() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let body = Bytes::from_static(
        br#"{"model_name":"up","model_version":"1","outputs":[{"name":"y","shape":[1,2],"datatype":"FP32","data":[9.5,11.5]}]}"#,
    );
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .expect("valid response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn nginx_conf(dir: &Path, port: u16, upstream: SocketAddr) -> String {
    format!(
        "worker_processes auto;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream replicas {{ server {upstream}; keepalive 128; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    location / {{
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_buffering on;
    }}
  }}
}}
",
        dir = dir.display()
    )
}

/// What drives the load of the proxy comparison.
enum Generator {
    BuiltIn,
    /// The `wrk` program at this path.
    Wrk(String),
}

impl Generator {
    /// wrk at `wrk` when given, else the built-in generator.
    fn new(wrk: Option<String>) -> Generator {
        wrk.map_or(Generator::BuiltIn, Generator::Wrk)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        addr: SocketAddr,
        path: &str,
        body: &Bytes,
        connections: usize,
        warmup: Duration,
        measure: Duration,
        dir: &Path,
    ) -> anyhow::Result<LoadResult> {
        match self {
            Generator::BuiltIn => {
                Ok(load(addr, path, body.clone(), connections, warmup, measure).await)
            }
            Generator::Wrk(wrk) => {
                let script = dir.join("post.lua");
                std::fs::write(&script, wrk_script(body))?;
                let url = format!("http://{addr}{path}");
                let run = |secs: u64| -> anyhow::Result<String> {
                    let out = Command::new(wrk)
                        .args(["-t2", &format!("-c{connections}"), &format!("-d{secs}s")])
                        .args(["--latency", "-s", &script.display().to_string(), &url])
                        .output()
                        .with_context(|| format!("running {wrk} (apt-get install wrk)"))?;
                    if !out.status.success() {
                        bail!("{wrk}: {}", String::from_utf8_lossy(&out.stderr));
                    }
                    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
                };
                if !warmup.is_zero() {
                    run(warmup.as_secs().max(1))?;
                }
                parse_wrk(&run(measure.as_secs().max(1))?)
            }
        }
    }
}

async fn proxy(
    connections: usize,
    seconds: u64,
    rounds: usize,
    nginx: &str,
    gateway: Option<PathBuf>,
    generator: &Generator,
    json: bool,
) -> anyhow::Result<()> {
    let up = upstream().await?;
    let tmp = tempfile::tempdir()?;
    // The gateway, with a static route to the upstream.
    let gw_port = free_port()?;
    let _gw = Proc(
        Command::new(match gateway {
            Some(g) => g,
            None => sibling("gpu-gateway")?,
        })
        .args([
            "--insecure",
            "--endpoint",
            &format!("up=http://{up}"),
            "--port",
            &gw_port.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting gpu-gateway")?,
    );
    // nginx, the same upstream.
    let ng_port = free_port()?;
    let conf = tmp.path().join("nginx.conf");
    std::fs::write(&conf, nginx_conf(tmp.path(), ng_port, up))?;
    let _ng = Proc(
        Command::new(nginx)
            .args([
                "-c",
                &conf.display().to_string(),
                "-p",
                &tmp.path().display().to_string(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {nginx} (apt-get install nginx-light)"))?,
    );
    let (gw_pid, ng_pid) = (_gw.0.id(), _ng.0.id());
    let gw: SocketAddr = format!("127.0.0.1:{gw_port}").parse()?;
    let ng: SocketAddr = format!("127.0.0.1:{ng_port}").parse()?;
    wait_listening(gw, "/healthz").await?;
    wait_listening(ng, "/v2/models/up/ready").await?;
    let body = Bytes::from_static(
        br#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,1,1]}]}"#,
    );
    let path = "/v2/models/up/infer";
    let mut rows = Vec::new();
    let mut per_proxy: std::collections::BTreeMap<&str, Vec<(LoadResult, f64)>> =
        Default::default();
    let mut pairs: Vec<(f64, f64)> = Vec::new();
    let mut user_per_proxy: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for round in 1..=rounds {
        // Each proxy goes first in every other round, so that a machine getting
        // faster or slower over a round favours neither.
        let mut order = [("gpu-gateway", gw, gw_pid), ("nginx", ng, ng_pid)];
        if round % 2 == 0 {
            order.reverse();
        }
        let mut this_round = std::collections::BTreeMap::new();
        for (name, addr, pid) in order {
            let before = cpu_seconds(pid);
            let r = generator
                .run(
                    addr,
                    path,
                    &body,
                    connections,
                    Duration::from_secs(2),
                    Duration::from_secs(seconds),
                    tmp.path(),
                )
                .await?;
            // The proxy's CPU per request over warm-up and measurement: less sensitive
            // to other load on the machine than requests per second.
            let per_request = |secs: f64| secs * 1e6 / (r.rps * (seconds + 2) as f64).max(1.0);
            let after = cpu_seconds(pid);
            let cpu_us = per_request(after.0 + after.1 - before.0 - before.1);
            let user_us = per_request(after.0 - before.0);
            eprintln!(
                "round {round} {name:<12} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  errors {}  proxy CPU {cpu_us:.0} µs/req (user {user_us:.1})",
                r.rps, r.p50_ms, r.p99_ms, r.errors
            );
            rows.push(serde_json::json!({"round": round, "proxy": name, "result": r, "proxyCpuMicrosPerRequest": cpu_us, "proxyUserCpuMicrosPerRequest": user_us}));
            user_per_proxy.entry(name).or_default().push(user_us);
            this_round.insert(name, (r.rps, r.p99_ms));
            per_proxy.entry(name).or_default().push((r, cpu_us));
        }
        if let (Some(g), Some(n)) = (this_round.get("gpu-gateway"), this_round.get("nginx")) {
            pairs.push((g.0 / n.0, g.1 - n.1));
        }
    }
    // Single rounds swing by a quarter on a shared VM; the medians over the
    // interleaved rounds are what to compare.
    let mut median_rps = std::collections::BTreeMap::new();
    for (name, runs) in &per_proxy {
        let m = medians(runs);
        median_rps.insert(*name, m.rps);
        let user_us = median(user_per_proxy.get(name).cloned().unwrap_or_default());
        eprintln!(
            "median of {} {name:<12} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  proxy CPU {:.0} µs/req (user {user_us:.1})",
            runs.len(),
            m.rps,
            m.p50_ms,
            m.p99_ms,
            m.cpu_us
        );
        rows.push(serde_json::json!({"median": name, "rounds": runs.len(), "rps": m.rps, "p50Ms": m.p50_ms, "p99Ms": m.p99_ms, "proxyCpuMicrosPerRequest": m.cpu_us, "proxyUserCpuMicrosPerRequest": user_us}));
    }
    if let (Some(gw), Some(ng)) = (median_rps.get("gpu-gateway"), median_rps.get("nginx")) {
        eprintln!(
            "gateway / nginx requests per second (medians): {:.2}",
            gw / ng
        );
    }
    // The two proxies of one round ran minutes apart at most: their ratio is less
    // exposed to the machine's drift than the ratio of the medians.
    let paired = PairedRounds::of(&pairs);
    eprintln!("{paired}");
    rows.push(serde_json::to_value(&paired)?);
    // The upstream alone, for reference.
    let direct = generator
        .run(
            up,
            path,
            &body,
            connections,
            Duration::from_secs(1),
            Duration::from_secs(seconds),
            tmp.path(),
        )
        .await?;
    eprintln!(
        "direct       {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms",
        direct.rps, direct.p50_ms, direct.p99_ms
    );
    rows.push(serde_json::json!({"proxy": "none (upstream direct)", "result": direct}));
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

async fn batching(
    clients: usize,
    seconds: u64,
    model: Option<PathBuf>,
    model_server: Option<PathBuf>,
    generator: &Generator,
    json: bool,
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let model = model.unwrap_or_else(|| repo_root().join("serving/testdata/mlp.onnx"));
    let x: Vec<f32> = (0..16).map(|i| (i % 7) as f32 * 0.1).collect();
    let body = Bytes::from(serde_json::to_vec(&serde_json::json!({
        "inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": x}]
    }))?);
    let mut rows = Vec::new();
    for (label, batch, delay) in [("off", 1, 0), ("on", 64, 2)] {
        let port = free_port()?;
        let _srv = Proc(
            Command::new(match &model_server {
                Some(m) => m.clone(),
                None => sibling("gpu-model-server")?,
            })
            .args([
                "--model",
                &model.display().to_string(),
                "--name",
                "mlp",
                "--port",
                &port.to_string(),
                "--max-batch-size",
                &batch.to_string(),
                "--max-delay-ms",
                &delay.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting gpu-model-server")?,
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        wait_listening(addr, "/v2/health/ready").await?;
        let (code, answer) =
            one_request(addr, "POST", "/v2/models/mlp/infer", body.clone()).await?;
        if code != 200 {
            bail!(
                "model server answered {code}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let before = cpu_seconds(_srv.0.id());
        let r = generator
            .run(
                addr,
                "/v2/models/mlp/infer",
                &body,
                clients,
                Duration::from_secs(2),
                Duration::from_secs(seconds),
                tmp.path(),
            )
            .await?;
        // The server's CPU per request over warm-up and measurement.
        let after = cpu_seconds(_srv.0.id());
        let cpu_us = (after.0 + after.1 - before.0 - before.1) * 1e6
            / (r.rps * (seconds + 2) as f64).max(1.0);
        eprintln!(
            "batching {label:<3} (max batch {batch:>2}, delay {delay} ms): {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}  server CPU {cpu_us:.0} µs/req",
            r.rps, r.p50_ms, r.p99_ms, r.errors
        );
        rows.push(serde_json::json!({"batching": label, "maxBatchSize": batch, "maxDelayMillis": delay, "result": r, "serverCpuMicrosPerRequest": cpu_us}));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

async fn cold_start(wakeups: usize, json: bool) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // Blocking start (a few seconds), before any load runs.
    let dev = Dev::start(tmp.path(), &["--gpus", "4xA100-80GB"])?;
    let gw: SocketAddr = dev.url("gateway")?.trim_start_matches("http://").parse()?;
    let model = repo_root()
        .join("serving/testdata/linear.onnx")
        .canonicalize()?;
    let manifest = tmp.path().join("ep.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: gpuctl.io/v1\nkind: Endpoint\nmetadata: {{name: linear}}\nspec:\n  model: {{path: {}}}\n  resources: {{gpus: 1}}\n  autoscaling: {{minReplicas: 0, maxReplicas: 1, targetConcurrency: 1, scaleToZeroAfterSeconds: 1, stableWindowSeconds: 1}}\n",
            model.display()
        ),
    )?;
    dev.gpuctl(&["apply", "-f", &manifest.display().to_string()])?;
    let body = Bytes::from_static(
        br#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,1,1]}]}"#,
    );
    let mut lat = Vec::new();
    for i in 0..wakeups {
        // Wait until the endpoint is at zero and its replica job is gone.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ep: serde_json::Value =
                serde_json::from_str(&dev.gpuctl(&["get", "endpoint", "linear", "-o", "json"])?)?;
            let jobs: Vec<serde_json::Value> =
                serde_json::from_str(&dev.gpuctl(&["get", "jobs", "-o", "json"])?)?;
            let zero = ep["status"]["replicas"]
                .as_array()
                .is_none_or(|r| r.is_empty());
            if zero && jobs.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!("the endpoint did not go back to zero");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The gateway's own view settles on its next poll.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let t = Instant::now();
        let (code, answer) =
            one_request(gw, "POST", "/v2/models/linear/infer", body.clone()).await?;
        let d = t.elapsed();
        if code != 200 || !String::from_utf8_lossy(&answer).contains("[9.5,11.5]") {
            bail!("wake-up {i}: {code} {}", String::from_utf8_lossy(&answer));
        }
        eprintln!("wake-up {:>2}: {:.1} ms", i + 1, d.as_secs_f64() * 1000.0);
        lat.push(d);
    }
    let mut sorted = lat.clone();
    sorted.sort();
    let (p50, p99) = (percentile(&sorted, 0.5), percentile(&sorted, 0.99));
    eprintln!(
        "cold start over {wakeups} wake-ups: p50 {p50:.1} ms  p99 {p99:.1} ms  min {:.1} ms  max {:.1} ms",
        sorted[0].as_secs_f64() * 1000.0,
        sorted[sorted.len() - 1].as_secs_f64() * 1000.0
    );
    if json {
        println!(
            "{}",
            serde_json::json!({"wakeups": wakeups, "p50_ms": p50, "p99_ms": p99,
                "all_ms": lat.iter().map(|d| d.as_secs_f64() * 1000.0).collect::<Vec<_>>()})
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Proxy {
            connections,
            seconds,
            rounds,
            nginx,
            gateway,
            wrk,
            json,
        } => {
            let generator = Generator::new(wrk);
            proxy(
                connections,
                seconds,
                rounds,
                &nginx,
                gateway,
                &generator,
                json,
            )
            .await
        }
        Cmd::Batching {
            clients,
            seconds,
            model,
            model_server,
            wrk,
            json,
        } => {
            let generator = Generator::new(wrk);
            batching(clients, seconds, model, model_server, &generator, json).await
        }
        Cmd::ColdStart { wakeups, json } => cold_start(wakeups, json).await,
        Cmd::Protocols {
            clients,
            seconds,
            model_server,
            gateway,
            json,
        } => protocols::run(clients, seconds, model_server, gateway, json).await,
        Cmd::Security {
            connections,
            seconds,
            wrk,
            json,
        } => tokio::task::block_in_place(|| security::security(connections, seconds, &wrk, json)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_rounds() {
        let run = |rps: f64, p99: f64, cpu: f64| {
            (
                LoadResult {
                    requests: 1,
                    errors: 0,
                    rps,
                    p50_ms: 1.0,
                    p99_ms: p99,
                },
                cpu,
            )
        };
        let odd = medians(&[
            run(30.0, 9.0, 40.0),
            run(10.0, 1.0, 20.0),
            run(20.0, 5.0, 30.0),
        ]);
        assert_eq!((odd.rps, odd.p99_ms, odd.cpu_us), (20.0, 5.0, 30.0));
        let even = medians(&[run(40.0, 2.0, 1.0), run(10.0, 4.0, 3.0)]);
        assert_eq!((even.rps, even.p99_ms, even.cpu_us), (25.0, 3.0, 2.0));
        assert!(medians(&[]).rps.is_nan());
    }

    #[test]
    fn paired_rounds_summarise_ratios_and_p99_differences() {
        let p = PairedRounds::of(&[(0.9, 0.5), (1.1, -0.2), (1.2, 0.1), (1.0, 0.3), (0.95, 0.0)]);
        assert_eq!(p.rounds, 5);
        assert_eq!(p.median_rps_ratio, 1.0);
        assert_eq!(p.rps_ratio_quartiles, (0.95, 1.1));
        assert_eq!(p.gateway_ahead, 2, "a ratio of exactly 1 is not ahead");
        assert_eq!(p.median_p99_difference_ms, 0.1);
        let even = PairedRounds::of(&[(1.0, 1.0), (2.0, 3.0)]);
        assert_eq!(even.median_rps_ratio, 1.5);
        assert_eq!(even.median_p99_difference_ms, 2.0);
        assert!(PairedRounds::of(&[]).median_rps_ratio.is_nan());
    }

    const WRK: &str = "Running 10s test @ http://127.0.0.1:8080/v2/models/up/infer
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.10ms    1.20ms  40.00ms   90.00%
    Req/Sec    10.20k     1.00k   12.00k    70.00%
  Latency Distribution
     50%    2.95ms
     75%    3.50ms
     90%    4.20ms
     99%  812.00us
  203456 requests in 10.00s, 40.00MB read
  Socket errors: connect 0, read 2, write 1, timeout 0
  Non-2xx or 3xx responses: 4
Requests/sec:  20345.60
Transfer/sec:      4.00MB
";

    #[test]
    fn wrk_reports_are_read() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.rps, 20345.6);
        assert_eq!(r.p50_ms, 2.95);
        assert!((r.p99_ms - 0.812).abs() < 1e-9);
        assert_eq!(r.requests, 203456);
        assert_eq!(r.errors, 7);
        assert!(parse_wrk("garbage").is_err());
        let script = wrk_script(&Bytes::from_static(br#"{"a":"b\c"}"#));
        assert!(
            script.contains(r#"wrk.body = "{\"a\":\"b\\c\"}""#),
            "{script}"
        );
    }
}
