//! `gpu-gateway`: the inference gateway. With `--server` it follows the scheduler
//! (endpoints, ready replicas, scale-up from zero, load reports, drains); with
//! `--endpoint NAME=URL1,URL2` it serves static routes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use gpuctl_serving::cluster::{self, ClusterConfig};
use gpuctl_serving::gateway::{self, Gateway, GatewayConfig, NoScaleUp, ScaleUp};
use gpuctl_serving::grpc;

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
    /// Also serve the V2 protocol over gRPC (`inference.GRPCInferenceService`,
    /// routed by model name like HTTP) on this port of --listen; 0 picks a free
    /// one. With --tls-cert it is TLS too.
    #[arg(long, env = "GRPC_PORT")]
    grpc_port: Option<u16>,
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
    /// Seconds a replica may take to answer a forwarded request (its response head,
    /// and the body when it is read whole) before the client gets 504. A streamed
    /// body may then take as long as it takes.
    #[arg(long, default_value_t = 300)]
    response_timeout_secs: u64,
    /// Seconds a client may take to send a request's head (also the longest a
    /// keep-alive connection may sit idle) before the connection is closed.
    #[arg(long, default_value_t = 30)]
    header_read_timeout_secs: u64,
    /// Seconds a client may take to send a request's body before 408.
    #[arg(long, default_value_t = 60)]
    body_read_timeout_secs: u64,
    /// Threads that serve requests, each with its own event loop and its own
    /// listening socket on the port (SO_REUSEPORT), as nginx's workers do;
    /// 0: one per CPU core.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// File holding the bearer token the gateway calls the scheduler with
    /// (a user with role gateway: `gpuctl admin create-user gw --role gateway`,
    /// then `gpuctl admin create-token --user gw`).
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    /// HTTPS for clients, and TLS to the scheduler (presenting --tls-cert).
    #[command(flatten)]
    tls: gpuctl_security::tls::TlsArgs,
}

/// `workers` sockets listening on `addr` together (SO_REUSEPORT; the kernel
/// spreads connections over them), as std listeners for each worker's own
/// runtime. With port 0 the first picks the port and the others join it.
async fn listeners(addr: &str, workers: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let mut at = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    let mut out = Vec::new();
    for _ in 0..workers.max(1) {
        let socket = if at.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket
            .bind(at)
            .with_context(|| format!("listening on {at}"))?;
        let l = socket.listen(1024)?;
        at = l.local_addr()?;
        out.push(l.into_std()?);
    }
    Ok(out)
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
    let tls = args.tls.load()?;
    let acceptor = match &tls {
        Some(t) => Some(t.acceptor(None)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let config = GatewayConfig {
        max_body_bytes: args.max_body_bytes,
        queue_capacity: args.queue_capacity,
        cold_start_timeout: args
            .cold_start_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_secs(args.cold_start_timeout_secs)),
        response_timeout: Duration::from_secs(args.response_timeout_secs),
        header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
        body_read_timeout: Duration::from_secs(args.body_read_timeout_secs),
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
    let workers = match args.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let listeners = listeners(&addr, workers).await?;
    let local = listeners[0].local_addr()?;
    println!("gpu-gateway on {scheme}://{local}");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let follower = if args.server.is_empty() {
        None
    } else {
        println!("following scheduler(s) {}", args.server.join(", "));
        let token = match &args.token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("--token-file {}: cannot read it", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let cfg = ClusterConfig {
            servers: args.server.clone(),
            token,
            tls: tls.clone(),
            ..ClusterConfig::default()
        };
        Some(tokio::spawn(cluster::run(
            gw.clone(),
            cfg,
            wake_rx,
            stopped(stop_rx.clone()),
        )))
    };
    let grpc = match args.grpc_port {
        Some(port) => {
            let addr = format!("{}:{port}", args.listen);
            let l = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("listening for gRPC on {addr}"))?;
            let at = l.local_addr()?;
            println!("gpu-gateway: gRPC on {at}");
            let (gw, tls, limit) = (gw.clone(), tls.clone(), args.max_body_bytes);
            let stop = stopped(stop_rx.clone());
            let task = tokio::spawn(async move {
                grpc::serve(l, gw, tls.as_ref(), limit.saturating_add(64 << 10), stop).await
            });
            Some((at, task))
        }
        None => None,
    };
    if let Some(path) = &args.ready_file {
        let doc = serde_json::json!({
            "grpc": grpc.as_ref().map(|(at, _)| at.to_string()),
            "http": local.to_string(),
            "url": format!("{scheme}://{local}"),
            "metrics": format!("{scheme}://{local}/metrics"),
            "pid": std::process::id(),
        });
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, doc.to_string())
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing the ready file {path:?}"))?;
    }
    // Each worker serves on a single-threaded runtime of its own: a request,
    // its upstream connection and its reply stay on one thread.
    let mut servers = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let (gw, rx, acceptor) = (gw.clone(), stop_rx.clone(), acceptor.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        servers.push(
            std::thread::Builder::new()
                .name(format!("gateway-worker-{i}"))
                .spawn(move || -> anyhow::Result<()> {
                    rt.block_on(async move {
                        let l = tokio::net::TcpListener::from_std(l)?;
                        gateway::serve_with(l, gw, acceptor, stopped(rx)).await;
                        Ok(())
                    })
                })?,
        );
    }
    let server = tokio::task::spawn_blocking(move || {
        for s in servers {
            match s.join() {
                Ok(Err(e)) => tracing::error!("gateway worker: {e}"),
                Err(_) => tracing::error!("a gateway worker panicked"),
                Ok(Ok(())) => {}
            }
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some((_, task)) = grpc {
        if let Ok(Err(e)) = task.await {
            tracing::warn!("gRPC server: {e}");
        }
    }
    if let Some(f) = follower {
        if let Ok(Err(e)) = f.await {
            tracing::warn!("following the scheduler: {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn workers_share_one_port() {
        let ls = listeners("127.0.0.1:0", 3).await.unwrap();
        assert_eq!(ls.len(), 3);
        let port = ls[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
        // Connections to the port are accepted (by one of them).
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let err = listeners("256.0.0.1:80", 1).await.unwrap_err();
        assert!(err.to_string().contains("256.0.0.1:80"), "{err}");
    }

    #[test]
    fn endpoints_parse() {
        let (name, urls) = parse_endpoint("up=http://a:1,http://b:2").unwrap();
        assert_eq!(name, "up");
        assert_eq!(urls, ["http://a:1", "http://b:2"]);
        assert!(parse_endpoint("up").is_err());
        assert!(parse_endpoint("=http://a:1").is_err());
        assert!(parse_endpoint("up=ftp://a").is_err());
    }
}
