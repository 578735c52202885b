//! `gpu-scheduler`: one replica of gpuctl's control plane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use gpuctl_scheduler::api::auth::AuthOptions;
use gpuctl_scheduler::api::ServiceOptions;
use gpuctl_scheduler::controllers::ControllerOptions;
use gpuctl_scheduler::raft::RaftOptions;
use gpuctl_scheduler::server::{Config, Server};
use gpuctl_security::oidc::KeySet;
use gpuctl_security::oidc_discovery::{self, Discovery};

/// mimalloc instead of glibc's malloc: a replica allocates and frees small
/// objects (gRPC frames, jobs, log entries) on many threads at once, where
/// glibc's arenas spent about a sixth of its CPU (benches/RESULTS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// HTTPS address of the web UI (HTTP without TLS); off when not given.
    /// Sign in with a user's token (`gpuctl admin create-token`).
    #[arg(long, value_name = "ADDR")]
    ui_listen: Option<SocketAddr>,
    /// Write {"id","grpc","metrics","ui","pid"} here once the replica accepts writes.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Mark a node lost after this long without a heartbeat (e.g. 10s, 1500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    node_timeout: Duration,
    /// Interval node daemons are asked to heartbeat at.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// Most heartbeats per second the whole fleet is asked to send (0: no
    /// limit): a larger fleet is told a longer interval, and the node timeout
    /// grows to at least four of them (10,000 nodes: every 10 s, lost after 40 s).
    #[arg(long, default_value_t = gpuctl_scheduler::api::DEFAULT_HEARTBEATS_PER_SECOND)]
    heartbeats_per_second: u32,
    /// Every replica of the cluster, this one included: `1=127.0.0.1:7000,2=127.0.0.1:7002,3=...`.
    /// Leave out for a single replica.
    #[arg(long, value_parser = gpuctl_scheduler::raft::transport::parse_peers)]
    peers: Option<std::collections::BTreeMap<u64, String>>,
    /// Join an existing cluster instead of bootstrapping a new one: start
    /// empty and wait to be added with `gpuctl cluster add-peer ID ADDR`.
    #[arg(long)]
    join: bool,
    /// Compact the Raft log after this many applied entries, keeping the
    /// newest half for followers that fall behind (one further behind is
    /// sent a snapshot of the whole state).
    #[arg(long, default_value_t = gpuctl_scheduler::raft::DEFAULT_COMPACT_AFTER)]
    compact_after: u64,
    /// Answer every read barrier with a heartbeat round to a majority
    /// (Raft's ReadIndex), never on the leader's lease. Leases assume that
    /// the replicas' clocks advance at about the same rate.
    #[arg(long)]
    no_lease_reads: bool,
    /// File holding the bootstrap admin's token (user "admin", role admin);
    /// the scheduler keeps only its hash. Create users and their tokens with
    /// it (`gpuctl admin create-user`, `gpuctl admin create-token`).
    #[arg(long, value_name = "FILE", required_unless_present = "no_auth")]
    admin_token_file: Option<PathBuf>,
    /// Accept every caller as an anonymous admin, without a token (for
    /// benchmarks and tests; never on a shared network).
    #[arg(long, conflicts_with = "admin_token_file")]
    no_auth: bool,
    /// Also accept OpenID Connect ID tokens (JWTs) whose `iss` is this URL,
    /// as the Kubernetes API server's flag of the same name; the name they
    /// carry must be a gpuctl user (`gpuctl admin create-user`).
    #[arg(
        long,
        value_name = "URL",
        requires_all = ["oidc_client_id", "admin_token_file"]
    )]
    oidc_issuer_url: Option<String>,
    /// The audience an ID token must name (`aud`).
    #[arg(long, value_name = "ID", requires = "oidc_issuer_url")]
    oidc_client_id: Option<String>,
    /// The issuer's public keys, a JWKS document (its `jwks_uri` saved to a
    /// file; read at start, nothing is fetched). Without it the keys are
    /// fetched from the issuer (`URL/.well-known/openid-configuration`, then
    /// its `jwks_uri`; https only) and fetched again every 5 minutes and
    /// when a token names a key they lack.
    #[arg(long, value_name = "FILE", requires = "oidc_issuer_url")]
    oidc_jwks_file: Option<PathBuf>,
    /// The CAs that sign the issuer's HTTPS certificate (PEM), when its keys
    /// are fetched; default: the system's CA bundle.
    #[arg(
        long,
        value_name = "FILE",
        requires = "oidc_issuer_url",
        conflicts_with = "oidc_jwks_file"
    )]
    oidc_ca_file: Option<PathBuf>,
    /// The claim that names the user (`email` needs `email_verified` not false).
    #[arg(long, value_name = "CLAIM", default_value = "sub")]
    oidc_username_claim: String,
    /// Put before the claim's value to make the user name (e.g. `oidc:`).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    oidc_username_prefix: String,
    /// A claim an ID token must carry with this exact value, e.g. `hd=example.com`
    /// (repeat the flag for several).
    #[arg(long, value_name = "KEY=VALUE", requires = "oidc_issuer_url", value_parser = parse_claim)]
    oidc_required_claim: Vec<(String, String)>,
    /// The signature algorithms accepted, comma-separated (default: RS256,
    /// RS384, RS512, ES256, ES384).
    #[arg(long, value_name = "ALGS", requires = "oidc_issuer_url", value_delimiter = ',', value_parser = parse_alg)]
    oidc_signing_algs: Vec<String>,
    /// Encrypt Secret values at rest (in the Raft log, the stored state and
    /// snapshots) as this file says: a Kubernetes `EncryptionConfiguration`
    /// whose entry for `secrets` lists `aesgcm` keys (the first provider
    /// encrypts new values; every key decrypts) and optionally `identity`.
    /// Give every replica the same file.
    #[arg(long, value_name = "FILE")]
    encryption_provider_config: Option<PathBuf>,
    /// TLS for the gRPC port, calls to peers and node daemons, and /metrics.
    #[command(flatten)]
    tls: gpuctl_security::tls::TlsArgs,
    /// Serve /metrics and /healthz in plain HTTP although TLS is configured.
    #[arg(long)]
    metrics_insecure: bool,
    /// The IANA time zone of CronWorkflows without `timezone` (Argo: the
    /// controller's local zone); default: this process's (`TZ`, then
    /// /etc/localtime). Give every replica the same one.
    #[arg(long, value_name = "NAME", value_parser = parse_zone)]
    cron_timezone: Option<String>,
}

/// `--oidc-required-claim KEY=VALUE`.
fn parse_claim(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// One of `--oidc-signing-algs`.
fn parse_alg(s: &str) -> Result<String, String> {
    let supported = gpuctl_security::oidc::SIGNING_ALGS;
    supported
        .contains(&s.trim())
        .then(|| s.trim().to_string())
        .ok_or_else(|| format!("{s:?} is not supported (one of {})", supported.join(", ")))
}

/// `--cron-timezone`: a name the time zone database knows.
fn parse_zone(name: &str) -> Result<String, String> {
    gpuctl_pipelines::cron::time_zone(name)?;
    Ok(name.to_string())
}

/// The authentication settings from `--admin-token-file` / `--no-auth`,
/// and the issuer to fetch OIDC keys from when they are not in a file.
fn auth_options(args: &Args) -> anyhow::Result<(AuthOptions, Option<Discovery>)> {
    let Some(path) = &args.admin_token_file else {
        return Ok((AuthOptions::default(), None));
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--admin-token-file {}: cannot read it", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "--admin-token-file {}: the file is empty; put a token in it (e.g. one printed by `gpuctl admin create-token`, or any long random string)",
        path.display()
    );
    anyhow::ensure!(
        token.len() >= 16,
        "--admin-token-file {}: the token is {} characters; use at least 16",
        path.display(),
        token.len()
    );
    let mut opts = AuthOptions::with_admin_token(token);
    let mut discovery = None;
    if let (Some(issuer), Some(client_id)) = (&args.oidc_issuer_url, &args.oidc_client_id) {
        let keys = match &args.oidc_jwks_file {
            Some(jwks) => KeySet::new(
                gpuctl_security::oidc::read_jwks(jwks)
                    .map_err(|e| anyhow::anyhow!("--oidc-jwks-file {e}"))?,
            ),
            None => {
                discovery = Some(
                    Discovery::new(issuer, args.oidc_ca_file.as_deref())
                        .map_err(|e| anyhow::anyhow!("--oidc-issuer-url: {e}"))?,
                );
                KeySet::default()
            }
        };
        opts.oidc = Some(std::sync::Arc::new(gpuctl_security::oidc::OidcConfig {
            issuer: issuer.clone(),
            client_id: client_id.clone(),
            username_claim: args.oidc_username_claim.clone(),
            username_prefix: args.oidc_username_prefix.clone(),
            keys,
            required_claims: args.oidc_required_claim.clone(),
            signing_algs: args.oidc_signing_algs.clone(),
        }));
    }
    Ok((opts, discovery))
}

/// Install the keys of `--encryption-provider-config`, and say how Secret
/// values are stored.
fn encryption_at_rest(args: &Args) -> anyhow::Result<()> {
    use gpuctl_security::sealing;
    let Some(path) = &args.encryption_provider_config else {
        tracing::warn!(
            "Secret values are stored unencrypted; give --encryption-provider-config to encrypt them"
        );
        return Ok(());
    };
    let keys = sealing::Keyring::read(path)
        .map_err(|e| anyhow::anyhow!("--encryption-provider-config {e}"))?;
    match keys.write_key() {
        Some(k) => tracing::info!("Secret values are encrypted at rest with aesgcm key {k:?}"),
        None => tracing::warn!(
            "Secret values are stored unencrypted (the first provider of {} is identity); values encrypted before are still read",
            path.display()
        ),
    }
    sealing::install(keys).map_err(anyhow::Error::msg)
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
    if let Some(z) = &args.cron_timezone {
        gpuctl_scheduler::cron_zone::set_from_flag(z).map_err(anyhow::Error::msg)?;
    }
    tracing::info!(
        "CronWorkflows without timezone run in {}",
        gpuctl_scheduler::cron_zone::local()
            .iana_name()
            .unwrap_or("UTC")
    );
    let (auth, discovery) = auth_options(&args)?;
    // Stops the OIDC key fetcher when main returns.
    let (_stop_fetching, stop_rx) = tokio::sync::watch::channel(false);
    if let (Some(d), Some(cfg)) = (discovery, &auth.oidc) {
        tokio::spawn(oidc_discovery::keep_fresh(
            d,
            cfg.keys.clone(),
            oidc_discovery::Pace::default(),
            stop_rx,
        ));
    }
    encryption_at_rest(&args)?;
    let tls = args.tls.load()?;
    let grpc = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} for gRPC", args.listen))?;
    let metrics = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {} for metrics", args.metrics_listen))?;
    let ui = match args.ui_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} for the web UI (--ui-listen)"))?,
        ),
        None => None,
    };
    let ui_url = match &ui {
        Some(l) => Some(format!(
            "{}://{}/",
            if tls.is_some() { "https" } else { "http" },
            l.local_addr()?
        )),
        None => None,
    };
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
            lease_reads: !args.no_lease_reads,
            ..Default::default()
        },
        service: ServiceOptions {
            heartbeat_interval: args.heartbeat_interval,
            heartbeats_per_second: args.heartbeats_per_second,
            auth,
            metrics_insecure: args.metrics_insecure,
            ..Default::default()
        },
        controller: ControllerOptions {
            node_timeout: args.node_timeout,
            ..Default::default()
        },
        tls: tls.clone(),
    };
    let metrics_scheme = if cfg.tls.is_some() && !args.metrics_insecure {
        "https"
    } else {
        "http"
    };
    let mut server = Server::start(cfg, grpc, metrics).await.with_context(|| {
        format!(
            "cannot start the scheduler on data folder {}",
            args.data_dir.display()
        )
    })?;
    if let Some(l) = ui {
        server.serve_ui(l, tls.as_ref())?;
    }
    // A joining replica has no leader until the cluster adds it.
    if !args.join && !server.wait_leader(Duration::from_secs(30)).await {
        anyhow::bail!("replica {} found no leader within 30s", args.id);
    }
    println!("gpu-scheduler {}: gRPC on {grpc_addr}, metrics on {metrics_scheme}://{metrics_addr}/metrics, data in {}", args.id, args.data_dir.display());
    if let Some(u) = &ui_url {
        println!("gpu-scheduler {}: web UI on {u}", args.id);
    }
    if let Some(path) = &args.ready_file {
        let body = serde_json::json!({
            "id": args.id,
            "grpc": grpc_addr.to_string(),
            "metrics": metrics_addr.to_string(),
            "ui": ui_url,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("gpu-scheduler").chain(extra.iter().copied()))
    }

    #[test]
    fn authentication_must_be_chosen_explicitly() {
        let e = parse(&[]).unwrap_err().to_string();
        assert!(e.contains("--admin-token-file <FILE>"), "{e}");
        assert!(parse(&["--no-auth", "--admin-token-file", "x"]).is_err());
        let open = parse(&["--no-auth"]).unwrap();
        assert!(!auth_options(&open).unwrap().0.enabled);
    }

    #[test]
    fn oidc_flags_come_together_and_the_keys_file_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let admin = dir.path().join("admin.token");
        std::fs::write(&admin, "0123456789abcdef0123").unwrap();
        let jwks = dir.path().join("jwks.json");
        let admin_s = admin.to_str().unwrap();
        let jwks_s = jwks.to_str().unwrap();
        let e = parse(&[
            "--admin-token-file",
            admin_s,
            "--oidc-issuer-url",
            "https://idp",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--oidc-client-id"), "{e}");
        assert!(parse(&["--no-auth", "--oidc-client-id", "gpuctl"]).is_err());
        let full = [
            "--admin-token-file",
            admin_s,
            "--oidc-issuer-url",
            "https://idp",
            "--oidc-client-id",
            "gpuctl",
            "--oidc-jwks-file",
            jwks_s,
        ];
        let e = auth_options(&parse(&full).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("--oidc-jwks-file {jwks_s}: ")),
            "{e}"
        );
        std::fs::write(&jwks, r#"{"keys": []}"#).unwrap();
        let e = auth_options(&parse(&full).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("no RSA or EC signing key in \"keys\""), "{e}");
        let signer = gpuctl_testkit::oidc::IdTokenSigner::new("k1");
        std::fs::write(&jwks, gpuctl_testkit::oidc::IdTokenSigner::jwks(&[&signer])).unwrap();
        let (opts, discovery) = auth_options(&parse(&full).unwrap()).unwrap();
        assert!(discovery.is_none(), "keys from the file");
        // Without a keys file they are fetched from the issuer, over https only.
        let fetched = |issuer: &str, ca: &str| {
            let mut a = vec!["--admin-token-file", admin_s, "--oidc-issuer-url", issuer];
            a.extend(["--oidc-client-id", "gpuctl", "--oidc-ca-file", ca]);
            auth_options(&parse(&a).unwrap())
        };
        let ca = dir.path().join("ca.pem");
        let ca_s = ca.to_str().unwrap();
        let e = fetched("http://idp", ca_s).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "--oidc-issuer-url: the issuer URL \"http://idp\" must start with https://"
            ),
            "{e}"
        );
        let e = fetched("https://idp", ca_s).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("--oidc-issuer-url: {ca_s}: ")),
            "{e}"
        );
        let dev_ca = gpuctl_security::ca::ensure_dev(&dir.path().join("tls")).unwrap();
        let (o, d) = fetched("https://idp", dev_ca.ca.to_str().unwrap()).unwrap();
        assert!(d.is_some() && o.oidc.unwrap().keys.get().is_empty());
        assert!(
            parse(&[&full[..], &["--oidc-ca-file", ca_s]].concat()).is_err(),
            "a file or a fetch"
        );
        let cfg = opts.oidc.expect("configured");
        assert!(cfg.required_claims.is_empty() && cfg.signing_algs.is_empty());
        let narrowed = [
            &full[..],
            &[
                "--oidc-required-claim",
                "hd=example.com",
                "--oidc-signing-algs",
                "ES256,RS256",
            ],
        ]
        .concat();
        let (o, _) = auth_options(&parse(&narrowed).unwrap()).unwrap();
        let c = o.oidc.unwrap();
        assert_eq!(
            c.required_claims,
            vec![("hd".to_string(), "example.com".to_string())]
        );
        assert_eq!(
            c.signing_algs,
            vec!["ES256".to_string(), "RS256".to_string()]
        );
        let e = parse(&[&full[..], &["--oidc-signing-algs", "HS256"]].concat())
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"HS256\" is not supported"), "{e}");
        let e = parse(&[&full[..], &["--oidc-required-claim", "hd"]].concat())
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected KEY=VALUE"), "{e}");
        assert_eq!(
            (cfg.issuer.as_str(), cfg.username_claim.as_str()),
            ("https://idp", "sub")
        );
    }

    #[test]
    fn an_encryption_configuration_is_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("encryption.yaml");
        let f_s = f.to_str().unwrap();
        let args = parse(&["--no-auth", "--encryption-provider-config", f_s]).unwrap();
        let e = encryption_at_rest(&args).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "--encryption-provider-config {f_s}: cannot read it"
            )),
            "{e}"
        );
        std::fs::write(
            &f,
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources: []\n",
        )
        .unwrap();
        let e = encryption_at_rest(&args).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("--encryption-provider-config {f_s}: resources: no entry names secrets")
        );
    }

    #[test]
    fn a_cron_timezone_must_be_a_known_zone() {
        let e = parse(&["--no-auth", "--cron-timezone", "Mars/Olympus"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--cron-timezone") && e.contains("unknown time zone \"Mars/Olympus\""),
            "{e}"
        );
        let ok = parse(&["--no-auth", "--cron-timezone", "Asia/Tokyo"]).unwrap();
        assert_eq!(ok.cron_timezone.as_deref(), Some("Asia/Tokyo"));
    }

    #[test]
    fn the_admin_token_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        let args =
            |p: &std::path::Path| parse(&["--admin-token-file", p.to_str().unwrap()]).unwrap();
        let e = auth_options(&args(&path)).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "--admin-token-file {}: cannot read it",
                path.display()
            )),
            "{e}"
        );
        std::fs::write(&path, "\n").unwrap();
        let e = auth_options(&args(&path)).unwrap_err().to_string();
        assert!(e.contains("the file is empty"), "{e}");
        std::fs::write(&path, "short\n").unwrap();
        let e = auth_options(&args(&path)).unwrap_err().to_string();
        assert!(
            e.ends_with("the token is 5 characters; use at least 16"),
            "{e}"
        );
        std::fs::write(&path, "a-long-enough-admin-secret\n").unwrap();
        let (opts, _) = auth_options(&args(&path)).unwrap();
        assert!(opts.enabled);
        assert_eq!(
            opts.admin_token_hash,
            Some(gpuctl_security::token::hash("a-long-enough-admin-secret"))
        );
    }
}
