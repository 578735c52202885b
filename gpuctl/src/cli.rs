//! The command line's shape: the clap types for every command and flag, and
//! the few words they take (kinds, output formats). Parsing only: what a
//! command does lives in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration::HumanDuration;
use crate::manifest::SubmitArgs;

/// The gpuctl command line.
#[derive(Debug, Parser)]
#[command(
    name = "gpuctl",
    version,
    about = "Run batch jobs on a gpuctl GPU cluster",
    after_help = "The server address comes from --server, then GPUCTL_SERVER, then the context \
                  file \"gpuctl dev\" writes ($GPUCTL_CONFIG_DIR or ~/.config/gpuctl/context.json). \
                  The token from --token, then GPUCTL_TOKEN, then that file (\"gpuctl login\" stores it)."
)]
pub struct Cli {
    /// Scheduler address(es), comma-separated, tried in order: host:port or
    /// http://host:port [env: GPUCTL_SERVER]
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,

    /// Bearer token sent on every call, over GPUCTL_TOKEN and the context's
    /// (`gpuctl login` stores one).
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// CA certificate (PEM) that https:// servers are checked against
    /// [default: `ca` in the context file]
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Talk plaintext (no TLS), to a cluster started with --insecure; for
    /// `gpuctl dev`: run the whole cluster without TLS.
    #[arg(long, global = true)]
    pub insecure: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// `gpuctl rollout ...`; each names `endpoint/NAME` (or `endpoint NAME`).
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Wait until the latest rollout is complete (exit 0), a canary's new
    /// revision is ready and takes its share (exit 0), the rollout failed
    /// (exit 1, with the replicas' reason) or the timeout passed (exit 124).
    Status {
        target: String,
        name: Option<String>,
        /// How long to wait, e.g. 60s, 5m; 0 waits for ever.
        #[arg(long, default_value = "0s")]
        timeout: HumanDuration,
        /// Print where it stands once, without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// The endpoint's revisions (or one with --revision: its spec as YAML).
    History {
        target: String,
        name: Option<String>,
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Roll back to the previous revision, or to --to-revision N: its
    /// template becomes the newest revision and rolls out.
    Undo {
        target: String,
        name: Option<String>,
        #[arg(long)]
        to_revision: Option<u64>,
    },
    /// A canary's revision gets all requests; the old one drains as new
    /// replicas become ready.
    Promote {
        target: String,
        name: Option<String>,
    },
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
    /// List jobs, nodes, queues, workflows, endpoints, users or tokens, or show one.
    Get {
        /// jobs, nodes, queues, workflows, endpoints, users or tokens (job, node,
        /// no, queue, q, workflow, wf, endpoint, ep, user, token).
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
    Cordon {
        node: String,
        /// Why, shown by `get nodes` and `describe node`.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Empty a node for maintenance: cordon it, wait for its tasks to end,
    /// then stop the rest and requeue their jobs elsewhere (no retry used).
    /// Exit 0 once the node runs nothing.
    Drain {
        node: String,
        /// How long running tasks may take to end by themselves, e.g. 30s,
        /// 5m; 0 stops them at once.
        #[arg(long, default_value = "5m")]
        timeout: HumanDuration,
        /// Why, shown by `get nodes` and `describe node`.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Mark a node schedulable again.
    Uncordon { node: String },
    /// Suspend a workflow, as `argo suspend`: no new step starts; running
    /// steps finish. `gpuctl resume` starts it again.
    Suspend {
        /// The workflow's name (or `workflow NAME`, `workflow/NAME`).
        workflow: String,
        name: Option<String>,
    },
    /// Resume a workflow, as `argo resume`: steps start again, and its
    /// `suspend` steps that wait end Succeeded.
    Resume {
        /// The workflow's name (or `workflow NAME`, `workflow/NAME`).
        workflow: String,
        name: Option<String>,
        /// Resume only the matching suspend nodes (not supported yet).
        #[arg(long)]
        node_field_selector: Option<String>,
    },
    /// Wait until a job or workflow finishes: exit 0 Succeeded, 1 Failed,
    /// Error or Cancelled, 124 timeout.
    Wait {
        job: String,
        /// How long to wait, e.g. 60s, 2m, 500ms; 0 waits for ever.
        #[arg(long, default_value = "60s")]
        timeout: HumanDuration,
    },
    /// An endpoint's rollouts, as `kubectl rollout`: status, history, undo,
    /// and promote (a canary's revision gets all requests).
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Start a whole cluster on this machine (scheduler + simulated GPU nodes).
    Dev(DevFlags),
    /// The control plane's replicas.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Store a token in the context after checking it with the scheduler:
    /// `gpuctl login --token T`, or the token on stdin.
    Login,
    /// Who the scheduler takes you for.
    Whoami,
    /// A live view in the terminal, drawn again every --interval: the nodes
    /// with their GPUs in use, or the jobs not finished yet (the web UI,
    /// `--ui-listen`, shows the same in a browser).
    Top {
        what: TopView,
        /// How often the view is read again, e.g. 2s, 500ms.
        #[arg(long, default_value = "2s")]
        interval: HumanDuration,
        /// Print the view once and exit (for scripts).
        #[arg(long)]
        once: bool,
    },
    /// Users and tokens (admins; a user may create and revoke their own tokens).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The audit log: every mutating call with who, what, result; merged
    /// from every scheduler replica, oldest first.
    Audit {
        /// The newest this many entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only this user's (or node's) calls.
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user.
    CreateUser {
        name: String,
        #[arg(long, default_value = "")]
        team: String,
        #[arg(long, value_parser = ["admin", "user", "viewer", "gateway"], default_value = "user")]
        role: String,
        /// May cancel and delete the objects of everyone in the same team.
        #[arg(long)]
        team_lead: bool,
        /// Unix uid the user's tasks run as (default: the user's name looked
        /// up on each node).
        #[arg(long)]
        uid: Option<u32>,
        /// The user's tasks may run as root.
        #[arg(long)]
        allow_root: bool,
    },
    /// Issue a token, printed once on stdout (its id and expiry on stderr).
    CreateToken {
        /// Whose token (default: yours).
        #[arg(long)]
        user: Option<String>,
        /// Lifetime, e.g. 24h, 30d (default: no expiry).
        #[arg(long)]
        ttl: Option<HumanDuration>,
        /// A node join token (for `gpu-node --join-token-file`).
        #[arg(long, conflicts_with = "user")]
        join: bool,
        /// Shown next to the token's id in `gpuctl get tokens`.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Revoke a token by its id (see `gpuctl get tokens`).
    RevokeToken { id: String },
    /// Make a node's CA, signed by the cluster CA, with which the node signs
    /// its endpoint replicas' certificates (`gpu-node --replica-ca-cert
    /// --replica-ca-key`). It may sign for the node's addresses only. Works
    /// offline: reads the cluster CA's key, calls no server.
    NodeCa {
        /// The node's name (in the CA's subject and the files' names).
        node: String,
        /// An address the node's replicas are reached at (its `--address`:
        /// an IP address or DNS name); repeat for more.
        #[arg(long = "address", required = true, value_name = "ADDR")]
        addresses: Vec<String>,
        /// The cluster CA's certificate (PEM).
        #[arg(long, value_name = "FILE")]
        cluster_ca: PathBuf,
        /// The cluster CA's private key (PEM).
        #[arg(long, value_name = "FILE")]
        cluster_ca_key: PathBuf,
        /// Where to write NODE-ca.pem and NODE-ca-key.pem (mode 0600).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
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
    /// Run every process plaintext (the global --insecure).
    #[arg(skip)]
    pub insecure: bool,
    /// Accept every caller without a token (the schedulers run with
    /// --no-auth): for comparisons such as benchmarks, never on a shared
    /// machine.
    #[arg(long)]
    pub no_auth: bool,
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
    /// How long to wait before restarting a node daemon, the gateway or
    /// (with --replicas 3 or 5) a scheduler replica that died.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub restart_delay: HumanDuration,
    /// Port of the inference gateway (0: any free port); its V2 gRPC service
    /// listens on the next port (on any free one with 0).
    #[arg(long, default_value_t = 0)]
    pub gateway_port: u16,
    /// How long the gateway holds a request for an endpoint with no ready
    /// replica before it answers 503.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub cold_start_timeout: HumanDuration,
    /// Each task in its own cgroup and with its own /tmp (on), or with
    /// neither (off: the node daemons run with --cgroups off
    /// --no-private-tmp), for comparisons such as benchmarks. Every task
    /// runs under its supervisor process either way.
    #[arg(long, value_enum, default_value_t = TaskIsolation::On, value_name = "on|off")]
    pub task_isolation: TaskIsolation,
    /// How the node daemons run tasks that name an image: process (in the
    /// host's environment; the task's events say the image was not used)
    /// or podman (in the image: `gpu-node --runtime podman`).
    #[arg(long, value_enum, default_value_t = TaskRuntime::Process, value_name = "process|podman")]
    pub runtime: TaskRuntime,
}

/// `gpuctl dev --runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TaskRuntime {
    Process,
    Podman,
}

/// `gpuctl dev --task-isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TaskIsolation {
    /// The node daemons' defaults: cgroups when the host allows them, a
    /// private /tmp per task.
    On,
    /// `gpu-node --cgroups off --no-private-tmp`.
    Off,
}

/// The object kinds `get` and `describe` know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Jobs,
    Nodes,
    Queues,
    Workflows,
    Endpoints,
    Secrets,
    Users,
    Tokens,
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
            Kind::Secrets => "secrets",
            Kind::Users => "users",
            Kind::Tokens => "tokens",
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
            Kind::Secrets => "secret",
            Kind::Users => "user",
            Kind::Tokens => "token",
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
        "secret" | "secrets" => Ok(Kind::Secrets),
        "user" | "users" => Ok(Kind::Users),
        "token" | "tokens" => Ok(Kind::Tokens),
        _ => Err(format!(
            "unknown kind {s:?} (expected jobs, nodes, queues, workflows, endpoints, secrets, users or tokens)"
        )),
    }
}

/// What `gpuctl top` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopView {
    Nodes,
    Jobs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// `workflow`, `workflows` or `wf` as the first argument of `logs` and
/// `cancel`: the next argument names a workflow.
pub fn is_workflow_word(s: &str) -> bool {
    matches!(s, "workflow" | "workflows" | "wf")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        assert_eq!(d.task_isolation, TaskIsolation::On);
        let c = parse(&["dev", "--replicas", "3", "--restart-delay", "500ms"]);
        let Command::Dev(d) = c.command else { panic!() };
        assert_eq!(d.replicas, 3);
        assert_eq!(d.restart_delay.duration, Duration::from_millis(500));
        let c = parse(&["dev", "--task-isolation", "off"]);
        let Command::Dev(d) = c.command else { panic!() };
        assert_eq!(d.task_isolation, TaskIsolation::Off);
        let bad = Cli::try_parse_from(["gpuctl", "dev", "--task-isolation", "none"]).unwrap_err();
        assert!(bad.to_string().contains("--task-isolation"), "{bad}");
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
}
