//! Secret values encrypted at rest on the default `gpuctl dev`: a task gets
//! the value, and nothing the scheduler writes to disk (Raft log, stored
//! state) holds it, in plain text or base64, before or after a restart; a
//! rotated key takes over and the old one can then be removed.

mod support;
use support::{eventually, DevCluster};

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const VALUE: &str = "plain-7c1d-marker-4f09";
/// `VALUE` in base64, as an unencrypted secret stores it.
const VALUE_B64: &str = "cGxhaW4tN2MxZC1tYXJrZXItNGYwOQ==";

/// Whether any file under `dir` contains `needle`.
fn found_under(dir: &Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                files += 1;
                assert!(files < 10_000, "too many files under {}", dir.display());
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    return true;
                }
            }
        }
    }
    false
}

fn run_job(dev: &DevCluster, name: &str) -> String {
    let job = dev.dir().join(format!("{name}.yaml"));
    std::fs::write(
        &job,
        format!(
            "apiVersion: gpuctl.io/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n  tasks:\n  - command: [sh, -c, 'echo key=$KEY; cat $GPUCTL_SECRETS_DIR/api/KEY']\n    envFrom: [{{secretRef: {{name: api}}}}]\n    secretFiles: [{{secretRef: {{name: api}}}}]\n"
        ),
    )
    .unwrap();
    dev.ok(&["apply", "-f", job.to_str().unwrap()]);
    dev.ok(&["wait", name, "--timeout", "60s"]);
    dev.ok(&["logs", name])
}

#[test]
fn secret_values_reach_the_task_are_stored_encrypted_and_follow_a_rotated_key() {
    let root = tempfile::tempdir().unwrap();
    let dev = DevCluster::start(root, &[], Duration::from_secs(90));
    let config = dev.state().join("encryption.yaml");
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", config.display());

    let secret = dev.dir().join("secret.yaml");
    std::fs::write(
        &secret,
        format!("apiVersion: gpuctl.io/v1\nkind: Secret\nmetadata: {{name: api}}\nstringData: {{KEY: {VALUE}}}\n"),
    )
    .unwrap();
    dev.ok(&["apply", "-f", secret.to_str().unwrap()]);
    let shown = dev.ok(&["get", "secret", "api", "-o", "json"]);
    assert!(shown.contains("<redacted> (22 bytes)"), "{shown}");
    assert!(
        !shown.contains(VALUE) && !shown.contains(VALUE_B64),
        "{shown}"
    );

    let log = run_job(&dev, "enc-first-3a8e");
    assert!(log.contains(&format!("key={VALUE}")), "{log}");
    assert!(log.contains(&format!("\n{VALUE}")), "the file: {log}");

    let root = dev.stop();
    let data = root.path().join("state").join("scheduler-1");
    // The scan finds what is stored as written (the job's name)...
    assert!(found_under(&data, b"enc-first-3a8e"), "{}", data.display());
    // ...and not the secret's value, in any form.
    assert!(
        !found_under(&data, VALUE.as_bytes()),
        "plain text in {}",
        data.display()
    );
    assert!(
        !found_under(&data, VALUE_B64.as_bytes()),
        "base64 in {}",
        data.display()
    );

    // After a restart the stored (encrypted) value still reaches a task.
    let dev = DevCluster::start(root, &[], Duration::from_secs(90));
    let log = run_job(&dev, "enc-again-51c2");
    assert!(log.contains(&format!("key={VALUE}")), "{log}");
    let root = dev.stop();
    assert!(!found_under(&data, VALUE.as_bytes()));

    // Rotation: a new key first, the old one kept to read with; the leader
    // stores the secret again under the new key...
    let config = root.path().join("state").join("encryption.yaml");
    let old_key = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("secret: ").map(str::to_string))
        .expect("the dev key");
    let new_key = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    std::fs::write(
        &config,
        encryption_config(&[("rot-2", new_key), ("dev-1", &old_key)]),
    )
    .unwrap();
    let dev = DevCluster::start(root, &[], Duration::from_secs(90));
    let log = dev.state().join("logs").join("scheduler-1.log");
    eventually(
        Duration::from_secs(30),
        "the secret stored under rot-2",
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            (text.contains("secret \"api\" stored again under the encryption configuration's first provider (rot-2)")
            && text.contains("every secret is stored under the encryption configuration's first provider (rot-2)"))
            .then_some(())
        },
    );
    let root = dev.stop();
    // ...so that without the old key the value still reaches a task.
    std::fs::write(&config, encryption_config(&[("rot-2", new_key)])).unwrap();
    let dev = DevCluster::start(root, &[], Duration::from_secs(90));
    let log = run_job(&dev, "enc-rotated-0d7b");
    assert!(log.contains(&format!("key={VALUE}")), "{log}");
    let root = dev.stop();
    assert!(!found_under(&data, VALUE_B64.as_bytes()));
    drop(root);
}

/// An `EncryptionConfiguration` with these `aesgcm` keys, the first writing.
fn encryption_config(keys: &[(&str, &str)]) -> String {
    let mut s = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n".to_string();
    for (name, key) in keys {
        s += &format!("            - name: {name}\n              secret: {key}\n");
    }
    s
}
