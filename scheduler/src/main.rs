//! `gpu-scheduler`: one replica of gpuctl's control plane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use gpuctl_scheduler::api::ServiceOptions;
use gpuctl_scheduler::controllers::ControllerOptions;
use gpuctl_scheduler::raft::RaftOptions;
use gpuctl_scheduler::server::{Config, Server};

#[derive(Parser, Debug)]
#[command(
    name = "gpu-scheduler",
    version,
    about = "gpuctl control plane replica: Raft over RocksDB, placement and the gRPC API"
)]
struct Args {
    /// Raft id of this replica.
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// Folder holding this replica's RocksDB (Raft log and state).
    #[arg(long, default_value = "gpuctl-scheduler-data")]
    data_dir: PathBuf,
    /// gRPC address for the CLI and node daemons.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// HTTP address for /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:7001")]
    metrics_listen: SocketAddr,
    /// Write {"id","grpc","metrics","pid"} here once the replica accepts writes.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Mark a node lost after this long without a heartbeat (e.g. 10s, 1500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    node_timeout: Duration,
    /// Interval node daemons are asked to heartbeat at.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// Every replica of the cluster, this one included: `1=127.0.0.1:7000,2=127.0.0.1:7002,3=...`.
    /// Leave out for a single replica.
    #[arg(long, value_parser = gpuctl_scheduler::raft::transport::parse_peers)]
    peers: Option<std::collections::BTreeMap<u64, String>>,
    /// Join an existing cluster instead of bootstrapping a new one: start
    /// empty and wait to be added with `gpuctl cluster add-peer ID ADDR`.
    #[arg(long)]
    join: bool,
    /// Compact the Raft log after this many applied entries.
    #[arg(long, default_value_t = 10_000)]
    compact_after: u64,
    /// TLS for the gRPC port and for calls to peers and node daemons.
    #[command(flatten)]
    tls: gpuctl_security::tls::TlsArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 10s, 500ms, 2m)"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("duration must be positive, got {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,raft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let tls = args.tls.load()?;
    let grpc = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} for gRPC", args.listen))?;
    let metrics = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {} for metrics", args.metrics_listen))?;
    let grpc_addr = grpc.local_addr()?;
    let metrics_addr = metrics.local_addr()?;
    let cfg = Config {
        id: args.id,
        peers: args
            .peers
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(id, addr)| (id, gpuctl_security::tls::url(&addr, tls.is_some())))
            .collect(),
        data_dir: args.data_dir.clone(),
        raft: RaftOptions {
            id: args.id,
            join: args.join,
            compact_after: args.compact_after.max(100),
            ..Default::default()
        },
        service: ServiceOptions {
            heartbeat_interval: args.heartbeat_interval,
            ..Default::default()
        },
        controller: ControllerOptions {
            node_timeout: args.node_timeout,
            ..Default::default()
        },
        tls,
    };
    let server = Server::start(cfg, grpc, metrics).await.with_context(|| {
        format!(
            "cannot start the scheduler on data folder {}",
            args.data_dir.display()
        )
    })?;
    // A joining replica has no leader until the cluster adds it.
    if !args.join && !server.wait_leader(Duration::from_secs(30)).await {
        anyhow::bail!("replica {} found no leader within 30s", args.id);
    }
    println!("gpu-scheduler {}: gRPC on {grpc_addr}, metrics on http://{metrics_addr}/metrics, data in {}", args.id, args.data_dir.display());
    if let Some(path) = &args.ready_file {
        let body = serde_json::json!({
            "id": args.id,
            "grpc": grpc_addr.to_string(),
            "metrics": metrics_addr.to_string(),
            "pid": std::process::id(),
        });
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, body.to_string())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut check = tokio::time::interval(Duration::from_millis(200));
    let raft_died = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break false,
            _ = term.recv() => break false,
            _ = check.tick() => if !server.raft_alive() { break true },
        }
    };
    if raft_died {
        // Without its Raft thread the replica can only refuse calls: exit so
        // that a supervisor notices and restarts it.
        tracing::error!("the Raft thread stopped (see the errors above); exiting");
        server.shutdown().await;
        std::process::exit(70);
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}
