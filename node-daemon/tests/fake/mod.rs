//! A fake scheduler for the daemon's tests: a tiny `NodeService` on
//! 127.0.0.1:0 that hands out desired sets, records what the daemon
//! reports, and (when told to) issues node credentials on `Join` and
//! requires one on every other call.

#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpuctl_node::inventory::SimulatedInventory;
use gpuctl_node::{Config, Node};
use gpuctl_proto::v1::node_service_server::{NodeService, NodeServiceServer};
use gpuctl_proto::v1::{
    Assignments, GoneWorkflowsRequest, GoneWorkflowsResponse, HeartbeatRequest, HeartbeatResponse,
    JoinRequest, JoinResponse, RegisterRequest, RegisterResponse, ReportTaskRequest,
    ReportTaskResponse, TaskAssignment, TaskPhase, WatchAssignmentsRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

pub const BOUND: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct State {
    pub registers: Vec<RegisterRequest>,
    pub heartbeats: Vec<HeartbeatRequest>,
    pub current: Assignments,
    pub watchers: Vec<mpsc::Sender<Result<Assignments, Status>>>,
    /// Workflows the fake cluster has (GoneWorkflows calls the others gone).
    pub workflows: std::collections::BTreeSet<String>,
    /// What each GoneWorkflows call asked about.
    pub asked: Vec<Vec<String>>,
    /// `Some`: Join takes this token and every other call needs one of
    /// `valid`; `None`: Join is unimplemented and nothing is checked.
    pub join_token: Option<String>,
    /// Credentials issued by Join, in order.
    pub issued: Vec<String>,
    /// Credentials accepted now (clear it to refuse them all).
    pub valid: HashSet<String>,
    /// Calls refused for their credential.
    pub refused: usize,
    /// What Join was asked, in order (only the joins that succeeded).
    pub joins: Vec<String>,
    /// Every Join call, refused or not.
    pub join_attempts: usize,
}

#[derive(Clone)]
pub struct FakeScheduler {
    pub state: Arc<Mutex<State>>,
    pub reports: mpsc::UnboundedSender<ReportTaskRequest>,
}

fn bearer<T>(request: &Request<T>) -> Option<String> {
    let h = request.metadata().get("authorization")?.to_str().ok()?;
    h.strip_prefix("Bearer ").map(str::to_string)
}

impl FakeScheduler {
    /// Replace the desired set and send it to every watcher.
    pub fn push(&self, tasks: Vec<TaskAssignment>) {
        let mut st = self.state.lock().unwrap();
        st.current.version += 1;
        st.current.tasks = tasks;
        let msg = st.current.clone();
        st.watchers.retain(|w| w.try_send(Ok(msg.clone())).is_ok());
    }
    pub fn watching(&self) -> bool {
        !self.state.lock().unwrap().watchers.is_empty()
    }
    /// With a join token: a call without a valid credential is refused.
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let mut st = self.state.lock().unwrap();
        if st.join_token.is_none() {
            return Ok(());
        }
        match bearer(request) {
            Some(t) if st.valid.contains(&t) => Ok(()),
            _ => {
                st.refused += 1;
                Err(Status::unauthenticated("unknown or revoked token"))
            }
        }
    }
    pub fn joins(&self) -> usize {
        self.state.lock().unwrap().joins.len()
    }
}

#[tonic::async_trait]
impl NodeService for FakeScheduler {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let presented = bearer(&request);
        let mut st = self.state.lock().unwrap();
        st.join_attempts += 1;
        let Some(join) = st.join_token.clone() else {
            return Err(Status::unimplemented(
                "the fake scheduler takes no join tokens",
            ));
        };
        if presented.as_deref() != Some(join.as_str()) {
            return Err(Status::unauthenticated("not a join token"));
        }
        st.joins.push(request.into_inner().node);
        let token = gpuctl_security::token::generate().token;
        st.issued.push(token.clone());
        st.valid.insert(token.clone());
        Ok(Response::new(JoinResponse { token }))
    }

    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        self.check(&request)?;
        self.state
            .lock()
            .unwrap()
            .registers
            .push(request.into_inner());
        Ok(Response::new(RegisterResponse {
            heartbeat_interval_ms: 100,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.check(&request)?;
        self.state
            .lock()
            .unwrap()
            .heartbeats
            .push(request.into_inner());
        Ok(Response::new(HeartbeatResponse {
            reregister: false,
            heartbeat_interval_ms: 0,
        }))
    }

    type WatchAssignmentsStream = ReceiverStream<Result<Assignments, Status>>;

    async fn watch_assignments(
        &self,
        request: Request<WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        self.check(&request)?;
        let (tx, rx) = mpsc::channel(64);
        let mut st = self.state.lock().unwrap();
        let _ = tx.try_send(Ok(st.current.clone()));
        st.watchers.push(tx);
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn report_task(
        &self,
        request: Request<ReportTaskRequest>,
    ) -> Result<Response<ReportTaskResponse>, Status> {
        self.check(&request)?;
        let _ = self.reports.send(request.into_inner());
        Ok(Response::new(ReportTaskResponse {}))
    }

    async fn gone_workflows(
        &self,
        request: Request<GoneWorkflowsRequest>,
    ) -> Result<Response<GoneWorkflowsResponse>, Status> {
        self.check(&request)?;
        let asked = request.into_inner().workflows;
        let mut st = self.state.lock().unwrap();
        let gone = asked
            .iter()
            .filter(|w| !st.workflows.contains(*w))
            .cloned()
            .collect();
        st.asked.push(asked);
        Ok(Response::new(GoneWorkflowsResponse { gone }))
    }
}

pub struct Harness {
    pub fake: FakeScheduler,
    pub reports: mpsc::UnboundedReceiver<ReportTaskRequest>,
    pub work: tempfile::TempDir,
    pub server: std::net::SocketAddr,
    pub agent: std::net::SocketAddr,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub node: tokio::task::JoinHandle<()>,
    /// How the daemon runs tasks that name an image.
    pub runtime: gpuctl_node::container::Runtime,
}

pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let ok = tokio::time::timeout(BOUND, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "timed out waiting for {what}");
}

/// How to start the fake scheduler and the daemon.
#[derive(Default)]
pub struct Options {
    /// List an unreachable scheduler replica before the fake one.
    pub dead_first: bool,
    /// The fake scheduler issues credentials for this join token and
    /// requires them; the daemon gets it with `--join-token-file`.
    pub join_token: Option<String>,
    /// Do not give the daemon the join token (it still needs a credential).
    pub withhold_join_token: bool,
    /// How the daemon runs tasks that name an image (default: processes).
    pub runtime: gpuctl_node::container::Runtime,
}

/// `dead_first`: list an unreachable scheduler replica before the fake one.
pub async fn start(dead_first: bool) -> Harness {
    start_with(Options {
        dead_first,
        ..Options::default()
    })
    .await
}

/// Serve a fake scheduler on 127.0.0.1:0: it, the reports it receives,
/// and its address.
pub async fn serve(
    join_token: Option<String>,
) -> (
    FakeScheduler,
    mpsc::UnboundedReceiver<ReportTaskRequest>,
    std::net::SocketAddr,
) {
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let fake = FakeScheduler {
        state: Arc::default(),
        reports: reports_tx,
    };
    fake.state.lock().unwrap().join_token = join_token;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(NodeServiceServer::new(fake.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (fake, reports, server)
}

pub async fn start_with(opts: Options) -> Harness {
    let (fake, reports, server) = serve(opts.join_token.clone()).await;
    let work = tempfile::tempdir().unwrap();
    if let Some(t) = &opts.join_token {
        std::fs::write(work.path().join("join.token"), format!("{t}\n")).unwrap();
    }
    let mut h = Harness {
        fake,
        reports,
        work,
        server,
        agent: "127.0.0.1:0".parse().unwrap(),
        stop: None,
        node: tokio::spawn(async {}),
        runtime: opts.runtime.clone(),
    };
    let join = (opts.join_token.is_some() && !opts.withhold_join_token)
        .then(|| h.work.path().join("join.token"));
    h.run_node(opts.dead_first, join, true).await;
    h
}

impl Harness {
    /// Start the daemon (again) over this work folder.
    pub async fn run_node(&mut self, dead_first: bool, join: Option<PathBuf>, wait_ready: bool) {
        let ready = self.work.path().join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let inventory = Arc::new(
            SimulatedInventory::from_specs("node-1", &["2xA100-80GB".to_string()])
                .unwrap()
                .with_inject_file(self.inject_file()),
        );
        let config = Config {
            name: "node-1".into(),
            servers: if dead_first {
                // Port 1 on loopback: nothing listens, connections are refused.
                vec![
                    "http://127.0.0.1:1".into(),
                    format!("http://{}", self.server),
                ]
            } else {
                vec![format!("http://{}", self.server)]
            },
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: "127.0.0.1:0".parse().unwrap(),
            address: None,
            work_dir: self.work.path().join("work"),
            artifact_dir: None,
            artifact_sweep: Some(Duration::from_millis(100)),
            cpu_milli: 4000,
            memory_bytes: 16 << 30,
            labels: Default::default(),
            cordon_after_unhealthy_gpus: 0,
            heartbeat_interval: Duration::from_millis(100),
            kill_grace: Duration::from_secs(1),
            task_ports: Default::default(),
            fence_timeout: Duration::from_secs(7),
            supervisor_exe: Some(env!("CARGO_BIN_EXE_gpu-node").into()),
            ready_file: Some(ready.clone()),
            token_file: None,
            join_token_file: join,
            tls: None,
            replica_ca: None,
            metrics_insecure: false,
            isolation: gpuctl_node::isolation::Options {
                runtime: self.runtime.clone(),
                ..Default::default()
            },
        };
        let node = Node::bind(config, inventory).await.unwrap();
        self.agent = node.agent_addr();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        self.node = tokio::spawn(node.run(async move {
            let _ = stop_rx.await;
        }));
        self.stop = Some(stop_tx);
        if !wait_ready {
            return;
        }
        wait_until("the ready file", || ready.exists()).await;
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
        assert_eq!(doc["name"], "node-1");
        assert_eq!(doc["agent"], self.agent.to_string());
        assert_eq!(doc["inventory"], "simulated");
        assert_eq!(doc["pid"], std::process::id());
        let f = self.fake.clone();
        wait_until("WatchAssignments", || f.watching()).await;
    }

    /// Stop the daemon, keeping the fake scheduler and the work folder.
    pub async fn stop_node(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(BOUND, &mut self.node)
            .await
            .expect("daemon stops in time")
            .unwrap();
        self.fake.state.lock().unwrap().watchers.clear();
    }

    pub async fn report(&mut self) -> ReportTaskRequest {
        tokio::time::timeout(BOUND, self.reports.recv())
            .await
            .expect("a report in time")
            .expect("reports channel open")
    }

    pub async fn no_report_for(&mut self, d: Duration) {
        if let Ok(r) = tokio::time::timeout(d, self.reports.recv()).await {
            panic!("unexpected report {r:?}");
        }
    }

    /// Where lines `GPU XID` make the simulated GPUs report an XID.
    pub fn inject_file(&self) -> PathBuf {
        self.work.path().join("work").join("inject-xid")
    }

    pub fn token_file(&self) -> PathBuf {
        self.work.path().join("work/node.token")
    }

    pub fn log(&self, job: &str) -> PathBuf {
        self.work
            .path()
            .join("work/logs")
            .join(job)
            .join("task-0-attempt-1.log")
    }

    pub async fn shutdown(mut self) {
        self.stop_node().await;
    }
}

/// A phase by the name the scheduler's users know it by ("Bound").
pub fn phase_named(name: &str) -> TaskPhase {
    TaskPhase::from_str_name(&format!("TASK_PHASE_{}", name.to_ascii_uppercase()))
        .unwrap_or_else(|| panic!("no task phase {name:?}"))
}

pub fn task(job: &str, phase: &str, command: &[&str]) -> TaskAssignment {
    TaskAssignment {
        job: job.into(),
        task_index: 0,
        attempt: 1,
        task_group: "main".into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        phase: phase_named(phase).into(),
        gpu_indices: vec![1],
        job_tasks: 1,
        world_size: 1,
        ..Default::default()
    }
}

pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The daemon's `/metrics` text (its address from the ready file), by a plain
/// HTTP/1.0 GET on loopback.
pub fn metrics_text(work: &Path) -> String {
    use std::io::{Read, Write};
    let ready: serde_json::Value = serde_json::from_str(&read(&work.join("ready.json"))).unwrap();
    let addr = ready["metrics"].as_str().unwrap().to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
