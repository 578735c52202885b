//! `gpuctl`, the command line of the gpuctl GPU cluster platform.
//!
//! ```text
//! argv ──clap──► Cli ──run()──► config (which server?) ──client──► Control gRPC
//!                  │                manifest (files, submit flags → Job)
//!                  │                render (tables, describe)
//!                  └── dev ──► spawns gpu-scheduler + gpu-node children, supervises them
//! ```
//!
//! The binary is a thin `main` around [`run`]; everything a test wants to
//! pin (address resolution, manifests, tables) is a pure function in a module.
//!
//! Exit codes: 0 success, 1 failure (server error, bad manifest, unreachable
//! server, a job that `wait` saw fail), 2 bad command line, 124 `wait` timed out.

pub mod client;
pub mod config;
pub mod dev;
pub mod duration;
pub mod endpoints;
pub mod error;
pub mod manifest;
pub mod render;
pub mod status;
#[cfg(test)]
mod testserver;
pub mod workflows;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use gpuctl_common::api::{Job, JobPhase, Manifest, Node};
use gpuctl_common::queue::Queue;
use gpuctl_proto::v1::{
    ApplyRequest, CancelRequest, CordonRequest, DeleteRequest, GetRequest, LogsRequest, WaitRequest,
};

use crate::client::{status_error, CallError, Client, Conn, Target};
use crate::config::EnvVars;
use crate::duration::HumanDuration;
pub use crate::error::{Error, Result, EXIT_FAILURE, EXIT_TIMEOUT, EXIT_USAGE};
use crate::manifest::SubmitArgs;

/// The gpuctl command line.
#[derive(Debug, Parser)]
#[command(
    name = "gpuctl",
    version,
    about = "Run batch jobs on a gpuctl GPU cluster",
    after_help = "The server address comes from --server, then GPUCTL_SERVER, then the context \
                  file \"gpuctl dev\" writes ($GPUCTL_CONFIG_DIR or ~/.config/gpuctl/context.json)."
)]
pub struct Cli {
    /// Scheduler address(es), comma-separated, tried in order: host:port or
    /// http://host:port [env: GPUCTL_SERVER]
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the objects in files or folders (*.yaml, *.yml, *.json).
    Apply {
        /// A file, a folder, or - for stdin (repeatable).
        #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
        files: Vec<String>,
    },
    /// Submit a quick job: one task group running CMD.
    Submit(SubmitFlags),
    /// List jobs, nodes, queues, workflows or endpoints, or show one.
    Get {
        /// jobs, nodes, queues, workflows or endpoints (job, node, no, queue, q,
        /// workflow, wf, endpoint, ep).
        #[arg(value_parser = parse_kind)]
        kind: Kind,
        name: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Show a job, node, queue, workflow or endpoint in detail.
    Describe {
        /// job, node, queue, workflow or endpoint.
        #[arg(value_parser = parse_kind)]
        kind: Kind,
        name: String,
    },
    /// Print a task's log, or a workflow's (`logs workflow NAME [--step S]`).
    Logs {
        job: String,
        /// With `workflow` as the first argument: the workflow's name.
        name: Option<String>,
        /// Global task index (RANK).
        #[arg(long, default_value_t = 0)]
        task: u32,
        /// Only this step of the workflow (its name, e.g. train or train(0:a)).
        #[arg(long)]
        step: Option<String>,
        /// Keep streaming until the task ends.
        #[arg(short = 'f', long)]
        follow: bool,
        /// An earlier attempt's log (after a retry or a preemption).
        #[arg(long)]
        attempt: Option<u32>,
    },
    /// Cancel a job (its tasks are stopped), or `cancel workflow NAME`
    /// (its running steps are stopped, nothing new starts).
    Cancel {
        job: String,
        /// With `workflow` as the first argument: the workflow's name.
        name: Option<String>,
    },
    /// Delete a finished job, a finished workflow (with its step jobs), or an
    /// endpoint (its replicas are stopped).
    Delete {
        /// job, workflow or endpoint.
        #[arg(value_parser = parse_kind)]
        kind: Kind,
        name: String,
    },
    /// Mark a node unschedulable: no new tasks are placed on it.
    Cordon { node: String },
    /// Mark a node schedulable again.
    Uncordon { node: String },
    /// Wait until a job or workflow finishes: exit 0 Succeeded, 1 Failed,
    /// Error or Cancelled, 124 timeout.
    Wait {
        job: String,
        /// How long to wait, e.g. 60s, 2m, 500ms; 0 waits for ever.
        #[arg(long, default_value = "60s")]
        timeout: HumanDuration,
    },
    /// Start a whole cluster on this machine (scheduler + simulated GPU nodes).
    Dev(DevFlags),
    /// The control plane's replicas.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Ask every scheduler replica for its Raft state: role, term, log
    /// indexes, replication progress. Exit 0 when a leader is known and a
    /// majority of the voters answered, 1 otherwise.
    Status {
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// How long each replica may take to answer.
        #[arg(long, default_value = "2s")]
        timeout: HumanDuration,
    },
    /// Add a scheduler replica as a voter (Raft configuration change). Start
    /// it first with `gpu-scheduler --id ID --join --peers ...`; it catches
    /// up from a snapshot.
    AddPeer {
        /// Replica id, unused so far in this cluster.
        id: u64,
        /// Its gRPC address, e.g. 127.0.0.1:7003 or http://10.0.0.4:7000.
        address: String,
    },
    /// Remove a scheduler replica from the voters (e.g. a dead one, before
    /// adding its replacement under a new id).
    RemovePeer { id: u64 },
}

#[derive(Debug, Args)]
pub struct SubmitFlags {
    /// Job name (default: job-<random>).
    #[arg(long)]
    pub name: Option<String>,
    /// GPUs per task: whole (1, 8) or a share of one (0.5).
    #[arg(long, default_value_t = 0.0)]
    pub gpus: f64,
    /// Number of tasks (a gang: all start together).
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    #[arg(long)]
    pub queue: Option<String>,
    /// Priority within the queue: higher runs first and may preempt lower.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    /// Acceptable GPU models, e.g. "A100|H100".
    #[arg(long)]
    pub gpu_model: Option<String>,
    /// CPU cores per task, e.g. 4 or 500m.
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory per task, e.g. 16Gi.
    #[arg(long)]
    pub memory: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub max_retries: u32,
    #[arg(long)]
    pub timeout_seconds: Option<u64>,
    /// Delete the job this many seconds after it finishes.
    #[arg(long)]
    pub ttl_seconds_after_finished: Option<u64>,
    /// Working directory of the tasks.
    #[arg(long)]
    pub workdir: Option<String>,
    /// Submit a workflow file instead of a command (like `argo submit`).
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub file: Option<String>,
    /// Workflow argument NAME=VALUE (with -f; repeatable).
    #[arg(short = 'p', long = "parameter", value_name = "NAME=VALUE")]
    pub parameters: Vec<String>,
    /// The program and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl SubmitFlags {
    pub fn to_args(&self) -> SubmitArgs {
        SubmitArgs {
            name: self.name.clone(),
            gpus: self.gpus,
            replicas: self.replicas,
            queue: self.queue.clone(),
            gpu_model: self.gpu_model.clone(),
            cpu: self.cpu.clone(),
            memory: self.memory.clone(),
            env: self.env.clone(),
            max_retries: self.max_retries,
            timeout_seconds: self.timeout_seconds,
            ttl_seconds_after_finished: self.ttl_seconds_after_finished,
            workdir: self.workdir.clone(),
            command: self.command.clone(),
            priority: self.priority,
        }
    }
}

#[derive(Debug, Args)]
pub struct DevFlags {
    /// Where the cluster keeps its state (default: $XDG_DATA_HOME/gpuctl/dev
    /// or ~/.local/share/gpuctl/dev).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Simulated GPUs of every node, e.g. 8xA100-80GB (repeatable).
    #[arg(long, value_name = "SPEC")]
    pub gpus: Vec<String>,
    /// Number of node daemons.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub nodes: u32,
    /// Scheduler gRPC port (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub scheduler_port: u16,
    /// Submit a small example job once the cluster is up.
    #[arg(long)]
    pub example: bool,
    /// Scheduler replicas (Raft voters): 1, 3 or 5. A state dir keeps the
    /// count it was created with.
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// With --replicas 3 or 5: how long to wait before restarting a
    /// scheduler replica that died.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub restart_delay: HumanDuration,
    /// Port of the inference gateway (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub gateway_port: u16,
    /// How long the gateway holds a request for an endpoint with no ready
    /// replica before it answers 503.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub cold_start_timeout: HumanDuration,
}

/// The object kinds `get` and `describe` know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Jobs,
    Nodes,
    Queues,
    Workflows,
    Endpoints,
}

impl Kind {
    /// The kind as the API's `Get` takes it.
    pub fn api_name(self) -> &'static str {
        match self {
            Kind::Jobs => "jobs",
            Kind::Nodes => "nodes",
            Kind::Queues => "queues",
            Kind::Workflows => "workflows",
            Kind::Endpoints => "endpoints",
        }
    }
    /// The singular, as in `job/x` and `job "x" not found`.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Jobs => "job",
            Kind::Nodes => "node",
            Kind::Queues => "queue",
            Kind::Workflows => "workflow",
            Kind::Endpoints => "endpoint",
        }
    }
}

/// `jobs`, `job`, `nodes`, `node`, `no`, `queues`, `queue`, `q` (any case).
pub fn parse_kind(s: &str) -> Result<Kind, String> {
    match s.to_ascii_lowercase().as_str() {
        "job" | "jobs" => Ok(Kind::Jobs),
        "node" | "nodes" | "no" => Ok(Kind::Nodes),
        "queue" | "queues" | "q" => Ok(Kind::Queues),
        "workflow" | "workflows" | "wf" => Ok(Kind::Workflows),
        "endpoint" | "endpoints" | "ep" => Ok(Kind::Endpoints),
        _ => Err(format!(
            "unknown kind {s:?} (expected jobs, nodes, queues, workflows or endpoints)"
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// Run one command; returns the exit code. The context file and the server
/// list are read through `env`, so tests can point them at temp dirs.
pub async fn run(cli: Cli, env: &EnvVars) -> Result<u8> {
    if let Command::Dev(flags) = cli.command {
        return dev::run(flags, env).await;
    }
    let servers = config::resolve_servers(
        cli.server.as_deref(),
        env.gpuctl_server.as_deref(),
        env.config_dir().as_deref(),
    )?;
    // The gateway `gpuctl dev` started, for endpoint URLs.
    let gateway = env
        .config_dir()
        .and_then(|d| config::read_context(&d).ok().flatten())
        .and_then(|c| c.gateway);
    let mut cx = Ctx {
        conn: Conn::new(servers.urls),
        gateway,
    };
    match cli.command {
        Command::Dev(_) => unreachable!("handled above"),
        Command::Cluster {
            command: ClusterCommand::Status { output, timeout },
        } => status::cmd_status(cx.conn.urls(), output, timeout.duration).await,
        Command::Cluster {
            command: ClusterCommand::AddPeer { id, address },
        } => {
            let req = gpuctl_proto::v1::AddPeerRequest {
                id,
                address: address.clone(),
            };
            let st = cx
                .call(None, |mut c| {
                    let req = req.clone();
                    async move { c.add_peer(req).await }
                })
                .await?;
            out(&format!(
                "replica {id} ({address}) added; voters now {:?}\n",
                sorted(&st.get_ref().voters)
            ))?;
            Ok(0)
        }
        Command::Cluster {
            command: ClusterCommand::RemovePeer { id },
        } => {
            let req = gpuctl_proto::v1::RemovePeerRequest { id };
            let st = cx
                .call(None, |mut c| async move { c.remove_peer(req).await })
                .await?;
            out(&format!(
                "replica {id} removed; voters now {:?}\n",
                sorted(&st.get_ref().voters)
            ))?;
            Ok(0)
        }
        Command::Apply { files } => cmd_apply(&mut cx, &files).await,
        Command::Submit(flags) => cmd_submit(&mut cx, &flags).await,
        Command::Get { kind, name, output } => cmd_get(&mut cx, kind, name, output).await,
        Command::Describe { kind, name } => cmd_describe(&mut cx, kind, &name).await,
        Command::Logs {
            job,
            name: Some(name),
            step,
            follow,
            ..
        } if is_workflow_word(&job) => {
            cmd_workflow_logs(&mut cx, &name, step.as_deref(), follow).await
        }
        Command::Logs {
            job, name: Some(n), ..
        } => Err(Error::Usage(format!(
            "logs takes one job name, or `workflow NAME`; got {job:?} and {n:?}"
        ))),
        Command::Logs {
            job,
            task,
            follow,
            attempt,
            ..
        } => cmd_logs(&mut cx, &job, task, follow, attempt.unwrap_or(0)).await,
        Command::Cancel {
            job,
            name: Some(name),
        } if is_workflow_word(&job) => {
            let req = CancelRequest {
                kind: "workflows".into(),
                name: name.clone(),
            };
            let target = Some(Target {
                kind: "workflow",
                name: &name,
            });
            cx.call(target, |mut c| {
                let req = req.clone();
                async move { c.cancel(req).await }
            })
            .await?;
            out(&format!("workflow/{name} cancelled\n"))?;
            Ok(0)
        }
        Command::Cancel { job, name: Some(_) } => Err(Error::Usage(format!(
            "cancel takes one job name, or `workflow NAME`; got {job:?} and more"
        ))),
        Command::Cancel { job, name: None } => {
            let req = CancelRequest {
                kind: "jobs".into(),
                name: job.clone(),
            };
            cx.call(job_target(&job), |mut c| {
                let req = req.clone();
                async move { c.cancel(req).await }
            })
            .await?;
            out(&format!("job/{job} cancelled\n"))?;
            Ok(0)
        }
        Command::Delete { kind, name } => cmd_delete(&mut cx, kind, &name).await,
        Command::Cordon { node } => cmd_cordon(&mut cx, &node, true).await,
        Command::Uncordon { node } => cmd_cordon(&mut cx, &node, false).await,
        Command::Wait { job, timeout } => cmd_wait(&mut cx, &job, &timeout).await,
    }
}

/// The replicas a command talks to. Connections are made lazily, so
/// commands that fail locally never dial; every unary call fails over to the
/// next address when one is unavailable (see [`Conn::call`]).
struct Ctx {
    conn: Conn,
    /// The inference gateway's URL, when known.
    gateway: Option<String>,
}

impl Ctx {
    fn urls(&self) -> &[String] {
        self.conn.urls()
    }

    /// One unary call with failover; errors phrased for the user.
    async fn call<T, F, Fut>(&mut self, target: Option<Target<'_>>, f: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        match self.conn.call(f).await {
            Ok(v) => Ok(v),
            Err(e) => Err(e.into_error(target, self.conn.urls())),
        }
    }

    async fn get_raw(&mut self, kind: Kind, name: Option<&str>) -> Result<Vec<String>> {
        let req = GetRequest {
            kind: kind.api_name().into(),
            name: name.unwrap_or_default().into(),
        };
        let target = name.map(|n| Target {
            kind: kind.singular(),
            name: n,
        });
        let resp = self
            .call(target, |mut c| {
                let req = req.clone();
                async move { c.get(req).await }
            })
            .await?;
        let objs = resp.into_inner().objects_json;
        if let (Some(t), true) = (target, objs.is_empty()) {
            return Err(Error::NotFound {
                kind: t.kind,
                name: t.name.to_string(),
            });
        }
        Ok(objs)
    }

    async fn get_jobs(&mut self, name: Option<&str>) -> Result<Vec<Job>> {
        self.get_raw(Kind::Jobs, name)
            .await?
            .iter()
            .map(|j| decode(j, "job"))
            .collect()
    }

    async fn get_queues(&mut self, name: Option<&str>) -> Result<Vec<Queue>> {
        self.get_raw(Kind::Queues, name)
            .await?
            .iter()
            .map(|j| decode(j, "queue"))
            .collect()
    }

    async fn get_workflows(&mut self, name: Option<&str>) -> Result<Vec<workflows::WorkflowDoc>> {
        self.get_raw(Kind::Workflows, name)
            .await?
            .iter()
            .map(|j| decode(j, "workflow"))
            .collect()
    }

    async fn get_endpoints(
        &mut self,
        name: Option<&str>,
    ) -> Result<Vec<gpuctl_common::endpoint::Endpoint>> {
        self.get_raw(Kind::Endpoints, name)
            .await?
            .iter()
            .map(|j| decode(j, "endpoint"))
            .collect()
    }

    async fn get_nodes(&mut self, name: Option<&str>) -> Result<Vec<Node>> {
        self.get_raw(Kind::Nodes, name)
            .await?
            .iter()
            .map(|j| decode(j, "node"))
            .collect()
    }
}

fn job_target(name: &str) -> Option<Target<'_>> {
    Some(Target { kind: "job", name })
}

fn decode<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| {
        Error::Other(format!(
            "cannot read a {what} the server sent ({e}); is gpuctl the same version as the scheduler?"
        ))
    })
}

/// Write to stdout now (flushed), so output interleaves with streamed logs.
pub fn out(s: &str) -> Result<()> {
    out_bytes(s.as_bytes())
}

fn out_bytes(b: &[u8]) -> Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(b)
        .and_then(|_| o.flush())
        .map_err(|e| Error::io("cannot write to stdout", e))
}

async fn cmd_apply(cx: &mut Ctx, files: &[String]) -> Result<u8> {
    // Parse and validate everything before sending anything.
    let mut objects = manifest::load_objects(files, &mut std::io::stdin().lock())?;
    let cwd =
        std::env::current_dir().map_err(|e| Error::io("cannot read the current folder", e))?;
    for o in objects.iter_mut() {
        if let manifest::Object::Manifest(l) = o {
            endpoints::resolve_model_paths(std::slice::from_mut(&mut **l), &cwd);
        }
    }
    let mut code = 0;
    for o in objects {
        let l = match o {
            manifest::Object::Manifest(l) => *l,
            manifest::Object::Workflow { source, workflow } => {
                match submit_workflow(cx, &source, &workflow, &BTreeMap::new()).await {
                    Ok(name) => out(&format!("workflow/{name} created\n"))?,
                    Err(e) => {
                        if matches!(e, Error::Unreachable { .. }) {
                            return Err(e);
                        }
                        eprintln!("error: {e}");
                        code = EXIT_FAILURE;
                    }
                }
                continue;
            }
        };
        let kind = l.manifest.kind().to_ascii_lowercase();
        let name = l.manifest.name().to_string();
        let req = ApplyRequest {
            object_json: serde_json::to_string(&l.manifest).expect("manifests serialise"),
            source: l.source.clone(),
            request_id: new_request_id(),
            ..Default::default()
        };
        let verb = match &l.manifest {
            Manifest::Job(_) | Manifest::Endpoint(_) => "created",
            Manifest::Queue(_) => "configured",
        };
        match create(&mut cx.conn, &req).await {
            Ok(_) => out(&format!("{kind}/{name} {verb}\n"))?,
            Err(e) => {
                let e = e.into_error(None, cx.urls());
                if matches!(e, Error::Unreachable { .. }) {
                    return Err(e);
                }
                eprintln!("error: {e}");
                code = EXIT_FAILURE;
            }
        }
    }
    Ok(code)
}

async fn cmd_submit(cx: &mut Ctx, flags: &SubmitFlags) -> Result<u8> {
    if let Some(file) = &flags.file {
        if !flags.command.is_empty() {
            return Err(Error::Usage(
                "give either -f WORKFLOW.yaml or a command after --, not both".into(),
            ));
        }
        let params = workflows::parse_parameters(&flags.parameters)?;
        let mut workflow = None;
        for o in manifest::load_objects(std::slice::from_ref(file), &mut std::io::stdin().lock())? {
            match o {
                manifest::Object::Workflow { source, workflow: w } => workflow = Some((source, w)),
                manifest::Object::Manifest(l) => {
                    return Err(Error::Usage(format!(
                        "{}: submit -f takes a workflow (kind: Workflow); use `gpuctl apply -f` for a {}",
                        l.source,
                        l.manifest.kind()
                    )))
                }
            }
        }
        let (source, w) =
            workflow.ok_or_else(|| Error::Other(format!("{file}: no workflow found")))?;
        let name = submit_workflow(cx, &source, &w, &params).await?;
        out(&format!("workflow/{name} submitted\n"))?;
        return Ok(0);
    }
    if !flags.parameters.is_empty() {
        return Err(Error::Usage(
            "-p is for workflows: use it with -f WORKFLOW.yaml".into(),
        ));
    }
    let job = manifest::build_submit_job(&flags.to_args(), manifest::random_job_name)?;
    let name = job.metadata.name.clone();
    submit_job(cx, &job).await?;
    out(&format!("job/{name} submitted\n"))?;
    Ok(0)
}

async fn submit_job(cx: &mut Ctx, job: &Job) -> Result<()> {
    let req = ApplyRequest {
        object_json: serde_json::to_string(&Manifest::Job(job.clone())).expect("jobs serialise"),
        source: manifest::SUBMIT_SOURCE.into(),
        request_id: new_request_id(),
        ..Default::default()
    };
    create(&mut cx.conn, &req)
        .await
        .map_err(|e| e.into_error(None, cx.urls()))?;
    Ok(())
}

/// A fresh id for one request, sent again unchanged on every retry of it so
/// that the scheduler applies it at most once (random, 128 bits).
pub fn new_request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let half = |salt: u64| {
        // RandomState is seeded from the OS once per process, then varied.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u64(n);
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

/// Send a workflow; returns its name (the server picks the suffix of a
/// `generateName`).
async fn submit_workflow(
    cx: &mut Ctx,
    source: &str,
    workflow: &gpuctl_pipelines::Workflow,
    params: &BTreeMap<String, String>,
) -> Result<String> {
    let req = ApplyRequest {
        object_json: serde_json::to_string(workflow).expect("workflows serialise"),
        source: source.to_string(),
        parameters: params.clone().into_iter().collect(),
        request_id: new_request_id(),
    };
    let resp = cx
        .call(None, |mut c| {
            let req = req.clone();
            async move { c.apply(req).await }
        })
        .await?;
    let doc: serde_json::Value = decode(&resp.into_inner().object_json, "workflow")?;
    Ok(doc
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .unwrap_or("?")
        .to_string())
}

fn is_workflow_word(s: &str) -> bool {
    matches!(s, "workflow" | "workflows" | "wf")
}

async fn cmd_workflow_logs(
    cx: &mut Ctx,
    name: &str,
    step: Option<&str>,
    follow: bool,
) -> Result<u8> {
    let docs = cx.get_workflows(Some(name)).await?;
    let Some(w) = docs.first() else {
        return Err(Error::NotFound {
            kind: "workflow",
            name: name.to_string(),
        });
    };
    let steps = workflows::step_jobs(w, step);
    if steps.is_empty() {
        return Err(Error::Other(match step {
            Some(s) => format!(
                "workflow {name:?} has no step {s:?} that ran; see gpuctl describe workflow {name}"
            ),
            None => format!("no step of workflow {name:?} has run yet"),
        }));
    }
    let many = steps.len() > 1;
    for (display, job) in steps {
        if many {
            out(&format!("==> {display} ({job}) <==\n"))?;
        }
        // A step whose job was never placed has no log yet: say so, go on.
        if let Err(e) = cmd_logs(cx, &job, 0, follow && !many, 0).await {
            if !many {
                return Err(e);
            }
            out(&format!("({e})\n"))?;
        }
    }
    Ok(0)
}

/// How a create ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The server stored it on this call.
    Now,
    /// A retry found it already there: an earlier attempt of this same call
    /// was committed, but its answer was lost (say, the leader died after
    /// committing and before replying).
    ByEarlierAttempt,
}

/// `Apply` with failover. Retrying a create is safe: the object's name is
/// its identity, so a create cannot happen twice; if a retried attempt gets
/// ALREADY_EXISTS after this invocation already sent the object once, that
/// earlier attempt is taken to have succeeded and the create is reported as
/// done. (The only other way to see that is someone else creating the same
/// name in the same instant, which a first attempt would have reported.)
pub async fn create(
    conn: &mut Conn,
    req: &ApplyRequest,
) -> std::result::Result<Created, CallError> {
    let mut sent = 0u32;
    conn.call(|mut c| {
        sent += 1;
        let retried = sent > 1;
        let req = req.clone();
        async move {
            match c.apply(req).await {
                Ok(_) => Ok(Created::Now),
                Err(s) if retried && s.code() == tonic::Code::AlreadyExists => {
                    Ok(Created::ByEarlierAttempt)
                }
                Err(s) => Err(s),
            }
        }
    })
    .await
}

async fn cmd_get(cx: &mut Ctx, kind: Kind, name: Option<String>, output: Output) -> Result<u8> {
    let name = name.as_deref();
    match output {
        Output::Json | Output::Yaml => {
            let raw = cx.get_raw(kind, name).await?;
            let values: Vec<serde_json::Value> = raw
                .iter()
                .map(|j| decode(j, kind.singular()))
                .collect::<Result<_>>()?;
            let doc = match (name, values.len()) {
                (Some(_), 1) => values.into_iter().next().expect("one"),
                _ => serde_json::Value::Array(values),
            };
            let text = if output == Output::Json {
                let mut s = serde_json::to_string_pretty(&doc).expect("json");
                s.push('\n');
                s
            } else {
                serde_yaml_ng::to_string(&doc)
                    .map_err(|e| Error::Other(format!("cannot render YAML: {e}")))?
            };
            out(&text)?;
        }
        Output::Table => {
            let now = gpuctl_common::now_ms();
            let text = match kind {
                Kind::Jobs => render::jobs_table(&cx.get_jobs(name).await?, now),
                Kind::Queues => render::queues_table(&cx.get_queues(name).await?, now),
                Kind::Nodes => {
                    let nodes = cx.get_nodes(name).await?;
                    let jobs = cx.get_jobs(None).await?;
                    render::nodes_table(&nodes, &jobs, now)
                }
                Kind::Workflows => workflows::workflows_table(&cx.get_workflows(name).await?, now),
                Kind::Endpoints => {
                    let eps = cx.get_endpoints(name).await?;
                    endpoints::endpoints_table(&eps, cx.gateway.as_deref(), now)
                }
            };
            out(&text)?;
        }
    }
    Ok(0)
}

async fn cmd_describe(cx: &mut Ctx, kind: Kind, name: &str) -> Result<u8> {
    let now = gpuctl_common::now_ms();
    let text = match kind {
        Kind::Jobs => {
            let jobs = cx.get_jobs(Some(name)).await?;
            jobs.iter()
                .map(|j| render::describe_job(j, now))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Kind::Nodes => {
            let nodes = cx.get_nodes(Some(name)).await?;
            let jobs = cx.get_jobs(None).await?;
            nodes
                .iter()
                .map(|n| render::describe_node(n, &jobs, now))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Kind::Queues => {
            let queues = cx.get_queues(Some(name)).await?;
            let jobs = cx.get_jobs(None).await?;
            queues
                .iter()
                .map(|q| render::describe_queue(q, &jobs, now))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Kind::Workflows => cx
            .get_workflows(Some(name))
            .await?
            .iter()
            .map(|w| workflows::describe_workflow(w, now))
            .collect::<Vec<_>>()
            .join("\n"),
        Kind::Endpoints => {
            let eps = cx.get_endpoints(Some(name)).await?;
            eps.iter()
                .map(|e| endpoints::describe_endpoint(e, cx.gateway.as_deref(), now))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    out(&text)?;
    Ok(0)
}

async fn cmd_delete(cx: &mut Ctx, kind: Kind, name: &str) -> Result<u8> {
    if !matches!(kind, Kind::Jobs | Kind::Workflows | Kind::Endpoints) {
        return Err(Error::Usage(format!(
            "{} cannot be deleted; jobs, workflows and endpoints can",
            kind.api_name()
        )));
    }
    let req = DeleteRequest {
        kind: kind.api_name().into(),
        name: name.to_string(),
    };
    cx.call(
        Some(Target {
            kind: kind.singular(),
            name,
        }),
        |mut c| {
            let req = req.clone();
            async move { c.delete(req).await }
        },
    )
    .await?;
    out(&format!(
        "{}/{name} deleted
",
        kind.singular()
    ))?;
    Ok(0)
}

async fn cmd_logs(cx: &mut Ctx, job: &str, task: u32, follow: bool, attempt: u32) -> Result<u8> {
    let req = LogsRequest {
        job: job.into(),
        task_index: task,
        follow,
        attempt,
    };
    // Only opening the stream fails over; a stream that breaks ends the command.
    let mut stream = cx
        .call(job_target(job), |mut c| {
            let req = req.clone();
            async move { c.logs(req).await }
        })
        .await?
        .into_inner();
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => out_bytes(&chunk.data)?,
            Ok(None) => return Ok(0),
            Err(s) => return Err(status_error(s, job_target(job), cx.urls())),
        }
    }
}

fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v
}

async fn cmd_cordon(cx: &mut Ctx, node: &str, cordon: bool) -> Result<u8> {
    let req = CordonRequest {
        node: node.into(),
        cordon,
    };
    let target = Some(Target {
        kind: "node",
        name: node,
    });
    cx.call(target, |mut c| {
        let req = req.clone();
        async move { c.cordon(req).await }
    })
    .await?;
    let what = if cordon { "cordoned" } else { "uncordoned" };
    out(&format!("node/{node} {what}\n"))?;
    Ok(0)
}

/// Longest single `Wait` call; the client loops until its own deadline.
const WAIT_CHUNK: Duration = Duration::from_secs(30);
/// Slack for a server that overruns the timeout it was given.
const WAIT_SLACK: Duration = Duration::from_secs(10);

async fn cmd_wait(cx: &mut Ctx, name: &str, timeout: &HumanDuration) -> Result<u8> {
    let start = tokio::time::Instant::now();
    let deadline = (!timeout.duration.is_zero()).then(|| start + timeout.duration);
    let mut phase = String::from("Pending");
    loop {
        let chunk = match deadline {
            Some(d) => d
                .saturating_duration_since(tokio::time::Instant::now())
                .min(WAIT_CHUNK),
            None => WAIT_CHUNK,
        };
        // timeout_ms 0 would mean "for ever" to the server.
        let req = WaitRequest {
            name: name.into(),
            timeout_ms: (chunk.as_millis() as u64).max(1),
        };
        let call = cx.call(job_target(name), |mut c| {
            let req = req.clone();
            async move { c.wait(req).await }
        });
        match tokio::time::timeout(chunk + WAIT_SLACK, call).await {
            Err(_) => {}
            Ok(Err(e)) => return Err(e),
            Ok(Ok(resp)) => {
                let r = resp.into_inner();
                if !r.phase.is_empty() {
                    phase = r.phase.clone();
                }
                let job: Option<Job> = serde_json::from_str(&r.object_json).ok();
                let job_phase = job.as_ref().map(|j| j.status.phase);
                let wf: Option<workflows::WorkflowDoc> = if job.is_none() {
                    serde_json::from_str(&r.object_json).ok()
                } else {
                    None
                };
                let kind = if wf.is_some() { "workflow" } else { "job" };
                if r.finished || job_phase.is_some_and(JobPhase::is_terminal) {
                    let message = job
                        .as_ref()
                        .and_then(|j| j.status.message.clone())
                        .or_else(|| wf.as_ref().and_then(|w| w.status.run.message.clone()))
                        .unwrap_or_else(|| "no message".into());
                    return if job_phase == Some(JobPhase::Succeeded) || r.phase == "Succeeded" {
                        out(&format!("{kind}/{name} Succeeded\n"))?;
                        Ok(0)
                    } else {
                        eprintln!("{kind}/{name} {phase}: {message}");
                        Ok(EXIT_FAILURE)
                    };
                }
            }
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            eprintln!("error: timed out after {timeout} waiting for job/{name} (phase {phase})");
            return Ok(EXIT_TIMEOUT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("gpuctl").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn command_line_shapes() {
        let c = parse(&["get", "no", "-o", "yaml", "--server", "a:1"]);
        assert_eq!(c.server.as_deref(), Some("a:1"));
        assert!(matches!(
            c.command,
            Command::Get {
                kind: Kind::Nodes,
                name: None,
                output: Output::Yaml
            }
        ));
        let c = parse(&[
            "submit",
            "--gpus",
            "0.5",
            "--replicas",
            "2",
            "-e",
            "A=1",
            "--",
            "sh",
            "-c",
            "echo --x",
        ]);
        let Command::Submit(f) = c.command else {
            panic!()
        };
        assert_eq!(f.command, ["sh", "-c", "echo --x"]);
        assert_eq!(f.gpus, 0.5);
        assert_eq!(f.env, ["A=1"]);
        let c = parse(&["wait", "j", "--timeout", "2m"]);
        let Command::Wait { timeout, .. } = c.command else {
            panic!()
        };
        assert_eq!(timeout.duration, Duration::from_secs(120));
        let c = parse(&["wait", "j"]);
        let Command::Wait { timeout, .. } = c.command else {
            panic!()
        };
        assert_eq!(timeout.to_string(), "60s");
        let c = parse(&["apply", "-f", "a.yaml", "-f", "dir"]);
        let Command::Apply { files } = c.command else {
            panic!()
        };
        assert_eq!(files, ["a.yaml", "dir"]);
        let c = parse(&[
            "dev",
            "--gpus",
            "4xH100-80GB",
            "--gpus",
            "2xA100-40GB",
            "--nodes",
            "2",
        ]);
        let Command::Dev(d) = c.command else { panic!() };
        assert_eq!(d.gpus.len(), 2);
        assert_eq!(d.nodes, 2);
        assert_eq!(d.replicas, 1);
        assert_eq!(d.restart_delay.duration, Duration::from_secs(2));
        let c = parse(&["dev", "--replicas", "3", "--restart-delay", "500ms"]);
        let Command::Dev(d) = c.command else { panic!() };
        assert_eq!(d.replicas, 3);
        assert_eq!(d.restart_delay.duration, Duration::from_millis(500));
        let c = parse(&["cluster", "status", "-o", "json"]);
        assert!(matches!(
            c.command,
            Command::Cluster {
                command: ClusterCommand::Status {
                    output: Output::Json,
                    ..
                }
            }
        ));
        let c = parse(&["logs", "workflow", "wf", "--step", "train"]);
        let Command::Logs {
            job, name, step, ..
        } = c.command
        else {
            panic!()
        };
        assert_eq!(
            (job.as_str(), name.as_deref(), step.as_deref()),
            ("workflow", Some("wf"), Some("train"))
        );
        let c = parse(&["cancel", "wf", "w1"]);
        assert!(matches!(c.command, Command::Cancel { name: Some(_), .. }));
        assert!(matches!(
            parse(&["get", "wf"]).command,
            Command::Get {
                kind: Kind::Workflows,
                ..
            }
        ));
        let c = parse(&["submit", "-f", "wf.yaml", "-p", "a=1", "-p", "b=2"]);
        let Command::Submit(f) = c.command else {
            panic!()
        };
        assert_eq!(f.file.as_deref(), Some("wf.yaml"));
        assert_eq!(f.parameters, ["a=1", "b=2"]);
        assert!(Cli::try_parse_from(["gpuctl", "get", "pods"]).is_err());
        assert!(Cli::try_parse_from(["gpuctl", "wait", "j", "--timeout", "soon"]).is_err());
    }

    #[tokio::test]
    async fn unreachable_server_fails_with_exit_1() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cfg = tempfile::tempdir().unwrap();
        config::write_context(
            cfg.path(),
            &config::Context {
                server: format!("127.0.0.1:{port}"),
                state_dir: None,
                gateway: None,
            },
        )
        .unwrap();
        let env = EnvVars {
            gpuctl_config_dir: Some(cfg.path().display().to_string()),
            ..Default::default()
        };
        let e = run(parse(&["get", "jobs"]), &env).await.unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "cannot reach the gpuctl scheduler at http://127.0.0.1:{port}: connection refused"
            )),
            "{e}"
        );
        assert_eq!(e.exit_code(), 1);
        // A bad submit fails before dialling.
        let e = run(parse(&["submit", "--gpus", "1.5", "--", "x"]), &env)
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("<submit>: --gpus:"), "{e}");
    }
}
