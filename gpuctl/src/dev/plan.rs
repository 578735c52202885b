//! What `gpuctl dev` will start, resolved from the flags before anything
//! runs: the state dir's layout, every child's command line, the scheduler
//! replicas' ports (kept in `replicas.json` across runs), and where the
//! binaries are.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cli::{DevFlags, TaskIsolation};
use crate::config::{self, EnvVars};
use crate::error::{Error, Result};

/// GPUs of each node when `--gpus` is not given.
pub const DEFAULT_GPUS: &str = "8xA100-80GB";
/// The file in the state dir that keeps the replicas' ids and ports.
pub const REPLICAS_FILE: &str = "replicas.json";

/// Check `--replicas`: a Raft majority needs an odd number of voters.
pub fn validate_replicas(n: u32) -> Result<u32> {
    match n {
        1 | 3 | 5 => Ok(n),
        _ => Err(Error::Usage(format!(
            "--replicas must be 1, 3 or 5 (a Raft control plane needs an odd number of voters), not {n}"
        ))),
    }
}

/// The scheduler replicas of a state dir, as kept in `replicas.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPlan {
    pub replicas: u32,
    pub schedulers: Vec<ReplicaPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPort {
    pub id: u64,
    /// gRPC port on 127.0.0.1 (0: any free port, for a single replica).
    pub port: u16,
    /// Web UI port on 127.0.0.1, kept so that a replica restarted by
    /// `gpuctl dev` serves its UI at the same URL (0: any free port, for a
    /// single replica, which is never restarted).
    #[serde(default)]
    pub ui_port: u16,
}

impl ReplicaPlan {
    pub fn ports(&self) -> Vec<u16> {
        self.schedulers.iter().map(|s| s.port).collect()
    }
    pub fn ui_ports(&self) -> Vec<u16> {
        self.schedulers.iter().map(|s| s.ui_port).collect()
    }
}

/// `n` free ports on 127.0.0.1, all different (every listener is held until
/// all are chosen).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io("cannot find a free port on 127.0.0.1", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io("cannot find a free port on 127.0.0.1", e))
}

/// Give every replica of a multi-replica plan a web UI port: the one kept
/// in `replicas.json` while it is free, else a new free one (a UI port in
/// use is no reason to refuse the cluster, unlike a Raft port).
fn plan_ui_ports(plan: &mut ReplicaPlan) -> Result<()> {
    if plan.replicas == 1 {
        return Ok(());
    }
    let taken: Vec<usize> = (0..plan.schedulers.len())
        .filter(|&i| {
            let p = plan.schedulers[i].ui_port;
            p == 0 || plan.ports().contains(&p) || port_free(p).is_err()
        })
        .collect();
    let fresh = free_ports(taken.len())?;
    for (i, port) in taken.into_iter().zip(fresh) {
        plan.schedulers[i].ui_port = port;
    }
    Ok(())
}

/// The replica count a state dir was made for: `replicas.json`, else 1 when
/// it holds a scheduler data dir from before that file existed.
pub fn saved_replica_plan(state_dir: &Path) -> Result<Option<ReplicaPlan>> {
    let path = state_dir.join(REPLICAS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::Other(format!(
                "{} is not a gpuctl replica plan ({e}); fix it, or use a new --state-dir",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let legacy = state_dir.join("scheduler-1");
            let used = std::fs::read_dir(&legacy).is_ok_and(|mut d| d.next().is_some());
            Ok(used.then(|| ReplicaPlan {
                replicas: 1,
                schedulers: vec![ReplicaPort {
                    id: 1,
                    port: 0,
                    ui_port: 0,
                }],
            }))
        }
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

/// Whether 127.0.0.1:`port` can be listened on now; the error when not.
fn port_free(port: u16) -> std::result::Result<(), std::io::Error> {
    std::net::TcpListener::bind(("127.0.0.1", port)).map(drop)
}

/// Choose the replicas' ports: those saved for this state dir (which must be
/// free again), else `flag_port`, `flag_port + 1`, …, else free ports picked
/// by the kernel. A single replica keeps today's behaviour: its port is
/// `--scheduler-port` (0: any) on every run.
pub fn plan_ports(
    n: u32,
    flag_port: u16,
    saved: Option<&ReplicaPlan>,
    state_dir: &Path,
) -> Result<ReplicaPlan> {
    if let Some(p) = saved {
        if p.replicas != n {
            return Err(Error::Usage(format!(
                "{} holds a {}-replica control plane (Raft keeps its membership on disk), so it cannot run with --replicas {n}; \
                 run with --replicas {} to use it, or pass a new --state-dir to start a {n}-replica cluster",
                state_dir.display(),
                p.replicas,
                p.replicas
            )));
        }
    }
    if n == 1 {
        return Ok(ReplicaPlan {
            replicas: 1,
            schedulers: vec![ReplicaPort {
                id: 1,
                port: flag_port,
                ui_port: 0,
            }],
        });
    }
    let taken = |id: u64, port: u16, e: std::io::Error, whence: &str| {
        Error::Other(format!(
            "port {port} of scheduler replica {id} ({whence}) is in use: {e}; \
             stop whatever listens there, or start a fresh cluster with a new --state-dir"
        ))
    };
    if let Some(p) = saved {
        let ports = p.ports();
        if flag_port != 0 && flag_port != ports[0] {
            return Err(Error::Usage(format!(
                "the replicas in {} listen on ports {}; leave out --scheduler-port or pass --scheduler-port {}",
                state_dir.display(),
                join_ports(&ports),
                ports[0]
            )));
        }
        let whence = format!("kept in {}", state_dir.join(REPLICAS_FILE).display());
        for s in &p.schedulers {
            port_free(s.port).map_err(|e| taken(s.id, s.port, e, &whence))?;
        }
        let mut p = p.clone();
        plan_ui_ports(&mut p)?;
        return Ok(p);
    }
    let ports: Vec<u16> = if flag_port != 0 {
        let ports: Vec<u16> = (0..n)
            .map(|i| flag_port.checked_add(i as u16))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--scheduler-port {flag_port} leaves no room for {n} consecutive ports"
                ))
            })?;
        for (i, &port) in ports.iter().enumerate() {
            port_free(port).map_err(|e| taken(i as u64 + 1, port, e, "from --scheduler-port"))?;
        }
        ports
    } else {
        free_ports(n as usize)?
    };
    let mut plan = ReplicaPlan {
        replicas: n,
        schedulers: ports
            .into_iter()
            .enumerate()
            .map(|(i, port)| ReplicaPort {
                id: i as u64 + 1,
                port,
                ui_port: 0,
            })
            .collect(),
    };
    plan_ui_ports(&mut plan)?;
    Ok(plan)
}

fn join_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Everything `gpuctl dev` needs to know, resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    pub state_dir: PathBuf,
    pub gpus: Vec<String>,
    pub nodes: u32,
    pub scheduler_port: u16,
    pub example: bool,
    pub config_dir: Option<PathBuf>,
    /// Scheduler replicas: 1, 3 or 5.
    pub replicas: u32,
    /// Pause before restarting a replica that died (only with replicas > 1).
    pub restart_delay: Duration,
    /// Port of replica `i` at `ports[i - 1]`; filled in by [`plan_ports`]
    /// (until then, `--scheduler-port` for the first).
    pub ports: Vec<u16>,
    /// Web UI port of replica `i` at `ui_ports[i - 1]` (0 or absent: any).
    pub ui_ports: Vec<u16>,
    /// The inference gateway's port (0: any free one).
    pub gateway_port: u16,
    /// How long the gateway holds a request while an endpoint has no replica.
    pub cold_start_timeout: Duration,
    /// Run every process plaintext; otherwise each gets the dev CA's
    /// cluster certificate (`STATE_DIR/tls/`).
    pub insecure: bool,
    /// No tokens: the schedulers accept every caller as an admin.
    pub no_auth: bool,
    /// Tasks get their cgroup and private `/tmp` (the node daemons'
    /// defaults); when false the node daemons run without either.
    pub task_isolation: bool,
    /// The node daemons run tasks that name an image in it, under podman.
    pub podman: bool,
    /// `gpu-node --cordon-after-unhealthy-gpus` (0: not passed).
    pub cordon_after_unhealthy_gpus: u32,
}

impl Plan {
    pub fn from_flags(flags: DevFlags, env: &EnvVars) -> Result<Plan> {
        let state_dir =
            match flags.state_dir.or_else(|| env.dev_state_dir()) {
                Some(d) => d,
                None => return Err(Error::Usage(
                    "cannot pick a state dir: pass --state-dir DIR (or set XDG_DATA_HOME or HOME)"
                        .into(),
                )),
            };
        let gpus = if flags.gpus.is_empty() {
            vec![DEFAULT_GPUS.to_string()]
        } else {
            flags.gpus
        };
        let replicas = validate_replicas(flags.replicas)?;
        Ok(Plan {
            state_dir,
            gpus,
            nodes: flags.nodes,
            scheduler_port: flags.scheduler_port,
            example: flags.example,
            config_dir: env.config_dir(),
            replicas,
            restart_delay: flags.restart_delay.duration,
            ports: vec![flags.scheduler_port],
            ui_ports: Vec::new(),
            gateway_port: flags.gateway_port,
            cold_start_timeout: flags.cold_start_timeout.duration,
            insecure: flags.insecure,
            no_auth: flags.no_auth,
            task_isolation: flags.task_isolation == TaskIsolation::On,
            podman: flags.runtime == crate::cli::TaskRuntime::Podman,
            cordon_after_unhealthy_gpus: flags.cordon_after_unhealthy_gpus,
        })
    }

    pub fn scheduler_ids(&self) -> std::ops::RangeInclusive<u64> {
        1..=u64::from(self.replicas)
    }
    pub fn scheduler_dir(&self, id: u64) -> PathBuf {
        self.state_dir.join(format!("scheduler-{id}"))
    }
    pub fn scheduler_ready(&self, id: u64) -> PathBuf {
        self.state_dir.join(format!("scheduler-{id}.ready.json"))
    }
    pub fn scheduler_log(&self, id: u64) -> PathBuf {
        self.logs_dir().join(format!("scheduler-{id}.log"))
    }
    fn port(&self, id: u64) -> u16 {
        self.ports
            .get(id as usize - 1)
            .copied()
            .unwrap_or(self.scheduler_port)
    }
    /// `1=127.0.0.1:P1,2=127.0.0.1:P2,…`, the same for every replica.
    pub fn peers_arg(&self) -> String {
        self.scheduler_ids()
            .map(|id| format!("{id}=127.0.0.1:{}", self.port(id)))
            .collect::<Vec<_>>()
            .join(",")
    }
    pub fn node_name(i: u32) -> String {
        format!("dev-node-{i}")
    }
    pub fn node_dir(&self, i: u32) -> PathBuf {
        self.state_dir.join(format!("node-{i}"))
    }
    pub fn node_ready(&self, i: u32) -> PathBuf {
        self.state_dir.join(format!("node-{i}.ready.json"))
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
    /// The bootstrap admin's token (kept across restarts).
    pub fn admin_token_file(&self) -> PathBuf {
        self.state_dir.join("admin.token")
    }
    /// The encryption configuration every replica encrypts Secret values
    /// with (one random AES-256-GCM key, made on first start).
    pub fn encryption_config_file(&self) -> PathBuf {
        self.state_dir.join("encryption.yaml")
    }
    /// The join token every node trades for its credential.
    pub fn join_token_file(&self) -> PathBuf {
        self.state_dir.join("join.token")
    }
    /// The gateway's token (user "gateway", role gateway).
    pub fn gateway_token_file(&self) -> PathBuf {
        self.state_dir.join("gateway.token")
    }
    /// The token of the user running `gpuctl dev`, also in the context.
    pub fn user_token_file(&self) -> PathBuf {
        self.state_dir.join("user.token")
    }
    /// The dev CA and the cluster certificate every process presents.
    pub fn tls_files(&self) -> gpuctl_security::ca::DevFiles {
        gpuctl_security::ca::DevFiles::in_dir(&self.state_dir.join("tls"))
    }
    /// The TLS flags every process gets: the cluster certificate, or `--insecure`.
    pub fn tls_args(&self) -> Vec<String> {
        if self.insecure {
            return vec!["--insecure".into()];
        }
        let f = self.tls_files();
        vec![
            "--tls-cert".into(),
            f.cert.display().to_string(),
            "--tls-key".into(),
            f.key.display().to_string(),
            "--tls-ca".into(),
            f.ca.display().to_string(),
        ]
    }
    /// `http` or `https`, as the cluster's servers speak.
    pub fn scheme(&self) -> &'static str {
        if self.insecure {
            "http"
        } else {
            "https"
        }
    }

    /// `gpu-scheduler`'s arguments for replica `id` (from 1); `--peers`
    /// only when there is more than one replica.
    pub fn scheduler_args(&self, id: u64) -> Vec<String> {
        let mut a = vec![
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            self.scheduler_dir(id).display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.port(id)),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--ready-file".into(),
            self.scheduler_ready(id).display().to_string(),
            "--ui-listen".into(),
            format!(
                "127.0.0.1:{}",
                self.ui_ports.get(id as usize - 1).copied().unwrap_or(0)
            ),
        ];
        if self.no_auth {
            a.push("--no-auth".into());
        } else {
            a.push("--admin-token-file".into());
            a.push(self.admin_token_file().display().to_string());
        }
        a.push("--encryption-provider-config".into());
        a.push(self.encryption_config_file().display().to_string());
        if self.replicas > 1 {
            a.push("--peers".into());
            a.push(self.peers_arg());
        }
        a.extend(self.tls_args());
        a
    }

    /// Where the gateway writes its address once it listens.
    pub fn gateway_ready(&self) -> PathBuf {
        self.state_dir.join("gateway.ready.json")
    }

    /// `gpu-gateway`'s arguments: it follows every scheduler replica.
    pub fn gateway_args(&self, scheduler_urls: &str) -> Vec<String> {
        let timeout_ms = self.cold_start_timeout.as_millis().max(1);
        let mut a = vec![
            "--server".into(),
            scheduler_urls.into(),
            "--listen".into(),
            "127.0.0.1".into(),
            "--port".into(),
            self.gateway_port.to_string(),
            "--cold-start-timeout-ms".into(),
            timeout_ms.to_string(),
            "--ready-file".into(),
            self.gateway_ready().display().to_string(),
            // The V2 gRPC service beside HTTP: the next port, or any free one.
            "--grpc-port".into(),
            match self.gateway_port {
                0 | u16::MAX => 0,
                p => p + 1,
            }
            .to_string(),
        ];
        if !self.no_auth {
            a.push("--token-file".into());
            a.push(self.gateway_token_file().display().to_string());
        }
        a.extend(self.tls_args());
        a
    }

    /// `gpu-node`'s arguments for node `i` (from 1).
    pub fn node_args(&self, i: u32, scheduler_url: &str) -> Vec<String> {
        let mut a = vec![
            "--server".into(),
            scheduler_url.into(),
            "--name".into(),
            Self::node_name(i),
        ];
        for g in &self.gpus {
            a.push("--gpus".into());
            a.push(g.clone());
        }
        a.extend([
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--work-dir".into(),
            self.node_dir(i).display().to_string(),
            "--artifact-dir".into(),
            self.state_dir.join("artifacts").display().to_string(),
            "--ready-file".into(),
            self.node_ready(i).display().to_string(),
        ]);
        if !self.no_auth {
            a.push("--join-token-file".into());
            a.push(self.join_token_file().display().to_string());
        }
        if !self.task_isolation {
            a.extend(["--cgroups".into(), "off".into(), "--no-private-tmp".into()]);
        }
        if self.podman {
            a.extend(["--runtime".into(), "podman".into()]);
        }
        if self.cordon_after_unhealthy_gpus > 0 {
            a.extend([
                "--cordon-after-unhealthy-gpus".into(),
                self.cordon_after_unhealthy_gpus.to_string(),
            ]);
        }
        a.extend(self.tls_args());
        if !self.insecure {
            // The dev nodes' CA: each node signs its replicas' certificates.
            let f = self.tls_files();
            a.extend([
                "--replica-ca-cert".into(),
                f.node_ca.display().to_string(),
                "--replica-ca-key".into(),
                f.node_ca_key.display().to_string(),
            ]);
        }
        a
    }
}

impl Plan {
    /// Create the state dir and its folders, and fix the replicas' ports:
    /// those kept in `replicas.json`, else new ones, which are kept there.
    pub fn prepare_state_dir(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.state_dir)
            .map_err(|e| Error::io(format!("cannot create {}", self.state_dir.display()), e))?;
        self.state_dir = std::fs::canonicalize(&self.state_dir).unwrap_or(self.state_dir.clone());
        let saved = saved_replica_plan(&self.state_dir)?;
        let replica_plan = plan_ports(
            self.replicas,
            self.scheduler_port,
            saved.as_ref(),
            &self.state_dir,
        )?;
        self.ports = replica_plan.ports();
        self.ui_ports = replica_plan.ui_ports();
        if saved.as_ref() != Some(&replica_plan) {
            config::write_atomic(
                &self.state_dir.join(REPLICAS_FILE),
                serde_json::to_string_pretty(&replica_plan)
                    .expect("json")
                    .as_bytes(),
            )?;
        }
        for d in [self.logs_dir()]
            .into_iter()
            .chain(self.scheduler_ids().map(|id| self.scheduler_dir(id)))
            .chain((1..=self.nodes).map(|i| self.node_dir(i)))
        {
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("cannot create {}", d.display()), e))?;
        }
        Ok(())
    }
}

/// The programs `gpuctl dev` starts.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub scheduler: PathBuf,
    pub node: PathBuf,
    /// Without the gateway the cluster still runs jobs; endpoints are not served.
    pub gateway: Option<PathBuf>,
}

impl Binaries {
    /// Next to this executable, else on `PATH` (see [`find_binary`]).
    pub fn find() -> Result<Binaries> {
        let exe = std::env::current_exe().ok();
        let path_env = std::env::var_os("PATH");
        let scheduler = find_binary("gpu-scheduler", exe.as_deref(), path_env.as_deref())?;
        let node = find_binary("gpu-node", exe.as_deref(), path_env.as_deref())?;
        let gateway = match find_binary("gpu-gateway", exe.as_deref(), path_env.as_deref()) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("gpuctl dev: {e}; starting without the inference gateway");
                None
            }
        };
        Ok(Binaries {
            scheduler,
            node,
            gateway,
        })
    }
}

/// Find `name` next to the running executable (also one level up, for test
/// binaries in `target/debug/deps`), else on `PATH`.
pub fn find_binary(name: &str, exe: Option<&Path>, path_env: Option<&OsStr>) -> Result<PathBuf> {
    let exe_dir = exe.and_then(Path::parent);
    let mut candidates = Vec::new();
    if let Some(d) = exe_dir {
        candidates.push(d.join(name));
        if d.file_name() == Some(OsStr::new("deps")) {
            if let Some(up) = d.parent() {
                candidates.push(up.join(name));
            }
        }
    }
    if let Some(p) = path_env {
        candidates.extend(std::env::split_paths(p).map(|d| d.join(name)));
    }
    if let Some(found) = candidates.into_iter().find(|c| is_executable(c)) {
        return Ok(found);
    }
    let dir = exe_dir.map_or_else(|| "<unknown>".into(), |d| d.display().to_string());
    Err(Error::Other(format!(
        "cannot find {name} next to {dir} or on PATH; build it with \"cargo build --bins\""
    )))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EXIT_USAGE;

    fn plan(dir: &Path) -> Plan {
        Plan {
            state_dir: dir.to_path_buf(),
            gpus: vec!["4xH100-80GB".into(), "2xA100-40GB".into()],
            nodes: 2,
            scheduler_port: 0,
            example: false,
            config_dir: None,
            replicas: 1,
            restart_delay: Duration::from_secs(2),
            ports: vec![0],
            ui_ports: vec![],
            gateway_port: 0,
            no_auth: false,
            cold_start_timeout: Duration::from_secs(60),
            insecure: false,
            task_isolation: true,
            podman: false,
            cordon_after_unhealthy_gpus: 0,
        }
    }

    #[test]
    fn child_command_lines_follow_the_contract() {
        let p = plan(Path::new("/s"));
        assert_eq!(
            p.scheduler_args(1).join(" "),
            "--id 1 --data-dir /s/scheduler-1 --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --ready-file /s/scheduler-1.ready.json --ui-listen 127.0.0.1:0 --admin-token-file /s/admin.token --encryption-provider-config /s/encryption.yaml --tls-cert /s/tls/cluster.pem --tls-key /s/tls/cluster-key.pem --tls-ca /s/tls/ca.pem"
        );
        let p3 = Plan {
            replicas: 3,
            ports: vec![7100, 7200, 7300],
            ui_ports: vec![7101, 7201, 7301],
            ..plan(Path::new("/s"))
        };
        assert_eq!(
            p3.scheduler_args(2).join(" "),
            "--id 2 --data-dir /s/scheduler-2 --listen 127.0.0.1:7200 --metrics-listen 127.0.0.1:0 --ready-file /s/scheduler-2.ready.json --ui-listen 127.0.0.1:7201 \
             --admin-token-file /s/admin.token --encryption-provider-config /s/encryption.yaml --peers 1=127.0.0.1:7100,2=127.0.0.1:7200,3=127.0.0.1:7300 --tls-cert /s/tls/cluster.pem --tls-key /s/tls/cluster-key.pem --tls-ca /s/tls/ca.pem"
        );
        assert_eq!(
            p.node_args(2, "http://127.0.0.1:7000").join(" "),
            "--server http://127.0.0.1:7000 --name dev-node-2 --gpus 4xH100-80GB --gpus 2xA100-40GB --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --work-dir /s/node-2 --artifact-dir /s/artifacts --ready-file /s/node-2.ready.json --join-token-file /s/join.token --tls-cert /s/tls/cluster.pem --tls-key /s/tls/cluster-key.pem --tls-ca /s/tls/ca.pem \
             --replica-ca-cert /s/tls/node-ca.pem --replica-ca-key /s/tls/node-ca-key.pem"
        );
        assert_eq!(
            p.gateway_args("http://127.0.0.1:7000").join(" "),
            "--server http://127.0.0.1:7000 --listen 127.0.0.1 --port 0 --cold-start-timeout-ms 60000 --ready-file /s/gateway.ready.json --grpc-port 0 --token-file /s/gateway.token --tls-cert /s/tls/cluster.pem --tls-key /s/tls/cluster-key.pem --tls-ca /s/tls/ca.pem"
        );
        // `gpuctl dev --insecure`: every process plaintext, said explicitly.
        let plain = Plan {
            insecure: true,
            ..plan(Path::new("/s"))
        };
        for args in [
            plain.scheduler_args(1),
            plain.node_args(1, "http://127.0.0.1:7000"),
            plain.gateway_args("http://127.0.0.1:7000"),
        ] {
            assert_eq!(
                args.last().map(String::as_str),
                Some("--insecure"),
                "{args:?}"
            );
            assert!(!args.iter().any(|a| a.starts_with("--tls-")), "{args:?}");
        }
    }

    #[test]
    fn the_cordon_rule_reaches_the_node_daemons() {
        let none = plan(Path::new("/s")).node_args(1, "http://127.0.0.1:7000");
        assert!(!none.iter().any(|a| a == "--cordon-after-unhealthy-gpus"));
        let two = Plan {
            cordon_after_unhealthy_gpus: 2,
            ..plan(Path::new("/s"))
        }
        .node_args(1, "http://127.0.0.1:7000")
        .join(" ");
        assert!(two.contains(" --cordon-after-unhealthy-gpus 2"), "{two}");
    }

    #[test]
    fn task_isolation_off_turns_off_the_nodes_cgroups_and_private_tmp() {
        let on = plan(Path::new("/s")).node_args(1, "http://127.0.0.1:7000");
        assert!(!on
            .iter()
            .any(|a| a == "--cgroups" || a == "--no-private-tmp"));
        let off = Plan {
            task_isolation: false,
            ..plan(Path::new("/s"))
        }
        .node_args(1, "http://127.0.0.1:7000")
        .join(" ");
        assert!(off.contains(" --cgroups off --no-private-tmp "), "{off}");
        assert!(!off.contains("--runtime"), "{off}");
        let podman = Plan {
            podman: true,
            ..plan(Path::new("/s"))
        }
        .node_args(1, "http://127.0.0.1:7000")
        .join(" ");
        assert!(podman.contains(" --runtime podman "), "{podman}");
        // The schedulers and the gateway are not affected.
        let p = plan(Path::new("/s"));
        let off_plan = Plan {
            task_isolation: false,
            ..plan(Path::new("/s"))
        };
        assert_eq!(p.scheduler_args(1), off_plan.scheduler_args(1));
        assert_eq!(
            p.gateway_args("http://127.0.0.1:7000"),
            off_plan.gateway_args("http://127.0.0.1:7000")
        );
    }

    #[test]
    fn defaults_from_env() {
        let env = EnvVars {
            home: Some("/home/u".into()),
            ..Default::default()
        };
        let flags = DevFlags {
            no_auth: false,
            state_dir: None,
            gpus: vec![],
            nodes: 1,
            scheduler_port: 7000,
            example: false,
            replicas: 1,
            restart_delay: "2s".parse().unwrap(),
            gateway_port: 0,
            cold_start_timeout: "60s".parse().unwrap(),
            insecure: false,
            task_isolation: TaskIsolation::On,
            runtime: crate::cli::TaskRuntime::Process,
            cordon_after_unhealthy_gpus: 0,
        };
        let p = Plan::from_flags(flags, &env).unwrap();
        assert!(p.task_isolation);
        assert_eq!(p.state_dir, Path::new("/home/u/.local/share/gpuctl/dev"));
        assert_eq!(p.gpus, [DEFAULT_GPUS]);
        assert!(p.scheduler_args(1).contains(&"127.0.0.1:7000".to_string()));
        assert!(!p.scheduler_args(1).contains(&"--peers".to_string()));
        assert_eq!(p.replicas, 1);
        assert_eq!(p.config_dir.unwrap(), Path::new("/home/u/.config/gpuctl"));
    }

    #[test]
    fn binaries_are_found_next_to_the_exe_or_on_path() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let deps = dir.path().join("deps");
        std::fs::create_dir(&deps).unwrap();
        let bin = dir.path().join("gpu-node");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A test binary in target/debug/deps finds target/debug/gpu-node.
        let exe = deps.join("gpuctl-1234");
        assert_eq!(find_binary("gpu-node", Some(&exe), None).unwrap(), bin);
        let other = tempfile::tempdir().unwrap();
        let exe = other.path().join("gpuctl");
        let path = std::env::join_paths([other.path(), dir.path()]).unwrap();
        assert_eq!(
            find_binary("gpu-node", Some(&exe), Some(&path)).unwrap(),
            bin
        );
        let e = find_binary("gpu-scheduler", Some(&exe), Some(&path)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot find gpu-scheduler next to {} or on PATH; build it with \"cargo build --bins\"",
                other.path().display()
            )
        );
    }

    #[test]
    fn replica_counts() {
        for n in [1, 3, 5] {
            assert_eq!(validate_replicas(n).unwrap(), n);
        }
        for n in [0, 2, 4, 6, 7] {
            let e = validate_replicas(n).unwrap_err();
            assert_eq!(e.exit_code(), EXIT_USAGE);
            assert!(e.to_string().contains("1, 3 or 5"), "{e}");
        }
        let env = EnvVars::default();
        let flags = DevFlags {
            no_auth: false,
            state_dir: Some("/s".into()),
            gpus: vec![],
            nodes: 1,
            scheduler_port: 0,
            example: false,
            replicas: 2,
            restart_delay: "2s".parse().unwrap(),
            gateway_port: 0,
            cold_start_timeout: "60s".parse().unwrap(),
            insecure: false,
            task_isolation: TaskIsolation::On,
            runtime: crate::cli::TaskRuntime::Process,
            cordon_after_unhealthy_gpus: 0,
        };
        assert!(Plan::from_flags(flags, &env).is_err());
    }

    #[test]
    fn fresh_ports_are_distinct_and_kept_for_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(saved_replica_plan(dir.path()).unwrap(), None);
        let p = plan_ports(3, 0, None, dir.path()).unwrap();
        assert_eq!(p.replicas, 3);
        assert_eq!(
            p.schedulers.iter().map(|s| s.id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        // Raft and web UI ports, all different.
        let mut ports = p.ports();
        ports.extend(p.ui_ports());
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 6);
        assert!(ports.iter().all(|&p| p != 0));
        config::write_atomic(
            &dir.path().join(REPLICAS_FILE),
            serde_json::to_string(&p).unwrap().as_bytes(),
        )
        .unwrap();
        let saved = saved_replica_plan(dir.path()).unwrap().unwrap();
        assert_eq!(saved, p);
        // The next run reuses them, with or without the matching flag.
        assert_eq!(plan_ports(3, 0, Some(&saved), dir.path()).unwrap(), p);
        assert_eq!(
            plan_ports(3, p.ports()[0], Some(&saved), dir.path()).unwrap(),
            p
        );
        // A kept UI port now in use gets a new one (and the others stay).
        {
            let _ui = std::net::TcpListener::bind(("127.0.0.1", p.ui_ports()[0])).unwrap();
            let q = plan_ports(3, 0, Some(&saved), dir.path()).unwrap();
            assert_eq!(q.ports(), p.ports());
            assert_ne!(q.ui_ports()[0], p.ui_ports()[0]);
            assert_eq!(q.ui_ports()[1..], p.ui_ports()[1..]);
        }
        // A file from before UI ports were kept gets them.
        let mut old = saved.clone();
        old.schedulers.iter_mut().for_each(|s| s.ui_port = 0);
        let q = plan_ports(3, 0, Some(&old), dir.path()).unwrap();
        assert!(q.ui_ports().iter().all(|&u| u != 0), "{q:?}");
        let e = plan_ports(3, 1, Some(&saved), dir.path()).unwrap_err();
        assert!(e.to_string().contains("leave out --scheduler-port"), "{e}");
        // A different count is refused, saying how to get one.
        for n in [1, 5] {
            let e = plan_ports(n, 0, Some(&saved), dir.path()).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("3-replica")
                    && msg.contains("--replicas 3")
                    && msg.contains("new --state-dir"),
                "{msg}"
            );
        }
        // A saved port that is now taken is a clear error.
        let _busy = std::net::TcpListener::bind(("127.0.0.1", p.ports()[1])).unwrap();
        let e = plan_ports(3, 0, Some(&saved), dir.path()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("port {} of scheduler replica 2", p.ports()[1]))
                && msg.contains(REPLICAS_FILE),
            "{msg}"
        );
    }

    #[test]
    fn ports_from_the_flag_are_consecutive() {
        let dir = tempfile::tempdir().unwrap();
        // Find 5 free consecutive ports near a kernel-chosen one.
        let base = (0..50)
            .find_map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
                let b = l.local_addr().ok()?.port();
                drop(l);
                (b < 65000 && (0..5).all(|i| port_free(b + i).is_ok())).then_some(b)
            })
            .unwrap();
        let p = plan_ports(5, base, None, dir.path()).unwrap();
        assert_eq!(p.ports(), (base..base + 5).collect::<Vec<_>>());
        let e = plan_ports(3, 65535, None, dir.path()).unwrap_err();
        assert!(e.to_string().contains("no room"), "{e}");
        // One replica: the flag, as before, and no file needed.
        let p = plan_ports(1, 7000, None, dir.path()).unwrap();
        assert_eq!(p.ports(), [7000]);
    }

    #[test]
    fn an_old_single_replica_state_dir_counts_as_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("scheduler-1")).unwrap();
        assert_eq!(
            saved_replica_plan(dir.path()).unwrap(),
            None,
            "empty: unused"
        );
        std::fs::write(dir.path().join("scheduler-1/CURRENT"), "x").unwrap();
        let saved = saved_replica_plan(dir.path()).unwrap().unwrap();
        assert_eq!(saved.replicas, 1);
        assert!(plan_ports(1, 0, Some(&saved), dir.path()).is_ok());
        assert!(plan_ports(3, 0, Some(&saved), dir.path()).is_err());
        std::fs::write(dir.path().join(REPLICAS_FILE), "{").unwrap();
        assert!(saved_replica_plan(dir.path())
            .unwrap_err()
            .to_string()
            .contains(REPLICAS_FILE));
    }
}
