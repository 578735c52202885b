//! A `gpuctl dev` cluster for the scenario drivers: started in a folder the
//! driver chooses, found through the context it writes, and stopped with
//! SIGINT as Ctrl-C would (on [`Dev::stop`] or when dropped).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long `gpuctl dev` gets to write its context.
const READY_WITHIN: Duration = Duration::from_secs(120);
/// How long it gets to stop after SIGINT before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// A binary built next to the running one (`cargo build --release --bins`).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().context("the binary's folder")?.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        bail!(
            "{} not found next to {}: run `cargo build --release --bins` first",
            name,
            exe.display()
        )
    }
}

/// Whether a `gpuctl dev` cluster runs with TLS and tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `gpuctl dev` as users run it: TLS everywhere, a token on every call.
    On,
    /// `--insecure --no-auth`: plaintext, no tokens (what the earlier
    /// figures measured).
    Off,
}

impl Security {
    pub fn label(self) -> &'static str {
        match self {
            Security::On => "TLS + tokens",
            Security::Off => "plaintext, no auth",
        }
    }
}

/// Sends the context's token on every call.
#[derive(Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A `Control` client that sends the context's token.
pub type ControlClient = gpuctl_proto::v1::control_client::ControlClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerToken>,
>;

/// Connects `Control` clients to a running `gpuctl dev` (its context's
/// CA and token); cheap to clone into tasks.
#[derive(Clone)]
pub struct Dialer {
    context: serde_json::Value,
}

impl Dialer {
    /// A `Control` client of the scheduler replica at `server`, over TLS
    /// with the context's CA when the cluster speaks it, sending the
    /// context's token.
    pub async fn control_at(&self, server: &str) -> anyhow::Result<ControlClient> {
        let server = server.to_string();
        let tls = match self.context["ca"].as_str() {
            Some(ca) => Some(
                gpuctl_security::tls::TlsFiles {
                    ca: Some(ca.into()),
                    ..Default::default()
                }
                .load()?,
            ),
            None => None,
        };
        let channel = gpuctl_security::tls::endpoint_for_url(&server, tls.as_ref())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to {server}"))?;
        let token = match self.context["token"].as_str() {
            Some(t) => Some(format!("Bearer {t}").parse()?),
            None => None,
        };
        Ok(
            gpuctl_proto::v1::control_client::ControlClient::with_interceptor(
                channel,
                BearerToken(token),
            ),
        )
    }
}

/// A running `gpuctl dev`.
pub struct Dev {
    child: Option<Child>,
    gpuctl: PathBuf,
    root: PathBuf,
    context: serde_json::Value,
}

impl Dev {
    /// Start `gpuctl dev --insecure --no-auth ARGS` (see
    /// [`Security::Off`]) under `root`, and wait until it is ready.
    pub fn start(root: &Path, args: &[&str]) -> anyhow::Result<Dev> {
        Dev::start_with(root, args, Security::Off)
    }

    /// Start `gpuctl dev ARGS` with its state, configuration and log
    /// (`dev.log`) under `root`, TLS and tokens as `security` says, and
    /// wait until it is ready.
    pub fn start_with(root: &Path, args: &[&str], security: Security) -> anyhow::Result<Dev> {
        let gpuctl = sibling("gpuctl")?;
        std::fs::create_dir_all(root)?;
        let log = std::fs::File::create(root.join("dev.log"))?;
        let child = Command::new(&gpuctl)
            .arg("dev")
            .args(match security {
                Security::On => &[][..],
                Security::Off => &["--insecure", "--no-auth"][..],
            })
            .arg("--state-dir")
            .arg(root.join("state"))
            .args(args)
            .env("GPUCTL_CONFIG_DIR", root.join("config"))
            .env_remove("GPUCTL_SERVER")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting gpuctl dev")?;
        let mut dev = Dev {
            child: Some(child),
            gpuctl,
            root: root.to_path_buf(),
            context: serde_json::Value::Null,
        };
        let file = dev.config().join("context.json");
        let deadline = Instant::now() + READY_WITHIN;
        while !file.exists() {
            if let Some(Ok(Some(status))) = dev.child.as_mut().map(Child::try_wait) {
                bail!("gpuctl dev exited ({status}); see {}", dev.log().display());
            }
            if Instant::now() > deadline {
                bail!(
                    "gpuctl dev did not become ready; see {}",
                    dev.log().display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        dev.context = serde_json::from_slice(&std::fs::read(&file)?)
            .with_context(|| format!("reading {}", file.display()))?;
        Ok(dev)
    }

    /// The folder `gpuctl` finds the cluster through (`GPUCTL_CONFIG_DIR`).
    pub fn config(&self) -> PathBuf {
        self.root.join("config")
    }

    pub fn log(&self) -> PathBuf {
        self.root.join("dev.log")
    }

    /// A URL from the context `gpuctl dev` wrote: `server` (the scheduler's
    /// gRPC address) or `gateway`.
    pub fn url(&self, key: &str) -> anyhow::Result<String> {
        self.context[key]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no {key} in the context: {}", self.context))
    }

    /// A `Control` client of the first scheduler, over TLS with the
    /// context's CA when the cluster speaks it, sending the context's token.
    pub async fn control(&self) -> anyhow::Result<ControlClient> {
        self.control_at(&self.first_server()?).await
    }

    /// The URL of the first scheduler replica.
    pub fn first_server(&self) -> anyhow::Result<String> {
        let server = self.url("server")?;
        Ok(server.split(',').next().unwrap_or_default().to_string())
    }

    /// [`Dev::control`] for the scheduler replica at `server`.
    pub async fn control_at(&self, server: &str) -> anyhow::Result<ControlClient> {
        self.dialer().control_at(server).await
    }

    /// What connects `Control` clients to this cluster, for other tasks.
    pub fn dialer(&self) -> Dialer {
        Dialer {
            context: self.context.clone(),
        }
    }

    /// Run `gpuctl ARGS` against the cluster; its stdout, or an error with
    /// its output.
    pub fn gpuctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.gpuctl)
            .args(args)
            .env("GPUCTL_CONFIG_DIR", self.config())
            .env_remove("GPUCTL_SERVER")
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "gpuctl {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stop it as Ctrl-C does (killed if it takes longer than 20 s).
    pub fn stop(mut self) {
        self.interrupt();
    }

    fn interrupt(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        stop_child(&mut child, nix::sys::signal::Signal::SIGINT, STOP_WITHIN);
    }
}

/// Send `signal` to `child`, wait up to `grace` for it to exit, then kill it;
/// it is reaped either way.
pub fn stop_child(
    child: &mut std::process::Child,
    signal: nix::sys::signal::Signal,
    grace: Duration,
) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Dev {
    fn drop(&mut self) {
        self.interrupt();
    }
}
