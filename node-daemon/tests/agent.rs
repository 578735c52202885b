//! The daemon against a fake scheduler: a tiny `NodeService` on 127.0.0.1:0
//! that hands out desired sets and records what the daemon reports.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpuctl_node::agent::LOST_MESSAGE;
use gpuctl_node::inventory::SimulatedInventory;
use gpuctl_node::{Config, Node};
use gpuctl_proto::v1::node_agent_client::NodeAgentClient;
use gpuctl_proto::v1::node_service_server::{NodeService, NodeServiceServer};
use gpuctl_proto::v1::{
    Assignments, GoneWorkflowsRequest, GoneWorkflowsResponse, HeartbeatRequest, HeartbeatResponse,
    ReadLogsRequest, RegisterRequest, RegisterResponse, ReportTaskRequest, ReportTaskResponse,
    TaskAssignment, TaskPhase, WatchAssignmentsRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

const BOUND: Duration = Duration::from_secs(10);

#[derive(Default)]
struct State {
    registers: Vec<RegisterRequest>,
    heartbeats: Vec<HeartbeatRequest>,
    current: Assignments,
    watchers: Vec<mpsc::Sender<Result<Assignments, Status>>>,
    /// Workflows the fake cluster has (GoneWorkflows calls the others gone).
    workflows: std::collections::BTreeSet<String>,
    /// What each GoneWorkflows call asked about.
    asked: Vec<Vec<String>>,
}

#[derive(Clone)]
struct FakeScheduler {
    state: Arc<Mutex<State>>,
    reports: mpsc::UnboundedSender<ReportTaskRequest>,
}

impl FakeScheduler {
    /// Replace the desired set and send it to every watcher.
    fn push(&self, tasks: Vec<TaskAssignment>) {
        let mut st = self.state.lock().unwrap();
        st.current.version += 1;
        st.current.tasks = tasks;
        let msg = st.current.clone();
        st.watchers.retain(|w| w.try_send(Ok(msg.clone())).is_ok());
    }
    fn watching(&self) -> bool {
        !self.state.lock().unwrap().watchers.is_empty()
    }
}

#[tonic::async_trait]
impl NodeService for FakeScheduler {
    async fn join(
        &self,
        _request: Request<gpuctl_proto::v1::JoinRequest>,
    ) -> Result<Response<gpuctl_proto::v1::JoinResponse>, Status> {
        Err(Status::unimplemented(
            "the fake scheduler takes no join tokens",
        ))
    }

    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
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
        self.state
            .lock()
            .unwrap()
            .heartbeats
            .push(request.into_inner());
        Ok(Response::new(HeartbeatResponse { reregister: false }))
    }

    type WatchAssignmentsStream = ReceiverStream<Result<Assignments, Status>>;

    async fn watch_assignments(
        &self,
        _request: Request<WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
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
        let _ = self.reports.send(request.into_inner());
        Ok(Response::new(ReportTaskResponse {}))
    }

    async fn gone_workflows(
        &self,
        request: Request<GoneWorkflowsRequest>,
    ) -> Result<Response<GoneWorkflowsResponse>, Status> {
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

struct Harness {
    fake: FakeScheduler,
    reports: mpsc::UnboundedReceiver<ReportTaskRequest>,
    work: tempfile::TempDir,
    agent: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    node: tokio::task::JoinHandle<()>,
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let ok = tokio::time::timeout(BOUND, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "timed out waiting for {what}");
}

/// `dead_first`: list an unreachable scheduler replica before the fake one.
async fn start(dead_first: bool) -> Harness {
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let fake = FakeScheduler {
        state: Arc::default(),
        reports: reports_tx,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(NodeServiceServer::new(fake.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let work = tempfile::tempdir().unwrap();
    let ready = work.path().join("ready.json");
    let inventory =
        Arc::new(SimulatedInventory::from_specs("node-1", &["2xA100-80GB".to_string()]).unwrap());
    let config = Config {
        name: "node-1".into(),
        servers: if dead_first {
            // Port 1 on loopback: nothing listens, connections are refused.
            vec!["http://127.0.0.1:1".into(), format!("http://{server_addr}")]
        } else {
            vec![format!("http://{server_addr}")]
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        address: None,
        work_dir: work.path().join("work"),
        artifact_dir: None,
        artifact_sweep: Some(Duration::from_millis(100)),
        cpu_milli: 4000,
        memory_bytes: 16 << 30,
        labels: Default::default(),
        heartbeat_interval: Duration::from_millis(100),
        kill_grace: Duration::from_secs(1),
        task_ports: Default::default(),
        ready_file: Some(ready.clone()),
        tls: None,
    };
    let node = Node::bind(config, inventory).await.unwrap();
    let agent = node.agent_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(node.run(async move {
        let _ = stop_rx.await;
    }));
    wait_until("the ready file", || ready.exists()).await;
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    assert_eq!(doc["name"], "node-1");
    assert_eq!(doc["agent"], agent.to_string());
    assert_eq!(doc["inventory"], "simulated");
    assert_eq!(doc["pid"], std::process::id());
    let f = fake.clone();
    wait_until("WatchAssignments", || f.watching()).await;
    Harness {
        fake,
        reports,
        work,
        agent,
        stop: Some(stop_tx),
        node,
    }
}

impl Harness {
    async fn report(&mut self) -> ReportTaskRequest {
        tokio::time::timeout(BOUND, self.reports.recv())
            .await
            .expect("a report in time")
            .expect("reports channel open")
    }

    async fn no_report_for(&mut self, d: Duration) {
        if let Ok(r) = tokio::time::timeout(d, self.reports.recv()).await {
            panic!("unexpected report {r:?}");
        }
    }

    fn log(&self, job: &str) -> PathBuf {
        self.work
            .path()
            .join("work/logs")
            .join(job)
            .join("task-0-attempt-1.log")
    }

    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(BOUND, &mut self.node)
            .await
            .expect("daemon stops in time")
            .unwrap();
    }
}

/// A phase by the name the scheduler's users know it by ("Bound").
fn phase_named(name: &str) -> TaskPhase {
    TaskPhase::from_str_name(&format!("TASK_PHASE_{}", name.to_ascii_uppercase()))
        .unwrap_or_else(|| panic!("no task phase {name:?}"))
}

fn task(job: &str, phase: &str, command: &[&str]) -> TaskAssignment {
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

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_an_assignment_once_and_reports_it() {
    let mut h = start(false).await;
    {
        let st = h.fake.state.lock().unwrap();
        let reg = &st.registers[0];
        assert_eq!(reg.name, "node-1");
        assert_eq!(reg.inventory, "simulated");
        assert_eq!(reg.gpus.len(), 2);
        assert_eq!(reg.agent_endpoint, format!("http://{}", h.agent));
        assert_eq!(reg.address, "127.0.0.1");
        assert_eq!(reg.cpu_milli, 4000);
    }
    let hello = task(
        "hello",
        "Bound",
        &[
            "sh",
            "-c",
            "echo $GPUCTL_JOB gpus=$CUDA_VISIBLE_DEVICES; sleep 0.3",
        ],
    );
    h.fake.push(vec![hello.clone()]);
    let r = h.report().await;
    assert_eq!((r.job.as_str(), r.phase()), ("hello", TaskPhase::Running));
    assert_eq!(r.node, "node-1");
    assert!(r.pid > 1);
    // While it runs, its GPU shows load in the heartbeat.
    let f = h.fake.clone();
    wait_until("a heartbeat with GPU 1 busy", || {
        f.state
            .lock()
            .unwrap()
            .heartbeats
            .iter()
            .any(|hb| hb.metrics.len() == 2 && hb.metrics[1].utilization_ratio == 1.0)
    })
    .await;
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Succeeded);
    assert_eq!(r.exit_code, 0);
    assert_eq!(read(&h.log("hello")), "hello gpus=1\n");

    // The same assignment again, as Bound and as Running: never a second start.
    h.fake.push(vec![hello.clone()]);
    let mut running = hello.clone();
    running.set_phase(TaskPhase::Running);
    h.fake.push(vec![running]);
    h.no_report_for(Duration::from_millis(500)).await;
    assert_eq!(read(&h.log("hello")), "hello gpus=1\n");

    // The log through the NodeAgent service.
    let mut client = NodeAgentClient::connect(format!("http://{}", h.agent))
        .await
        .unwrap();
    let mut stream = client
        .read_logs(ReadLogsRequest {
            job: "hello".into(),
            task_index: 0,
            attempt: 1,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    tokio::time::timeout(BOUND, async {
        while let Some(chunk) = stream.message().await.unwrap() {
            got.extend(chunk.data);
        }
    })
    .await
    .expect("followed log of a finished task ends");
    assert_eq!(got, b"hello gpus=1\n");
    let err = client
        .read_logs(ReadLogsRequest {
            job: "nope".into(),
            task_index: 0,
            attempt: 1,
            follow: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_running_task_is_reported_lost_not_started() {
    // Also: a replica that is down is skipped for the next one.
    let mut h = start(true).await;
    let ghost = task("ghost", "Running", &["sh", "-c", "echo started"]);
    h.fake.push(vec![ghost.clone()]);
    let r = h.report().await;
    assert_eq!((r.job.as_str(), r.phase()), ("ghost", TaskPhase::Failed));
    assert_eq!(r.exit_code, -1);
    assert_eq!(r.message, LOST_MESSAGE);
    // Re-sent: reported once, never started.
    h.fake.push(vec![ghost]);
    h.no_report_for(Duration::from_millis(300)).await;
    assert!(!h.log("ghost").exists());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_cancellation() {
    let mut h = start(false).await;
    // A command that does not exist fails with 127 and says why.
    h.fake
        .push(vec![task("missing", "Bound", &["no-such-command-gpuctl"])]);
    let r = h.report().await;
    assert_eq!((r.phase(), r.exit_code), (TaskPhase::Failed, 127));
    assert!(
        r.message
            .starts_with("cannot start \"no-such-command-gpuctl\""),
        "{}",
        r.message
    );

    // A non-zero exit is Failed with its code.
    h.fake
        .push(vec![task("three", "Bound", &["sh", "-c", "exit 3"])]);
    let r = h.report().await;
    assert_eq!((r.job.as_str(), r.phase()), ("three", TaskPhase::Running));
    let r = h.report().await;
    assert_eq!((r.phase(), r.exit_code), (TaskPhase::Failed, 3));

    // A task that leaves the desired set has its whole group stopped.
    h.fake.push(vec![task(
        "long",
        "Bound",
        &["sh", "-c", "sleep 30 & sleep 30"],
    )]);
    let r = h.report().await;
    assert_eq!((r.job.as_str(), r.phase()), ("long", TaskPhase::Running));
    let pid = r.pid;
    assert!(alive(pid));
    h.fake.push(vec![]);
    wait_until("the cancelled task's process group to go", || !alive(pid)).await;
    h.no_report_for(Duration::from_millis(300)).await;

    // On shutdown, running tasks are stopped and reported.
    h.fake
        .push(vec![task("tail", "Bound", &["sh", "-c", "sleep 30"])]);
    let r = h.report().await;
    assert_eq!((r.job.as_str(), r.phase()), ("tail", TaskPhase::Running));
    let pid = r.pid;
    let (stop, mut reports) = (
        h.stop.take(),
        std::mem::replace(&mut h.reports, mpsc::unbounded_channel().1),
    );
    let _ = stop.unwrap().send(());
    tokio::time::timeout(BOUND, &mut h.node)
        .await
        .expect("daemon stops in time")
        .unwrap();
    assert!(!alive(pid));
    let r = tokio::time::timeout(BOUND, reports.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.job.as_str(), r.phase(), r.exit_code),
        ("tail", TaskPhase::Failed, 143)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_task_gets_a_free_port_reported_with_running() {
    let mut h = start(false).await;
    let mut t = task(
        "ep-replica-0",
        "Bound",
        &["sh", "-c", "echo port=$PORT; sleep 0.2"],
    );
    t.wants_port = true;
    h.fake.push(vec![t]);
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Running);
    assert!(
        (20000..=32767).contains(&r.port),
        "a serving task's port, from the daemon's range, is reported: {r:?}"
    );
    let r2 = h.report().await;
    assert_eq!(r2.phase(), TaskPhase::Succeeded);
    assert_eq!(r2.port, 0);
    assert_eq!(read(&h.log("ep-replica-0")), format!("port={}\n", r.port));
    // The next replica gets another port, even though that one is free again.
    let mut t1 = task("ep-replica-1", "Bound", &["sh", "-c", "sleep 0.1"]);
    t1.wants_port = true;
    h.fake.push(vec![t1]);
    let r3 = h.report().await;
    assert_eq!(r3.phase(), TaskPhase::Running);
    assert_ne!(r3.port, r.port);
    assert_eq!(h.report().await.phase(), TaskPhase::Succeeded);
    // A task that does not serve gets no port.
    h.fake.push(vec![task(
        "plain",
        "Bound",
        &["sh", "-c", "echo port=$PORT"],
    )]);
    let r = h.report().await;
    assert_eq!((r.job.as_str(), r.port), ("plain", 0));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_is_not_reused_before_its_stopping_process_exits() {
    let mut h = start(false).await;
    // The victim ignores SIGTERM: it holds GPU 1 for the whole grace (1 s).
    let victim = task("victim", "Bound", &["sh", "-c", "trap '' TERM; sleep 30"]);
    h.fake.push(vec![victim]);
    let r = h.report().await;
    assert_eq!((r.job.as_str(), r.phase()), ("victim", TaskPhase::Running));
    let victim_pid = r.pid;

    // It is preempted: the scheduler now wants another task on GPU 1, and one
    // on GPU 0 that shares nothing with it.
    let mut other = task("other", "Bound", &["sh", "-c", "sleep 30"]);
    other.gpu_indices = vec![0];
    let preemptor = task("preemptor", "Bound", &["sh", "-c", "sleep 30"]);
    h.fake.push(vec![other.clone(), preemptor.clone()]);
    let r = h.report().await;
    assert_eq!(
        (r.job.as_str(), r.phase()),
        ("other", TaskPhase::Running),
        "a task on another GPU starts at once"
    );
    // The preemptor waits while the victim's process lives...
    h.no_report_for(Duration::from_millis(500)).await;
    assert!(alive(victim_pid), "SIGTERM is ignored until SIGKILL");
    // ...and starts once it is gone.
    let r = h.report().await;
    assert_eq!(
        (r.job.as_str(), r.phase()),
        ("preemptor", TaskPhase::Running)
    );
    assert!(!alive(victim_pid), "started only after the victim exited");

    // Shares that fit beside a stopping process do not wait: 500 + 500 milli.
    let mut half = task("half-a", "Bound", &["sh", "-c", "trap '' TERM; sleep 30"]);
    half.gpu_indices = vec![0];
    half.gpu_milli = vec![500];
    h.fake.push(vec![preemptor.clone(), half.clone()]);
    let r = h.report().await;
    assert_eq!((r.job.as_str(), r.phase()), ("half-a", TaskPhase::Running));
    let half_pid = r.pid;
    let mut half_b = half.clone();
    half_b.job = "half-b".into();
    half_b.command = vec!["sh".into(), "-c".into(), "sleep 30".into()];
    h.fake.push(vec![preemptor.clone(), half_b.clone()]);
    let r = h.report().await;
    assert_eq!((r.job.as_str(), r.phase()), ("half-b", TaskPhase::Running));
    assert!(alive(half_pid), "half-a is still stopping beside it");

    // A waiting task that is no longer wanted is dropped, never started.
    let mut whole = task("whole", "Bound", &["sh", "-c", "sleep 30"]);
    whole.gpu_indices = vec![0];
    h.fake.push(vec![preemptor.clone(), whole]);
    h.no_report_for(Duration::from_millis(300)).await;
    h.fake.push(vec![preemptor]);
    h.no_report_for(Duration::from_millis(1500)).await;
    h.shutdown().await;
}

#[tokio::test]
async fn artifacts_of_workflows_the_cluster_deleted_are_removed() {
    let h = start(false).await;
    h.fake.state.lock().unwrap().workflows.insert("live".into());
    let store = h.work.path().join("work").join("artifacts");
    for wf in ["live", "deleted"] {
        let dir = store.join(wf).join("step");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("data"), wf).unwrap();
    }
    let gone = store.join("deleted");
    wait_until("the deleted workflow's artifacts are removed", || {
        !gone.exists()
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(store.join("live").join("step").join("data")).unwrap(),
        "live"
    );
    let asked = h.fake.state.lock().unwrap().asked.clone();
    assert!(
        asked.iter().any(|a| a == &["deleted", "live"]),
        "asked {asked:?}"
    );
}
