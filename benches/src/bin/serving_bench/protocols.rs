//! `protocols`: what the V2 protocol's other encodings cost, on `gpu-model-server`
//! serving `add_mul` (two FP32 inputs of shape [-1, 4]) with batching off:
//!
//! - gRPC `ModelInfer` (small tensors, `raw_input_contents`) direct to the model
//!   server's `--grpc-port` vs through `gpu-gateway --grpc-port`, which turns each
//!   call into an HTTP request with binary tensors to the replica;
//! - HTTP infer with 1 MiB of input (two 512 KiB tensors, outputs of the same size)
//!   as JSON vs in the binary tensor data extension, direct to the model server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use benches::dev::sibling;
use bytes::Bytes;
use gpuctl_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use gpuctl_proto::inference::model_infer_request::InferInputTensor;
use gpuctl_proto::inference::ModelInferRequest;
use http_body_util::Full;
use hyper::Request;
use hyper_util::rt::TokioIo;

use crate::procs::{cpu_seconds, free_port, repo_root, wait_listening, Proc};
use crate::stats::{answered_ok, LoadResult, Tally, Window};

fn infer_request(rows: usize) -> ModelInferRequest {
    let tensor = |name: &str| InferInputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape: vec![rows as i64, 4],
        ..Default::default()
    };
    let data: Vec<u8> = (0..rows * 4)
        .flat_map(|i| (i as f32).to_le_bytes())
        .collect();
    ModelInferRequest {
        model_name: "add_mul".into(),
        inputs: vec![tensor("a"), tensor("b")],
        raw_input_contents: vec![data.clone(), data],
        ..Default::default()
    }
}

/// `clients` gRPC connections sending `ModelInfer` back to back.
async fn grpc_load(
    addr: SocketAddr,
    clients: usize,
    warmup: Duration,
    measure: Duration,
) -> LoadResult {
    let window = Window::new(warmup, measure);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut tally: Tally = (Vec::new(), 0);
            let Ok(mut c) = GrpcInferenceServiceClient::connect(format!("http://{addr}")).await
            else {
                return (tally.0, 1);
            };
            let req = infer_request(1);
            while window.open() {
                let t = Instant::now();
                let ok = c.model_infer(req.clone()).await.is_ok();
                window.record(t, ok, &mut tally);
            }
            tally
        }));
    }
    LoadResult::gather(tasks, measure).await
}

/// `clients` keep-alive HTTP/1.1 connections posting `body` (with `header`: the
/// value of Inference-Header-Content-Length) back to back.
async fn http_load(
    addr: SocketAddr,
    body: Bytes,
    header: Option<usize>,
    clients: usize,
    warmup: Duration,
    measure: Duration,
) -> LoadResult {
    let window = Window::new(warmup, measure);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally: Tally = (Vec::new(), 0);
            let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                return (tally.0, 1);
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut send, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            else {
                return (tally.0, 1);
            };
            tokio::spawn(conn);
            while window.open() {
                let mut req =
                    Request::post("/v2/models/add_mul/infer").header("host", addr.to_string());
                if let Some(n) = header {
                    req = req
                        .header("content-type", "application/octet-stream")
                        .header("inference-header-content-length", n.to_string());
                }
                let req = req.body(Full::new(body.clone())).expect("valid request");
                let t = Instant::now();
                let ok = answered_ok(&mut send, req).await;
                window.record(t, ok, &mut tally);
                if !ok {
                    break;
                }
            }
            tally
        }));
    }
    LoadResult::gather(tasks, measure).await
}

/// The 1 MiB request both ways: (JSON body, (binary body, its JSON header's length)).
fn big_bodies(rows: usize) -> (Bytes, (Bytes, usize)) {
    let data: Vec<f32> = (0..rows * 4).map(|i| (i % 1000) as f32 * 0.5).collect();
    let json = serde_json::json!({"inputs": [
        {"name": "a", "shape": [rows, 4], "datatype": "FP32", "data": data},
        {"name": "b", "shape": [rows, 4], "datatype": "FP32", "data": data},
    ]});
    let raw: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    let header = serde_json::json!({
        "inputs": [
            {"name": "a", "shape": [rows, 4], "datatype": "FP32", "parameters": {"binary_data_size": raw.len()}},
            {"name": "b", "shape": [rows, 4], "datatype": "FP32", "parameters": {"binary_data_size": raw.len()}},
        ],
        "parameters": {"binary_data_output": true},
    });
    let mut binary = serde_json::to_vec(&header).unwrap_or_default();
    let n = binary.len();
    binary.extend_from_slice(&raw);
    binary.extend_from_slice(&raw);
    (
        Bytes::from(serde_json::to_vec(&json).unwrap_or_default()),
        (Bytes::from(binary), n),
    )
}

pub(crate) async fn run(
    clients: usize,
    seconds: u64,
    model_server: Option<PathBuf>,
    gateway: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let model = repo_root().join("serving/testdata/add_mul.onnx");
    let (http_port, grpc_port) = (free_port()?, free_port()?);
    let srv = Proc(
        Command::new(match &model_server {
            Some(m) => m.clone(),
            None => sibling("gpu-model-server")?,
        })
        .args(["--model", &model.display().to_string(), "--name", "add_mul"])
        .args([
            "--port",
            &http_port.to_string(),
            "--grpc-port",
            &grpc_port.to_string(),
        ])
        .args(["--max-batch-size", "1", "--max-delay-ms", "0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting gpu-model-server")?,
    );
    let direct_http: SocketAddr = format!("127.0.0.1:{http_port}").parse()?;
    wait_listening(direct_http, "/v2/health/ready").await?;
    let (gw_port, gw_grpc) = (free_port()?, free_port()?);
    let _gw = Proc(
        Command::new(match &gateway {
            Some(g) => g.clone(),
            None => sibling("gpu-gateway")?,
        })
        .args(["--endpoint", &format!("add_mul=http://{direct_http}")])
        .args([
            "--port",
            &gw_port.to_string(),
            "--grpc-port",
            &gw_grpc.to_string(),
        ])
        .args(["--workers", "1", "--insecure"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting gpu-gateway")?,
    );
    wait_listening(format!("127.0.0.1:{gw_port}").parse()?, "/healthz").await?;
    let (warmup, measure) = (Duration::from_secs(2), Duration::from_secs(seconds));
    let mut rows = Vec::new();
    for (label, port) in [("gRPC direct", grpc_port), ("gRPC via gateway", gw_grpc)] {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let r = grpc_load(addr, clients, warmup, measure).await;
        if r.requests == 0 {
            bail!("{label}: no request succeeded ({} errors)", r.errors);
        }
        eprintln!(
            "{label:<22} {clients} clients: {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
            r.rps, r.p50_ms, r.p99_ms, r.errors
        );
        rows.push(serde_json::json!({"case": label, "clients": clients, "result": r}));
    }
    let big_rows = 32768; // two FP32 [32768, 4] inputs: 1 MiB of tensor data
    let (json_body, (binary_body, header)) = big_bodies(big_rows);
    let big_clients = clients.min(4);
    for (label, body, header) in [
        ("1 MiB JSON", json_body, None),
        ("1 MiB binary", binary_body, Some(header)),
    ] {
        let before = cpu_seconds(srv.0.id());
        let r = http_load(
            direct_http,
            body.clone(),
            header,
            big_clients,
            warmup,
            measure,
        )
        .await;
        let after = cpu_seconds(srv.0.id());
        let cpu_ms = (after.0 + after.1 - before.0 - before.1) * 1e3
            / (r.rps * (warmup + measure).as_secs_f64()).max(1.0);
        if r.requests == 0 {
            bail!("{label}: no request succeeded ({} errors)", r.errors);
        }
        eprintln!(
            "{label:<22} {big_clients} clients, body {:.2} MiB: {:>6.1} req/s  p50 {:.1} ms  p99 {:.1} ms  errors {}  server CPU {cpu_ms:.1} ms/req",
            body.len() as f64 / (1 << 20) as f64, r.rps, r.p50_ms, r.p99_ms, r.errors
        );
        rows.push(serde_json::json!({"case": label, "clients": big_clients, "bodyBytes": body.len(), "result": r, "serverCpuMillisPerRequest": cpu_ms}));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}
