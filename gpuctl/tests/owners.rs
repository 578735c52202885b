//! Two people sharing a `gpuctl dev` cluster: each has a Unix account on the
//! node and a gpuctl user with a token. Each one's job runs as their own
//! uid, cannot read the other's log, and gets only their team's secrets.
//!
//! Needs root to create the Unix accounts (CI runs as root); skipped with a
//! printed reason otherwise. The accounts are removed even when it fails.

mod support;
use support::{eventually, DevCluster};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A Unix account made for the test, removed on drop.
struct UnixUser {
    name: String,
    uid: u32,
}

impl UnixUser {
    fn create(name: &str) -> UnixUser {
        let _ = Command::new("userdel").args(["-r", name]).output();
        let out = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", name])
            .output()
            .expect("run useradd");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let uid = id_u(Some(name));
        UnixUser {
            name: name.to_string(),
            uid,
        }
    }
}

impl Drop for UnixUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// `id -u [NAME]`.
fn id_u(name: Option<&str>) -> u32 {
    let out = Command::new("id")
        .arg("-u")
        .args(name)
        .output()
        .expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("id -u prints a number")
}

/// The log file of `job`'s task 0 under the dev state dir.
fn log_file(state: &Path, job: &str) -> Option<PathBuf> {
    let mut stack = vec![state.to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        seen += 1;
        if seen > 10_000 {
            return None;
        }
        for e in std::fs::read_dir(&dir).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.parent().and_then(|d| d.file_name()) == Some(job.as_ref())
                && p.extension().is_some_and(|x| x == "log")
            {
                return Some(p);
            }
        }
    }
    None
}

fn submit_and_wait(dev: &DevCluster, token: &str, name: &str, script: &str) {
    dev.ok(&[
        "--token", token, "submit", "--name", name, "--", "sh", "-c", script,
    ]);
    dev.ok(&["wait", name, "--timeout", "60s"]);
}

#[test]
fn each_users_job_runs_as_that_user_and_cannot_read_the_others_files() {
    if id_u(None) != 0 {
        eprintln!("skipped: creating Unix accounts needs root");
        return;
    }
    let tag = std::process::id() % 100_000;
    let alice = UnixUser::create(&format!("gpo-{tag}-a"));
    let bob = UnixUser::create(&format!("gpo-{tag}-b"));
    let root = tempfile::tempdir().unwrap();
    // The tasks run as other users: they must be able to reach their folders.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dev = DevCluster::start(root, &["--gpus", "2xA100-80GB"], Duration::from_secs(90));

    dev.ok(&["admin", "create-user", &alice.name, "--team", "nlp"]);
    dev.ok(&["admin", "create-user", &bob.name, "--team", "vision"]);
    let token = |u: &UnixUser| {
        dev.ok(&["admin", "create-token", "--user", &u.name])
            .trim()
            .to_string()
    };
    let (ta, tb) = (token(&alice), token(&bob));
    let who = dev.ok(&["--token", &ta, "whoami"]);
    assert!(
        who.starts_with(&format!("user {} (role user, team nlp", alice.name)),
        "{who}"
    );

    // A secret of alice's team reaches her job; its value is never shown.
    let secret = dev.dir().join("secret.yaml");
    std::fs::write(
        &secret,
        "apiVersion: gpuctl.io/v1\nkind: Secret\nmetadata: {name: nlp-key}\nstringData: {KEY: s3cret-nlp}\n",
    )
    .unwrap();
    dev.ok(&["--token", &ta, "apply", "-f", secret.to_str().unwrap()]);
    let shown = dev.ok(&["get", "secret", "nlp-key", "-o", "json"]);
    assert!(!shown.contains("s3cret-nlp"), "{shown}");
    let job = dev.dir().join("job-a.yaml");
    std::fs::write(
        &job,
        "apiVersion: gpuctl.io/v1\nkind: Job\nmetadata: {name: job-a}\nspec:\n  tasks:\n  - command: [sh, -c, 'echo uid=$(id -u) key=$KEY']\n    envFrom: [{secretRef: {name: nlp-key}}]\n",
    )
    .unwrap();
    dev.ok(&["--token", &ta, "apply", "-f", job.to_str().unwrap()]);
    dev.ok(&["wait", "job-a", "--timeout", "60s"]);
    let log_a = dev.ok(&["logs", "job-a"]);
    assert!(
        log_a.contains(&format!("uid={} key=s3cret-nlp", alice.uid)),
        "{log_a}"
    );

    // Bob's job runs as bob and cannot read alice's log.
    let path_a = eventually(Duration::from_secs(10), "job-a's log file", || {
        log_file(&dev.state(), "job-a")
    });
    submit_and_wait(
        &dev,
        &tb,
        "job-b",
        &format!(
            "echo uid=$(id -u); cat {}; echo cat-exit=$?",
            path_a.display()
        ),
    );
    let log_b = dev.ok(&["logs", "job-b"]);
    assert!(log_b.contains(&format!("uid={}", bob.uid)), "{log_b}");
    assert!(log_b.contains("Permission denied"), "{log_b}");
    assert!(log_b.contains("cat-exit=1"), "{log_b}");
    assert!(!log_b.contains("s3cret-nlp"), "{log_b}");

    // Nor may bob give his job alice's team's secret, or cancel her job.
    let job_b2 = dev.dir().join("job-b2.yaml");
    std::fs::write(
        &job_b2,
        std::fs::read_to_string(&job)
            .unwrap()
            .replace("job-a", "job-b2"),
    )
    .unwrap();
    let out = dev.run(&["--token", &tb, "apply", "-f", job_b2.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "user \"{}\" (team \"vision\") may not use secret \"nlp-key\"",
            bob.name
        )),
        "{err}"
    );
    let out = dev.run(&["--token", &tb, "delete", "job", "job-a"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "user \"{}\" may not delete job \"job-a\" (owner \"{}\")",
            bob.name, alice.name
        )),
        "{err}"
    );
    dev.ok(&["get", "job", "job-a"]);
    dev.stop();
}
