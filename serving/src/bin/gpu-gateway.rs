//! `gpu-gateway`: the inference gateway. With `--server` it follows the scheduler
//! (endpoints, ready replicas, scale-up from zero, load reports, drains); with
//! `--endpoint NAME=URL1,URL2` it serves static routes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use gpuctl_serving::cluster::{self, ClusterConfig};
use gpuctl_serving::gateway::{self, Gateway, GatewayConfig, NoScaleUp, ScaleUp};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Route Open Inference Protocol requests to model-server replicas"
)]
struct Args {
    /// An endpoint and its replicas: NAME=URL1,URL2 (repeat for more endpoints). An
    /// endpoint with no URLs (NAME=) holds requests until the timeout.
    #[arg(long = "endpoint", value_name = "NAME=URL1,URL2")]
    endpoints: Vec<String>,
    /// Scheduler gRPC addresses to follow (comma-separated, tried in turn), e.g.
    /// http://127.0.0.1:7000. Endpoints and their replicas come from there.
    #[arg(long, env = "GPUCTL_SERVER", value_delimiter = ',')]
    server: Vec<String>,
    /// Where to write {"http": ADDR, "metrics": URL, "pid": PID} once listening.
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    listen: String,
    /// Largest request body forwarded (413 above it).
    #[arg(long, default_value_t = 16 << 20)]
    max_body_bytes: usize,
    /// Requests held per endpoint while it has no replica (503 beyond).
    #[arg(long, default_value_t = 100)]
    queue_capacity: usize,
    /// Seconds a held request waits for a replica before 503.
    #[arg(long, default_value_t = 60)]
    cold_start_timeout_secs: u64,
    /// The same in milliseconds (overrides --cold-start-timeout-secs).
    #[arg(long)]
    cold_start_timeout_ms: Option<u64>,
}

fn parse_endpoint(s: &str) -> anyhow::Result<(String, Vec<String>)> {
    let Some((name, urls)) = s.split_once('=') else {
        bail!("--endpoint {s:?}: expected NAME=URL1,URL2");
    };
    if name.is_empty() {
        bail!("--endpoint {s:?}: the endpoint name is empty");
    }
    let urls: Vec<String> = urls
        .split(',')
        .filter(|u| !u.is_empty())
        .map(|u| {
            if u.starts_with("http://") {
                Ok(u.to_string())
            } else {
                bail!("--endpoint {s:?}: replica {u:?} must be an http:// URL")
            }
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((name.to_string(), urls))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = GatewayConfig {
        max_body_bytes: args.max_body_bytes,
        queue_capacity: args.queue_capacity,
        cold_start_timeout: args
            .cold_start_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_secs(args.cold_start_timeout_secs)),
        ..GatewayConfig::default()
    };
    let (wake_tx, wake_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let scale_up: Arc<dyn ScaleUp> = if args.server.is_empty() {
        Arc::new(NoScaleUp)
    } else {
        Arc::new(wake_tx)
    };
    let gw = Gateway::new(config, scale_up);
    for e in &args.endpoints {
        let (name, urls) = parse_endpoint(e)?;
        println!("endpoint {name}: {}", urls.join(", "));
        gw.set_replicas(&name, urls);
    }
    let addr = format!("{}:{}", args.listen, args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    println!("gpu-gateway on http://{local}");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let follower = if args.server.is_empty() {
        None
    } else {
        println!("following scheduler(s) {}", args.server.join(", "));
        let cfg = ClusterConfig {
            servers: args.server.clone(),
            ..ClusterConfig::default()
        };
        Some(tokio::spawn(cluster::run(
            gw.clone(),
            cfg,
            wake_rx,
            stopped(stop_rx.clone()),
        )))
    };
    if let Some(path) = &args.ready_file {
        let doc = serde_json::json!({
            "http": local.to_string(),
            "url": format!("http://{local}"),
            "metrics": format!("http://{local}/metrics"),
            "pid": std::process::id(),
        });
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, doc.to_string())
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing the ready file {path:?}"))?;
    }
    let server = tokio::spawn(gateway::serve(listener, gw, stopped(stop_rx)));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some(f) = follower {
        if let Ok(Err(e)) = f.await {
            tracing::warn!("following the scheduler: {e}");
        }
    }
    Ok(())
}
