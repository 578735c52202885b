//! `gpu-model-server`: serves one ONNX model over the Open Inference Protocol (KServe V2)
//! with dynamic batching. It listens before the model is loaded, so `/v2/health/live`
//! answers at once and `/v2/health/ready` turns true when the model is in.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use gpuctl_serving::grpc;
use gpuctl_serving::model::OnnxModel;
use gpuctl_serving::model_server::{self, ModelServer, ModelServerConfig};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Serve an ONNX model over the Open Inference Protocol (KServe V2)"
)]
struct Args {
    /// The ONNX file to serve.
    #[arg(long)]
    model: PathBuf,
    /// The model's name in URLs (/v2/models/NAME); defaults to the file name without .onnx.
    #[arg(long)]
    name: Option<String>,
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, env = "PORT", default_value_t = 8000)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    listen: String,
    /// Most rows (sum of batch dimensions) in one model run.
    #[arg(long, default_value_t = 8)]
    max_batch_size: usize,
    /// Longest a request waits for others to batch with, in milliseconds.
    #[arg(long, default_value_t = 5)]
    max_delay_ms: u64,
    /// Largest request body accepted (413 above it).
    #[arg(long, default_value_t = 16 << 20)]
    max_body_bytes: usize,
    /// Seconds a client may take to send a request's head (also the longest a
    /// keep-alive connection may sit idle) before the connection is closed.
    #[arg(long, default_value_t = 30)]
    header_read_timeout_secs: u64,
    /// Seconds a client may take to send a request's body before 408.
    #[arg(long, default_value_t = 60)]
    body_read_timeout_secs: u64,
    /// Model runs that may execute at once.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Threads one model run's matrix products may use (0: one per CPU core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Serve HTTPS with this PEM certificate (with --tls-key); plaintext without.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Also serve the V2 protocol over gRPC (`inference.GRPCInferenceService`) on
    /// this port (0 picks a free one and prints it), with the same TLS.
    #[arg(long, env = "GRPC_PORT")]
    grpc_port: Option<u16>,
    /// Serve plaintext HTTP on an address beyond this host (plaintext on
    /// loopback needs no flag).
    #[arg(long, conflicts_with = "tls_cert")]
    insecure: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            gpuctl_security::tls::TlsFiles {
                cert: Some(cert.clone()),
                key: Some(key.clone()),
                ca: None,
            }
            .load()?,
        ),
        _ => None,
    };
    let acceptor = tls.as_ref().map(|t| t.acceptor(None)).transpose()?;
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    if threads > 1 {
        tract_linalg::multithread::set_default_executor(
            tract_linalg::multithread::Executor::multithread(threads),
        );
    }
    let name = match args.name {
        Some(n) => n,
        None => args
            .model
            .file_stem()
            .and_then(|s| s.to_str())
            .context("--name is needed: the model file name is not valid UTF-8")?
            .to_string(),
    };
    let config = ModelServerConfig {
        max_batch_size: args.max_batch_size,
        max_delay: Duration::from_millis(args.max_delay_ms),
        max_body_bytes: args.max_body_bytes,
        instances: args.instances,
        header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
        body_read_timeout: Duration::from_secs(args.body_read_timeout_secs),
    };
    let addr = format!("{}:{}", args.listen, args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let server = ModelServer::new(&name, config);
    let local = listener.local_addr()?;
    if acceptor.is_none() && !local.ip().is_loopback() && !args.insecure {
        anyhow::bail!(
            "plaintext HTTP on {local} is reachable beyond this host: give --tls-cert and --tls-key, or --insecure"
        );
    }
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    println!("gpu-model-server: model {name} on {scheme}://{local}");
    let grpc = match args.grpc_port {
        Some(port) => {
            let addr = format!("{}:{port}", args.listen);
            let l = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("listening for gRPC on {addr}"))?;
            println!("gpu-model-server: gRPC on {}", l.local_addr()?);
            let (server, tls, limit) = (server.clone(), tls.clone(), args.max_body_bytes);
            Some(tokio::spawn(async move {
                let stop = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                grpc::serve(l, server, tls.as_ref(), limit, stop).await
            }))
        }
        None => None,
    };
    let path = args.model.clone();
    let model_name = name.clone();
    let model = tokio::task::spawn_blocking(move || OnnxModel::load(&path, &model_name));
    let serving = tokio::spawn(model_server::serve_with(
        listener,
        server.clone(),
        acceptor,
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    ));
    let model = model.await?.context("the model server cannot start")?;
    tracing::info!(model = %name, inputs = ?model.spec().inputs, outputs = ?model.spec().outputs, "model loaded; ready");
    server.set_model(model);
    serving.await?;
    if let Some(g) = grpc {
        g.await??;
    }
    Ok(())
}
