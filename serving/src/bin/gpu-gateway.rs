//! `gpu-gateway`: the inference gateway with static routes for now
//! (`--endpoint NAME=URL1,URL2`); learning replicas from the scheduler comes later.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use gpuctl_serving::gateway::{self, Gateway, GatewayConfig, NoScaleUp};

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
        cold_start_timeout: Duration::from_secs(args.cold_start_timeout_secs),
        ..GatewayConfig::default()
    };
    let gw = Gateway::new(config, Arc::new(NoScaleUp));
    for e in &args.endpoints {
        let (name, urls) = parse_endpoint(e)?;
        println!("endpoint {name}: {}", urls.join(", "));
        gw.set_replicas(&name, urls);
    }
    let addr = format!("{}:{}", args.listen, args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    println!("gpu-gateway on http://{}", listener.local_addr()?);
    gateway::serve(listener, gw, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
