//! Endpoint rollouts on `gpuctl dev`, with the real scheduler, node daemon,
//! gateway and model server: a changed model rolls out under constant load
//! from 16 clients without a failed request; a canary gets exactly its share
//! (the gateway's split is a deterministic weighted round-robin: any 100
//! requests in a row give a 20% canary exactly 20), then promote and undo;
//! a revision whose replicas crash never takes traffic and `rollout status`
//! fails naming the replicas' reason.
//!
//! The two revisions serve `linear.onnx` and `linear_v2.onnx` (the same
//! weights, a different bias), so each answer says which one computed it.
//! Needs every binary next to `gpuctl` (`cargo build --bins`).

mod support;
use support::gateway::{https, Gw};
use support::{eventually, gpuctl_bin, require_binaries, DevCluster};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpuctl_common::endpoint::Endpoint;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../serving/testdata")
        .join(name)
}

fn start() -> DevCluster {
    require_binaries();
    let dir = gpuctl_bin().parent().unwrap().to_path_buf();
    for b in ["gpu-gateway", "gpu-model-server"] {
        assert!(
            dir.join(b).exists(),
            "{b} is not built next to gpuctl; run `cargo build --bins`"
        );
    }
    DevCluster::start(
        tempfile::tempdir().unwrap(),
        &["--gpus", "4xA100-80GB", "--cold-start-timeout", "30s"],
        Duration::from_secs(90),
    )
}

const INFER: &str = r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,1,1]}]}"#;

/// Which revision's model answered: linear.onnx says 9.5, linear_v2.onnx 10.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    V1,
    V2,
}

/// One inference on a fresh HTTPS connection: which model answered, or why
/// the request failed.
fn infer(gw: &Gw) -> Result<Answer, String> {
    let (status, body) =
        https(gw, "POST", "/v2/models/linear/infer", INFER).map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("HTTP {status}: {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    match v["outputs"][0]["data"][0].as_f64() {
        Some(9.5) => Ok(Answer::V1),
        Some(10.5) => Ok(Answer::V2),
        _ => Err(format!("unexpected answer {body}")),
    }
}

fn yaml(model: &Path, extra: &str) -> String {
    format!(
        "apiVersion: gpuctl.io/v1
kind: Endpoint
metadata: {{name: linear}}
spec:
  model: {{name: linear, path: {}, format: onnx}}
  resources: {{gpus: 1}}
  autoscaling: {{minReplicas: 1, maxReplicas: 1}}
{extra}",
        model.display()
    )
}

fn apply(dev: &DevCluster, text: &str) -> String {
    let path = dev.dir().join("ep.yaml");
    std::fs::write(&path, text).unwrap();
    dev.ok(&["apply", "-f", path.to_str().unwrap()])
}

fn endpoint(dev: &DevCluster) -> Endpoint {
    serde_json::from_str(&dev.ok(&["get", "endpoint", "linear", "-o", "json"])).unwrap()
}

/// `gpuctl rollout status` with a timeout: (exit code, stdout, stderr).
fn rollout_status(dev: &DevCluster) -> (i32, String, String) {
    let out = dev.run(&["rollout", "status", "endpoint/linear", "--timeout", "90s"]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Replica jobs of the endpoint that still exist.
fn replica_jobs(dev: &DevCluster) -> Vec<String> {
    let v: Vec<serde_json::Value> =
        serde_json::from_str(&dev.ok(&["get", "jobs", "-o", "json"])).unwrap();
    v.iter()
        .filter_map(|j| j["metadata"]["name"].as_str().map(str::to_string))
        .filter(|n| n.starts_with("linear-replica-"))
        .collect()
}

/// Each request's answer, with when it was sent.
type Answers = Vec<(Instant, Result<Answer, String>)>;

/// Each request's answer and when it was sent, from clients that run until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Answers>>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(gw: &Gw, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers: Arc<Mutex<Answers>> = Arc::default();
        let clients = (0..clients)
            .map(|_| {
                let (gw, stop, answers) = (gw.clone(), stop.clone(), answers.clone());
                std::thread::spawn(move || {
                    // Bounded: at most this many requests per client.
                    for _ in 0..100_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let sent = Instant::now();
                        let a = infer(&gw);
                        answers.lock().unwrap().push((sent, a));
                    }
                })
            })
            .collect();
        Load {
            stop,
            answers,
            clients,
        }
    }

    fn stop(self) -> Answers {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.clients {
            c.join().expect("client thread");
        }
        let a = self.answers.lock().unwrap().clone();
        a
    }
}

#[test]
fn a_new_model_rolls_out_under_load_without_a_failed_request_and_a_crashing_one_never_serves() {
    let dev = start();
    let gw = dev.gateway();
    apply(&dev, &yaml(&testdata("linear.onnx"), ""));
    let (code, out, err) = rollout_status(&dev);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("successfully rolled out (revision 1)"),
        "{out}"
    );
    eventually(Duration::from_secs(30), "revision 1 to answer", || {
        (infer(&gw) == Ok(Answer::V1)).then_some(())
    });
    let old_jobs = replica_jobs(&dev);
    assert_eq!(old_jobs.len(), 1, "{old_jobs:?}");

    // Applying the same spec again, or only new autoscaling bounds, rolls nothing.
    apply(&dev, &yaml(&testdata("linear.onnx"), ""));
    assert_eq!(endpoint(&dev).status.latest_revision, 1);

    // 16 clients keep calling while revision 2 rolls out.
    let load = Load::start(&gw, 16);
    std::thread::sleep(Duration::from_secs(1));
    apply(&dev, &yaml(&testdata("linear_v2.onnx"), ""));
    let (code, out, err) = rollout_status(&dev);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("successfully rolled out (revision 2)"),
        "{out}"
    );
    // The old replica drains (its in-flight requests finish) and goes.
    eventually(
        Duration::from_secs(60),
        "the old replica to be stopped",
        || {
            let jobs = replica_jobs(&dev);
            (!jobs.iter().any(|j| old_jobs.contains(j))).then_some(())
        },
    );
    let old_gone = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let answers = load.stop();
    let failed: Vec<&String> = answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().err())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        answers.len(),
        failed.first()
    );
    let count = |want: Answer| answers.iter().filter(|(_, a)| *a == Ok(want)).count();
    eprintln!(
        "rollout under load: {} requests, {} by revision 1, {} by revision 2",
        answers.len(),
        count(Answer::V1),
        count(Answer::V2)
    );
    assert!(count(Answer::V1) > 0 && count(Answer::V2) > 0);
    assert!(
        answers
            .iter()
            .filter(|(sent, _)| *sent > old_gone)
            .all(|(_, a)| *a == Ok(Answer::V2)),
        "after the old replica went, only revision 2 answers"
    );
    let ep = endpoint(&dev);
    assert_eq!(ep.status.stable_revision, 2);
    assert!(ep.status.replicas.iter().all(|r| r.revision == 2));

    // Revision 3's model file does not exist: its replicas exit at once. It
    // never takes traffic, `rollout status` fails saying why, and revision 2
    // keeps serving.
    apply(&dev, &yaml(Path::new("/nonexistent/model.onnx"), ""));
    let load = Load::start(&gw, 2);
    let (code, out, err) = rollout_status(&dev);
    let answers = load.stop();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("rollout to revision 3 failed") && err.contains("exited with code"),
        "{err}"
    );
    assert!(
        err.contains("/nonexistent/model.onnx"),
        "the replica's own message: {err}"
    );
    assert!(!answers.is_empty());
    assert!(
        answers.iter().all(|(_, a)| *a == Ok(Answer::V2)),
        "revision 2 answers every request: {:?}",
        answers.iter().find(|(_, a)| *a != Ok(Answer::V2))
    );
    let describe = dev.ok(&["describe", "endpoint", "linear"]);
    assert!(describe.contains("Failed"), "{describe}");
    // Undo goes back to revision 2's template: nothing new to start.
    let out = dev.ok(&["rollout", "undo", "endpoint/linear"]);
    assert!(out.contains("rolled back to revision 2"), "{out}");
    let (code, out, err) = rollout_status(&dev);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_canary_gets_its_share_until_promoted_and_undo_brings_the_old_model_back() {
    let dev = start();
    let gw = dev.gateway();
    apply(&dev, &yaml(&testdata("linear.onnx"), ""));
    assert_eq!(rollout_status(&dev).0, 0);
    eventually(Duration::from_secs(30), "revision 1 to answer", || {
        (infer(&gw) == Ok(Answer::V1)).then_some(())
    });
    apply(
        &dev,
        &yaml(&testdata("linear_v2.onnx"), "  canaryTrafficPercent: 20\n"),
    );
    let (code, out, err) = rollout_status(&dev);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("canary") && out.contains("20%"), "{out}");
    // The gateway's split: of any 100 requests in a row, exactly 20 go to
    // the canary (one client, one after the other).
    let answers: Vec<Answer> = (0..100)
        .map(|_| infer(&gw).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let canary = answers.iter().filter(|a| **a == Answer::V2).count();
    assert_eq!(canary, 20, "{answers:?}");
    let table = dev.ok(&["get", "endpoints"]);
    assert!(table.contains("r1 80% r2 20%"), "{table}");
    let describe = dev.ok(&["describe", "endpoint", "linear"]);
    assert!(
        describe.contains("Canary") && describe.contains("r2: 1/1 ready"),
        "{describe}"
    );
    let history = dev.ok(&["rollout", "history", "endpoint/linear"]);
    assert!(
        history.contains("rolling out") && history.contains("linear_v2.onnx"),
        "{history}"
    );

    // Promote: all requests to revision 2, revision 1 drains.
    dev.ok(&["rollout", "promote", "endpoint/linear"]);
    let (code, out, err) = rollout_status(&dev);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("successfully rolled out (revision 2)"),
        "{out}"
    );
    eventually(
        Duration::from_secs(30),
        "revision 1's replica to go",
        || (replica_jobs(&dev).len() == 1).then_some(()),
    );
    for _ in 0..20 {
        assert_eq!(infer(&gw), Ok(Answer::V2));
    }
    let again = dev.run(&["rollout", "promote", "endpoint/linear"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no rollout to promote"),
        "{again:?}"
    );

    // Undo: revision 1's model comes back as revision 3.
    let out = dev.ok(&["rollout", "undo", "endpoint/linear"]);
    assert!(
        out.contains("revision 3 (rolled back to revision 1)"),
        "{out}"
    );
    assert_eq!(rollout_status(&dev).0, 0);
    eventually(
        Duration::from_secs(30),
        "revision 2's replica to go",
        || (replica_jobs(&dev).len() == 1).then_some(()),
    );
    for _ in 0..20 {
        assert_eq!(infer(&gw), Ok(Answer::V1));
    }
    let ep = endpoint(&dev);
    assert!(ep.spec.model.unwrap().path.ends_with("/linear.onnx"));
    let history = dev.ok(&["rollout", "history", "endpoint/linear"]);
    assert!(history.contains("rolled back to revision 1"), "{history}");
    let bad = dev.run(&["rollout", "undo", "endpoint/linear", "--to-revision", "9"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("no such revision (kept: 2, 3)"),
        "{bad:?}"
    );
}
