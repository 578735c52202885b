//! A warm supervisor that is gone by the time its task comes: the task is
//! started by a supervisor made for it instead of failing.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpuctl_node::isolation::Isolation;
use gpuctl_node::runtime::StartSpec;
use gpuctl_node::supervisor::pool::Pool;
use gpuctl_node::supervisor::record::Meta;
use gpuctl_node::supervisor::Supervisors;

/// A pool member that says it is ready and then closes its standard input,
/// as a warm supervisor that died after the pool last looked at it: the
/// task written to it cannot be read. It stays alive, so the pool still
/// hands it out.
fn unreadable_member(dir: &std::path::Path) -> PathBuf {
    let exe = dir.join("gone-before-reading");
    std::fs::write(
        &exe,
        "#!/bin/sh\necho '{\"warm\":\"ready\"}'\nexec 0<&-\nexec sleep 30\n",
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

#[tokio::test]
async fn a_warm_supervisor_gone_before_it_reads_its_task_is_replaced_by_one_made_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let pool = Arc::new(Pool::new(
        1,
        unreadable_member(tmp.path()),
        vec![],
        Arc::new(Isolation::none()),
    ));
    pool.fill();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pool.ready_len() == 0 {
        assert!(
            Instant::now() < deadline,
            "the pool member never said ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sup = Supervisors {
        root: work.join("supervisors"),
        exe: PathBuf::from(env!("CARGO_BIN_EXE_gpu-node")),
        lease: work.join("lease"),
        fence: Duration::ZERO,
        kill_grace: Duration::from_secs(1),
        warm: Some(pool.clone()),
    };
    let out = tmp.path().join("out");
    let log = tmp.path().join("task.log");
    let command = vec![
        "sh".to_string(),
        "-c".to_string(),
        format!("echo \"ran $GREETING\" > '{}'", out.display()),
    ];
    let env = BTreeMap::from([("GREETING".to_string(), "hello".to_string())]);
    let meta = Meta {
        job: "j".into(),
        task_index: 0,
        attempt: 1,
        gpus: vec![],
        milli: vec![],
        port: 0,
        scratch: None,
        step: None,
        container: None,
    };
    let spec = StartSpec {
        command: &command,
        env: &env,
        working_dir: "",
        log: &log,
        stdout: None,
        run_as: None,
        isolation: None,
        container: None,
    };
    let mut launched = sup.launch(&spec, &meta).unwrap();
    let warm_pid = launched.pid();
    let pid = launched.ready().await.expect("the task starts");
    assert!(pid > 0);
    assert_ne!(
        launched.pid(),
        warm_pid,
        "the supervisor that started the task is not the one that was gone"
    );
    let exit = tokio::time::timeout(Duration::from_secs(30), launched.wait())
        .await
        .expect("the task ends");
    assert_eq!(exit.code, 0, "{exit:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "ran hello\n");
    pool.close().await;
}
