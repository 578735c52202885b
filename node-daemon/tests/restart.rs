//! The real `gpu-node` binary, SIGKILLed under running tasks: their
//! supervisors keep them running, a restarted daemon takes them back
//! without starting them again and reports how they end, and a daemon that
//! never comes back has its tasks stopped by their fence.

mod fake;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gpuctl_proto::v1::node_agent_client::NodeAgentClient;
use gpuctl_proto::v1::{ReadLogsRequest, ReportTaskRequest, TaskPhase};
use tokio::sync::mpsc;

use fake::{alive, read, serve, task, wait_until, FakeScheduler, BOUND};

/// A `gpu-node` process against the fake scheduler, over one work folder.
struct Daemon {
    child: Option<Child>,
    work: PathBuf,
    server: std::net::SocketAddr,
    fence: &'static str,
}

impl Daemon {
    fn ready_file(&self) -> PathBuf {
        self.work.join("ready.json")
    }

    /// Start it (again) and wait for its ready file.
    async fn start(&mut self, fake: &FakeScheduler) {
        let _ = std::fs::remove_file(self.ready_file());
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join("daemon.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gpu-node"))
            .args(["--server", &format!("http://{}", self.server)])
            .args(["--name", "node-1", "--gpus", "2xA100-80GB"])
            .args(["--cpus", "4", "--memory", "16Gi"])
            .arg("--work-dir")
            .arg(self.work.join("work"))
            .arg("--ready-file")
            .arg(self.ready_file())
            .args(["--kill-grace-ms", "1000", "--fence-timeout", self.fence])
            .args(["--artifact-sweep", "60m", "--insecure"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let ready = self.ready_file();
        let ok = tokio::time::timeout(BOUND, async {
            while !ready.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            ok.is_ok(),
            "no ready file from the daemon; its output:\n{}",
            read(&self.work.join("daemon.log"))
        );
        let f = fake.clone();
        wait_until("WatchAssignments", || f.watching()).await;
    }

    /// SIGKILL: no chance to stop anything.
    fn kill(&mut self, fake: &FakeScheduler) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        fake.state.lock().unwrap().watchers.clear();
    }

    /// SIGTERM and wait (bounded): the daemon stops its tasks.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + BOUND;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The NodeAgent (log) service's address, from the ready file.
    fn agent(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&read(&self.ready_file())).unwrap();
        format!("http://{}", v["agent"].as_str().unwrap())
    }

    fn log(&self, job: &str) -> PathBuf {
        self.work
            .join("work/logs")
            .join(job)
            .join("task-0-attempt-1.log")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn next(reports: &mut mpsc::UnboundedReceiver<ReportTaskRequest>) -> ReportTaskRequest {
    tokio::time::timeout(BOUND, reports.recv())
        .await
        .expect("a report in time")
        .expect("reports channel open")
}

/// Reports until every job in `jobs` has one of phase `phase`, by job.
async fn collect(
    reports: &mut mpsc::UnboundedReceiver<ReportTaskRequest>,
    phases: &[TaskPhase],
    jobs: &[&str],
) -> std::collections::BTreeMap<String, ReportTaskRequest> {
    let mut got = std::collections::BTreeMap::new();
    while got.len() < jobs.len() {
        let r = next(reports).await;
        assert!(
            jobs.contains(&r.job.as_str()) && phases.contains(&r.phase()),
            "unexpected report {r:?}"
        );
        got.insert(r.job.clone(), r);
    }
    got
}

/// A task that runs until `gate` exists, then exits with `code`.
fn gated(job: &str, gpu: u32, gate: &Path, code: i32) -> gpuctl_proto::v1::TaskAssignment {
    let script = format!(
        "echo started; while [ ! -e '{}' ]; do sleep 0.05; done; echo done; exit {code}",
        gate.display()
    );
    let mut t = task(job, "Bound", &["sh", "-c", &script]);
    t.gpu_indices = vec![gpu];
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_tasks_survive_a_daemon_killed_and_restarted() {
    let (fake, mut reports, server) = serve(None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon {
        child: None,
        work: dir.path().to_path_buf(),
        server,
        fence: "5s",
    };
    d.start(&fake).await;
    // A gang of two (one GPU each) and a third task.
    let gate = dir.path().join("gate");
    let gate_c = dir.path().join("gate-c");
    let (a, b, c) = (
        gated("rank-0", 0, &gate, 0),
        gated("rank-1", 1, &gate, 3),
        gated("third", 0, &gate_c, 5),
    );
    fake.push(vec![a.clone(), b.clone(), c.clone()]);
    let running = collect(
        &mut reports,
        &[TaskPhase::Running],
        &["rank-0", "rank-1", "third"],
    )
    .await;
    let pids: Vec<u32> = running.values().map(|r| r.pid).collect();
    assert!(pids.iter().all(|&p| p > 1 && alive(p)), "{running:?}");

    // The daemon dies; its tasks do not.
    d.kill(&fake);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pids.iter().all(|&p| alive(p)), "tasks outlive their daemon");
    // One ends while no daemon runs: its supervisor records the exit.
    std::fs::write(&gate_c, "").unwrap();
    let third_pid = running["third"].pid;
    let third_exit = dir.path().join("work/supervisors/third.0.1/exit.json");
    wait_until("the third task's exit to be recorded", || {
        third_exit.exists()
    })
    .await;
    assert!(!alive(third_pid));

    // Back (within the fence): the live ones are taken back, not restarted.
    d.start(&fake).await;
    let mut back = collect(
        &mut reports,
        &[TaskPhase::Running, TaskPhase::Failed],
        &["rank-0", "rank-1", "third"],
    )
    .await;
    let third = back.remove("third").unwrap();
    assert_eq!(
        (third.phase(), third.exit_code, third.message.as_str()),
        (
            TaskPhase::Failed,
            5,
            "exited with code 5; last output: started | done"
        ),
        "the exit recorded while the daemon was down is reported"
    );
    for (job, r) in &back {
        assert_eq!(r.phase(), TaskPhase::Running, "{job}");
        assert_eq!(r.pid, running[job].pid, "{job} is the same process");
    }
    // The scheduler still wants them (as Running): nothing starts twice,
    // nothing is reported lost.
    let mut a_run = a.clone();
    a_run.set_phase(TaskPhase::Running);
    let mut b_run = b.clone();
    b_run.set_phase(TaskPhase::Running);
    fake.push(vec![a_run.clone(), b_run.clone()]);
    if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(500), reports.recv()).await {
        panic!("unexpected report {r:?}");
    }
    // The GPUs stay busy in the restarted daemon's heartbeats.
    let beats = fake.state.lock().unwrap().heartbeats.len();
    let f = fake.clone();
    wait_until("a heartbeat with both GPUs busy", || {
        let st = f.state.lock().unwrap();
        st.heartbeats[beats..].iter().any(|hb| {
            hb.metrics.len() == 2 && hb.metrics.iter().all(|m| m.utilization_ratio == 1.0)
        })
    })
    .await;

    // Their logs stream from the restarted daemon, and a followed one ends
    // when its task does.
    let mut logs = NodeAgentClient::connect(d.agent()).await.unwrap();
    let mut stream = logs
        .read_logs(ReadLogsRequest {
            job: "rank-0".into(),
            task_index: 0,
            attempt: 1,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let followed = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(chunk) = stream.message().await.unwrap() {
            got.extend(chunk.data);
        }
        String::from_utf8(got).unwrap()
    });

    // They finish with their own exit codes, on attempt 1.
    std::fs::write(&gate, "").unwrap();
    let done = collect(
        &mut reports,
        &[TaskPhase::Succeeded, TaskPhase::Failed],
        &["rank-0", "rank-1"],
    )
    .await;
    let r0 = &done["rank-0"];
    let r1 = &done["rank-1"];
    assert_eq!(
        (r0.phase(), r0.exit_code, r0.attempt),
        (TaskPhase::Succeeded, 0, 1)
    );
    assert_eq!(
        (r1.phase(), r1.exit_code, r1.attempt),
        (TaskPhase::Failed, 3, 1)
    );
    let followed = tokio::time::timeout(BOUND, followed)
        .await
        .expect("the followed log ends with its task")
        .unwrap();
    assert_eq!(followed, "started\ndone\n");
    for job in ["rank-0", "rank-1", "third"] {
        let log = read(&d.log(job));
        assert_eq!(log.matches("started\n").count(), 1, "{job} ran once: {log}");
        assert!(log.contains("done\n"), "{job}: {log}");
    }
    // Their records are gone once reported.
    let sup = dir.path().join("work/supervisors");
    wait_until("the supervisors' folders to go", || {
        std::fs::read_dir(&sup)
            .map(|r| r.count() == 0)
            .unwrap_or(true)
    })
    .await;
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_never_comes_back_has_its_tasks_fenced() {
    let (fake, mut reports, server) = serve(None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon {
        child: None,
        work: dir.path().to_path_buf(),
        server,
        fence: "2s",
    };
    d.start(&fake).await;
    // It ignores SIGTERM: the fence's SIGKILL comes at most 1 s later.
    let t = task("orphan", "Bound", &["sh", "-c", "trap '' TERM; sleep 60"]);
    fake.push(vec![t]);
    let r = next(&mut reports).await;
    assert_eq!((r.job.as_str(), r.phase()), ("orphan", TaskPhase::Running));
    let pid = r.pid;
    // Healthy: the lease moves with every heartbeat, so nothing is fenced.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(alive(pid), "fenced while the daemon reached the scheduler");

    d.kill(&fake);
    let killed = Instant::now();
    wait_until("the fence to stop the orphan", || !alive(pid)).await;
    let after = killed.elapsed();
    // 2 s fence (less the lease's last move before the kill), checked
    // every second, then 1 s grace.
    assert!(
        after >= Duration::from_millis(1500),
        "fenced after {after:?}"
    );
    let exit = dir.path().join("work/supervisors/orphan.0.1/exit.json");
    wait_until("the fenced exit to be recorded", || exit.exists()).await;
    let v: serde_json::Value = serde_json::from_str(&read(&exit)).unwrap();
    assert_eq!(v["code"], 128 + 9);
    assert_eq!(
        v["message"],
        "stopped: the node daemon has not reached the scheduler for 2s (fenced)"
    );
    assert!(read(&d.log("orphan")).contains("(fenced)"));

    // A daemon started later reports it with that message.
    d.start(&fake).await;
    let r = next(&mut reports).await;
    assert_eq!(
        (r.job.as_str(), r.phase(), r.exit_code),
        ("orphan", TaskPhase::Failed, 137)
    );
    assert!(r.message.ends_with("(fenced)"), "{}", r.message);
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_that_died_makes_its_task_fail_saying_so() {
    let (fake, mut reports, server) = serve(None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon {
        child: None,
        work: dir.path().to_path_buf(),
        server,
        fence: "5s",
    };
    d.start(&fake).await;
    fake.push(vec![task("victim", "Bound", &["sh", "-c", "sleep 60"])]);
    let r = next(&mut reports).await;
    assert_eq!(r.phase(), TaskPhase::Running);
    let pid = r.pid;
    d.kill(&fake);
    // Its supervisor dies too, without recording anything.
    let state = dir.path().join("work/supervisors/victim.0.1/state.json");
    let v: serde_json::Value = serde_json::from_str(&read(&state)).unwrap();
    let sup = v["supervisor"]["pid"].as_u64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("the supervisor to die", || !alive(sup as u32)).await;
    d.start(&fake).await;
    let r = next(&mut reports).await;
    assert_eq!((r.phase(), r.exit_code), (TaskPhase::Failed, -1));
    assert!(
        r.message.contains("supervisor") && r.message.contains("died"),
        "{}",
        r.message
    );
    // Nothing supervises it any more: it is killed, not left on its GPU.
    wait_until("the unsupervised task to be killed", || !alive(pid)).await;
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_step_taken_back_still_reports_its_outputs() {
    let (fake, mut reports, server) = serve(None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon {
        child: None,
        work: dir.path().to_path_buf(),
        server,
        fence: "5s",
    };
    d.start(&fake).await;
    let gate = dir.path().join("gate");
    let script = format!(
        "echo result-line; while [ ! -e '{}' ]; do sleep 0.05; done; echo 42 > out.txt",
        gate.display()
    );
    let mut t = task("wf-step", "Bound", &["sh", "-c", &script]);
    t.step = Some(gpuctl_proto::v1::StepIo {
        workflow: "wf".into(),
        step: "wf.s".into(),
        capture_result: true,
        output_parameters: vec![gpuctl_proto::v1::OutputParameter {
            name: "answer".into(),
            path: "out.txt".into(),
        }],
        ..Default::default()
    });
    fake.push(vec![t]);
    let r = next(&mut reports).await;
    assert_eq!((r.job.as_str(), r.phase()), ("wf-step", TaskPhase::Running));
    let pid = r.pid;
    d.kill(&fake);
    d.start(&fake).await;
    let r = next(&mut reports).await;
    assert_eq!((r.phase(), r.pid), (TaskPhase::Running, pid), "taken back");
    std::fs::write(&gate, "").unwrap();
    let r = next(&mut reports).await;
    assert_eq!((r.phase(), r.exit_code), (TaskPhase::Succeeded, 0), "{r:?}");
    let out = r.outputs.expect("a step's outputs");
    assert_eq!(
        (out.has_result, out.result.as_str()),
        (true, "result-line\n")
    );
    assert_eq!(
        out.parameters.get("answer").map(|v| v.trim()),
        Some("42"),
        "{out:?}"
    );
    d.stop();
}
