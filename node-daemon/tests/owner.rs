//! Tasks run as their owner's Unix user: real accounts made with `useradd`
//! (removed again, even when a test fails), assignments with owners from
//! the fake scheduler, and what each task and each other user can see.
//! Needs root (to make accounts and switch users); skipped otherwise.

mod fake;

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use gpuctl_proto::v1::{ReportTaskRequest, StepIo, TaskAssignment, TaskOwner, TaskPhase};

use fake::{read, start, task, Harness};

/// Unix accounts made for one test, removed (with their homes) on drop.
struct Users(Vec<String>);

impl Users {
    /// `gpuctl-t-<pid>-<tag>`, with `groups` (`-G`) when given; its uid.
    fn add(&mut self, tag: &str, groups: Option<&str>) -> (String, u32) {
        let name = format!("gpuctl-t-{}-{tag}", std::process::id());
        self.0.push(name.clone());
        let mut cmd = Command::new("useradd");
        cmd.arg("-m");
        if let Some(g) = groups {
            cmd.args(["-G", g]);
        }
        let out = cmd.arg(&name).output().expect("useradd runs");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let uid = nix::unistd::User::from_name(&name)
            .unwrap()
            .expect("the new account")
            .uid
            .as_raw();
        (name, uid)
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("userdel").args(["-r", name]).output();
        }
    }
}

fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        println!("skipping {test}: it needs root to make Unix accounts and run tasks as them");
    }
    root
}

fn owned(mut t: TaskAssignment, user: &str, uid: Option<u32>, allow_root: bool) -> TaskAssignment {
    t.owner = Some(TaskOwner {
        user: user.into(),
        uid,
        allow_root,
    });
    t.gpu_indices = vec![];
    t
}

/// The next `n` reports, by job, in the order each job's arrived.
async fn reports(h: &mut Harness, n: usize) -> HashMap<String, Vec<ReportTaskRequest>> {
    let mut by_job: HashMap<String, Vec<ReportTaskRequest>> = HashMap::new();
    for _ in 0..n {
        let r = h.report().await;
        by_job.entry(r.job.clone()).or_default().push(r);
    }
    by_job
}

/// `cat path` as `user`: its exit status and standard error.
fn cat_as(user: &str, path: &std::path::Path) -> (bool, String) {
    let out = Command::new("runuser")
        .args(["-u", user, "--", "cat"])
        .arg(path)
        .output()
        .expect("runuser runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_as_their_owners_and_keep_their_files_private() {
    if !root_or_skip("tasks_run_as_their_owners_and_keep_their_files_private") {
        return;
    }
    let mut users = Users(Vec::new());
    // A has a supplementary group (started through setpriv), B has none.
    let (a, a_uid) = users.add("a", Some("users"));
    let (b, b_uid) = users.add("b", None);
    let mut h = start(false).await;
    // Let other users walk to the log folder: only the file's mode keeps
    // them out.
    std::fs::set_permissions(h.work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script =
        "id -u; id -G; stat -c '%u %a' .; pwd; echo HOME=$HOME USER=$USER LOGNAME=$LOGNAME";
    let ta = owned(task("ja", "Bound", &["sh", "-c", script]), &a, None, false);
    // B is named by uid, as a user object with --uid would be.
    let tb = owned(
        task("jb", "Bound", &["sh", "-c", script]),
        "bee",
        Some(b_uid),
        false,
    );
    h.fake.push(vec![ta, tb]);
    let got = reports(&mut h, 4).await;
    for job in ["ja", "jb"] {
        let phases: Vec<TaskPhase> = got[job].iter().map(|r| r.phase()).collect();
        assert_eq!(
            phases,
            [TaskPhase::Running, TaskPhase::Succeeded],
            "{job}: {:?}",
            got[job]
        );
    }
    let tasks_dir = h.work.path().join("work/tasks");
    let log_a = read(&h.log("ja"));
    let lines: Vec<&str> = log_a.lines().collect();
    assert_eq!(lines[0], a_uid.to_string(), "{log_a}");
    assert!(
        lines[1].split(' ').any(|g| g == "100"),
        "A keeps its supplementary group users (100): {log_a}"
    );
    assert_eq!(
        lines[2],
        format!("{a_uid} 700"),
        "its folder is its own, 0700"
    );
    assert_eq!(lines[3], tasks_dir.join("ja-0-1").display().to_string());
    assert_eq!(lines[4], format!("HOME=/home/{a} USER={a} LOGNAME={a}"));
    let log_b = read(&h.log("jb"));
    let lines: Vec<&str> = log_b.lines().collect();
    assert_eq!(lines[0], b_uid.to_string(), "{log_b}");
    assert_eq!(lines[2], format!("{b_uid} 700"));
    assert_eq!(
        lines[4],
        format!("HOME=/home/{b} USER={b} LOGNAME={b}"),
        "a uid with a passwd entry takes its name and home"
    );
    // The folders are gone with the tasks.
    assert!(!tasks_dir.join("ja-0-1").exists());

    // The log files are their owners', 0600: A reads its own, B cannot.
    let meta = std::fs::metadata(h.log("ja")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (a_uid, 0o600));
    let (ok, err) = cat_as(&a, &h.log("ja"));
    assert!(ok, "A reads its own log: {err}");
    let (ok, err) = cat_as(&b, &h.log("ja"));
    assert!(!ok, "B read A's log");
    assert!(err.contains("Permission denied"), "{err}");
    h.shutdown().await;
    drop(users);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_who_may_not_run_here_are_refused_with_the_rule() {
    if !root_or_skip("owners_who_may_not_run_here_are_refused_with_the_rule") {
        return;
    }
    let mut h = start(false).await;
    let ghost = format!("gpuctl-t-{}-nobody", std::process::id());
    h.fake.push(vec![
        owned(task("nobody", "Bound", &["id", "-u"]), &ghost, None, false),
        owned(
            task("rootjob", "Bound", &["id", "-u"]),
            "alice",
            Some(0),
            false,
        ),
        owned(task("admin", "Bound", &["id", "-u"]), "root", None, true),
    ]);
    let got = reports(&mut h, 4).await;
    let r = &got["nobody"][0];
    assert_eq!((r.phase(), r.exit_code), (TaskPhase::Failed, 126));
    let no_account = format!(
        "user \"{ghost}\" has no Unix account on node \"node-1\"; create one or set a uid on \
         the user (gpuctl admin create-user --uid)"
    );
    assert_eq!(r.message, no_account);
    assert_eq!(read(&h.log("nobody")), format!("gpu-node: {no_account}\n"));
    let r = &got["rootjob"][0];
    assert_eq!((r.phase(), r.exit_code), (TaskPhase::Failed, 126));
    assert_eq!(
        r.message,
        "job \"rootjob\" would run as root; its owner \"alice\" is not allowed to run tasks as root"
    );
    // An owner allowed to run as root does.
    let phases: Vec<TaskPhase> = got["admin"].iter().map(|r| r.phase()).collect();
    assert_eq!(phases, [TaskPhase::Running, TaskPhase::Succeeded]);
    assert_eq!(read(&h.log("admin")), "0\n");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_reads_its_inputs_and_reports_only_its_own_files() {
    if !root_or_skip("a_step_reads_its_inputs_and_reports_only_its_own_files") {
        return;
    }
    let mut users = Users(Vec::new());
    let (a, a_uid) = users.add("s", None);
    let mut h = start(false).await;
    // The secret is root's; the step links to it and names the link as an
    // output: the daemon must not read it on the step's behalf.
    let secret = h.work.path().join("secret");
    std::fs::write(&secret, "root only\n").unwrap();
    // Inputs: one in the step's folder, one in the user's home (placed
    // with the user's rights).
    let stored = h.work.path().join("work/artifacts/wf/wf.a");
    std::fs::create_dir_all(&stored).unwrap();
    std::fs::write(stored.join("model"), "weights\n").unwrap();
    let outside = format!("/home/{a}/in/m.bin");
    let script = format!(
        "id -u; cat $0 > /dev/null && echo script-readable; echo 42 > p.txt; \
         ln -s {} leak.txt; stat -c '%u' in/m.bin {outside}; cat in/m.bin {outside}",
        secret.display()
    );
    let mut t = owned(task("step", "Bound", &["sh"]), &a, None, false);
    t.step = Some(StepIo {
        workflow: "wf".into(),
        step: "wf.s".into(),
        has_script: true,
        script_source: script,
        script_arg_index: 1,
        capture_result: true,
        output_parameters: vec![
            gpuctl_proto::v1::OutputParameter {
                name: "p".into(),
                path: "p.txt".into(),
            },
            gpuctl_proto::v1::OutputParameter {
                name: "leak".into(),
                path: "leak.txt".into(),
            },
        ],
        input_artifacts: [("in/m.bin"), (outside.as_str())]
            .into_iter()
            .map(|path| gpuctl_proto::v1::ArtifactRef {
                name: "model".into(),
                path: path.into(),
                optional: false,
                store_workflow: "wf".into(),
                store_step: "wf.a".into(),
                store_name: "model".into(),
                raw: None,
            })
            .collect(),
        ..Default::default()
    });
    h.fake.push(vec![t]);
    let got = reports(&mut h, 2).await;
    let done = &got["step"][1];
    assert_eq!(done.phase(), TaskPhase::Succeeded, "{done:?}");
    let out = done.outputs.clone().expect("step outputs");
    assert_eq!(
        out.result,
        format!("{a_uid}\nscript-readable\n{a_uid}\n{a_uid}\nweights\nweights\n"),
        "the step's script and both inputs are its user's"
    );
    assert_eq!(out.parameters.get("p").map(String::as_str), Some("42"));
    assert_eq!(
        out.parameters.get("leak"),
        None,
        "a file the step's user does not own is not read back"
    );
    h.shutdown().await;
    drop(users);
}
