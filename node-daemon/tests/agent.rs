//! The daemon against a fake scheduler (`fake/`): a tiny `NodeService` on
//! 127.0.0.1:0 that hands out desired sets and records what the daemon
//! reports, and checks the node's credential when told to.

mod fake;

use std::time::Duration;

use gpuctl_node::agent::LOST_MESSAGE;
use gpuctl_proto::v1::node_agent_client::NodeAgentClient;
use gpuctl_proto::v1::{ReadLogsRequest, TaskPhase};
use tokio::sync::mpsc;

use fake::{alive, metrics_text, read, start, start_with, task, wait_until, Options, BOUND};

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
    // Its last output is in the message.
    h.fake.push(vec![task(
        "three",
        "Bound",
        &[
            "sh",
            "-c",
            "echo loading; echo 'no model at /m/x.onnx' >&2; exit 3",
        ],
    )]);
    let r = h.report().await;
    assert_eq!((r.job.as_str(), r.phase()), ("three", TaskPhase::Running));
    let r = h.report().await;
    assert_eq!((r.phase(), r.exit_code), (TaskPhase::Failed, 3));
    assert_eq!(
        r.message,
        "exited with code 3; last output: loading | no model at /m/x.onnx"
    );

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
    // Stopped because it was no longer assigned (a cancel, a scale-down): not
    // a failure of the task in the node's metrics.
    let metrics = metrics_text(h.work.path());
    for line in [
        r#"gpuctl_node_task_exits_total{result="failed"} 2"#,
        r#"gpuctl_node_task_exits_total{result="stopped"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_once_keeps_the_credential_private_and_reuses_it() {
    use std::os::unix::fs::PermissionsExt;
    let join = gpuctl_security::token::generate().token;
    let mut h = start_with(Options {
        join_token: Some(join),
        ..Options::default()
    })
    .await;
    // Registered (the ready file) and watching: with the issued credential.
    let issued = {
        let st = h.fake.state.lock().unwrap();
        assert_eq!(st.joins, ["node-1"]);
        assert_eq!(st.refused, 0, "no call went without the credential");
        st.issued[0].clone()
    };
    let file = h.token_file();
    assert_eq!(read(&file), format!("{issued}\n"));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the credential file is private");
    // Reports carry it too.
    h.fake.push(vec![task("hello", "Bound", &["true"])]);
    assert_eq!(h.report().await.phase(), TaskPhase::Running);
    assert_eq!(h.report().await.phase(), TaskPhase::Succeeded);

    // A restart uses the stored credential: no second join.
    h.stop_node().await;
    let registers = h.fake.state.lock().unwrap().registers.len();
    let join_file = h.work.path().join("join.token");
    h.run_node(false, Some(join_file), true).await;
    {
        let st = h.fake.state.lock().unwrap();
        assert_eq!(st.joins.len(), 1, "the restarted daemon did not join again");
        assert!(st.registers.len() > registers);
        assert_eq!(st.refused, 0);
    }
    assert_eq!(read(&file), format!("{issued}\n"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_credential_is_replaced_by_one_join() {
    let join = gpuctl_security::token::generate().token;
    let mut h = start_with(Options {
        join_token: Some(join),
        ..Options::default()
    })
    .await;
    // The scheduler forgets every credential (revoked).
    h.fake.state.lock().unwrap().valid.clear();
    let f = h.fake.clone();
    wait_until("a second join", || f.joins() == 2).await;
    let beats = f.state.lock().unwrap().heartbeats.len();
    wait_until("heartbeats with the new credential", || {
        f.state.lock().unwrap().heartbeats.len() > beats + 2
    })
    .await;
    let (issued, refused) = {
        let st = f.state.lock().unwrap();
        (st.issued.clone(), st.refused)
    };
    assert!(refused >= 1);
    assert_eq!(issued.len(), 2, "one join for the refused credential");
    assert_eq!(read(&h.token_file()), format!("{}\n", issued[1]));
    // The calls that were refused went through again: reports are not lost.
    h.fake.push(vec![task("after", "Bound", &["true"])]);
    assert_eq!(h.report().await.phase(), TaskPhase::Running);
    assert_eq!(h.report().await.phase(), TaskPhase::Succeeded);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.joins(), 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_join_token_a_refused_credential_is_retried_not_replaced() {
    let join = gpuctl_security::token::generate().token;
    let mut h = start_with(Options {
        join_token: Some(join),
        ..Options::default()
    })
    .await;
    h.stop_node().await;
    // Restarted without the join token, with a credential the scheduler
    // no longer accepts.
    h.fake.state.lock().unwrap().valid.clear();
    h.run_node(false, None, false).await;
    let f = h.fake.clone();
    wait_until("several refused calls", || {
        f.state.lock().unwrap().refused >= 3
    })
    .await;
    {
        let st = f.state.lock().unwrap();
        assert_eq!(st.joins.len(), 1, "no join without a join token");
    }
    // Accepted again (say, the operator fixed the scheduler): it registers.
    let token = read(&h.token_file()).trim().to_string();
    let registers = f.state.lock().unwrap().registers.len();
    f.state.lock().unwrap().valid.insert(token);
    wait_until("registration once accepted", || {
        f.state.lock().unwrap().registers.len() > registers
    })
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_join_token_is_retried_slowly() {
    let join = gpuctl_security::token::generate().token;
    let h = start_with(Options {
        join_token: Some(join),
        ..Options::default()
    })
    .await;
    // The node's credential and its join token are both revoked.
    {
        let mut st = h.fake.state.lock().unwrap();
        st.valid.clear();
        st.join_token = Some(gpuctl_security::token::generate().token);
    }
    let f = h.fake.clone();
    wait_until("a re-join attempt", || {
        f.state.lock().unwrap().join_attempts >= 2
    })
    .await;
    let refused = f.state.lock().unwrap().refused;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (attempts, refused_now, joins) = {
        let st = f.state.lock().unwrap();
        (st.join_attempts, st.refused, st.joins.len())
    };
    assert!(refused_now > refused, "the node keeps retrying its calls");
    // Joins after the first failed one wait 1 s, then 2 s: at most one more
    // in 1.5 s, however many calls were refused meanwhile.
    assert!(
        attempts <= 3,
        "{attempts} join attempts for {refused_now} refused calls"
    );
    assert_eq!(joins, 1, "only the first join got a credential");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_task_as_env_and_owner_only_files_that_go_with_it() {
    let mut h = start(false).await;
    let mut t = task(
        "secret-user",
        "Bound",
        &[
            "sh",
            "-c",
            "echo \"env=$TOKEN user=$USER_NAME\"; cat \"$GPUCTL_SECRETS_DIR/hf/TOKEN\"; echo; \
             stat -c %a \"$GPUCTL_SECRETS_DIR/hf/TOKEN\"; echo \"$GPUCTL_SECRETS_DIR\" > \"$0.dir\"",
            h.work.path().join("probe").to_str().unwrap(),
        ],
    );
    t.secret_env = [("TOKEN", "from-secret"), ("USER_NAME", "bot")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    t.env = [("TOKEN".to_string(), "from-spec".to_string())].into();
    t.secret_files = [("hf/TOKEN".to_string(), b"file-secret".to_vec())].into();
    h.fake.push(vec![t]);
    assert_eq!(h.report().await.phase(), TaskPhase::Running);
    let r = h.report().await;
    assert_eq!(
        (r.phase(), r.exit_code),
        (TaskPhase::Succeeded, 0),
        "{}",
        r.message
    );
    let log = read(&h.log("secret-user"));
    assert!(log.contains("env=from-spec user=bot"), "{log}");
    assert!(log.contains("file-secret\n400"), "{log}");
    // The files are gone once the task has ended.
    let dir = read(&h.work.path().join("probe.dir"));
    assert!(!dir.trim().is_empty());
    assert!(
        !std::path::Path::new(dir.trim()).exists(),
        "{dir} still exists"
    );

    // A task whose secret was deleted fails without starting, saying why.
    let mut t = task("no-secret", "Bound", &["sh", "-c", "echo started"]);
    t.secret_error = "secret \"hf\" no longer exists".into();
    h.fake.push(vec![t]);
    let r = h.report().await;
    assert_eq!(r.phase(), TaskPhase::Failed);
    assert_eq!(
        r.message,
        "cannot start the task: secret \"hf\" no longer exists"
    );
    assert!(!read(&h.log("no-secret")).contains("started"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_under_tmp_stays_visible_in_the_tasks_own_tmp() {
    let mut h = start(false).await;
    // A checkout (or a user's program) under /tmp, outside the daemon's
    // work folder: the task's own /tmp must not hide it.
    let elsewhere = tempfile::tempdir().unwrap();
    let prog = elsewhere.path().join("prog.sh");
    std::fs::write(&prog, "#!/bin/sh\necho ran from $0\nexit 4\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.fake
        .push(vec![task("prog", "Bound", &[prog.to_str().unwrap()])]);
    let r = h.report().await;
    assert_eq!((r.job.as_str(), r.phase()), ("prog", TaskPhase::Running));
    let r = h.report().await;
    assert_eq!(
        (r.phase(), r.exit_code),
        (TaskPhase::Failed, 4),
        "{}",
        r.message
    );
    assert!(read(&h.log("prog")).contains("ran from"));
}
