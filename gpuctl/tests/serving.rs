//! Serving end to end on `gpuctl dev`: an endpoint at zero replicas wakes on its first
//! request, answers with what the model computes, goes back to zero when idle, scales
//! up under concurrent load and drains on the way down without failing a request; an
//! endpoint that cannot get a replica answers 503 saying why.
//!
//! Needs every binary next to `gpuctl` (`cargo build --bins`), including
//! `gpu-gateway` and `gpu-model-server`.

mod support;
use support::gateway::https;
use support::{eventually, gpuctl_bin, require_binaries, DevCluster};

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpuctl_common::endpoint::Endpoint;

fn require_serving_binaries() {
    require_binaries();
    let dir = gpuctl_bin().parent().unwrap().to_path_buf();
    for b in ["gpu-gateway", "gpu-model-server"] {
        assert!(
            dir.join(b).exists(),
            "{b} is not built next to gpuctl in {}; run `cargo build --bins`",
            dir.display()
        );
    }
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../serving/testdata")
        .join(name)
}

struct Dev(DevCluster);

impl std::ops::Deref for Dev {
    type Target = DevCluster;
    fn deref(&self) -> &DevCluster {
        &self.0
    }
}

impl Dev {
    fn start(extra: &[&str]) -> Dev {
        require_serving_binaries();
        Dev(DevCluster::start(
            tempfile::tempdir().unwrap(),
            extra,
            Duration::from_secs(90),
        ))
    }

    fn endpoint(&self, name: &str) -> Endpoint {
        serde_json::from_str(&self.ok(&["get", "endpoint", name, "-o", "json"])).unwrap()
    }

    fn apply(&self, yaml: &str) -> Output {
        let path = self.dir().join("ep.yaml");
        std::fs::write(&path, yaml).unwrap();
        self.run(&["apply", "-f", path.to_str().unwrap()])
    }

    fn job_count(&self) -> usize {
        let v: Vec<serde_json::Value> =
            serde_json::from_str(&self.ok(&["get", "jobs", "-o", "json"])).unwrap();
        v.len()
    }
}

const INFER: &str =
    r#"{"inputs":[{"name":"x","shape":[2,3],"datatype":"FP32","data":[1,1,1,1,0,-1]}]}"#;

/// y = x @ [[1,2],[3,4],[5,6]] + [0.5,-0.5]
fn check_linear_answer(body: &str) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let out = &v["outputs"][0];
    assert_eq!(out["name"], "y", "{body}");
    assert_eq!(out["shape"], serde_json::json!([2, 2]), "{body}");
    assert_eq!(
        out["data"],
        serde_json::json!([9.5, 11.5, -3.5, -4.5]),
        "{body}"
    );
}

fn endpoint_yaml(model: &Path) -> String {
    format!(
        "apiVersion: gpuctl.io/v1
kind: Endpoint
metadata: {{name: linear}}
spec:
  model: {{name: linear, path: {}, format: onnx}}
  resources: {{gpus: 1}}
  autoscaling:
    minReplicas: 0
    maxReplicas: 3
    targetConcurrency: 1
    scaleToZeroAfterSeconds: 2
    stableWindowSeconds: 3
  batching: {{maxBatchSize: 8, maxDelayMillis: 2}}
",
        model.display()
    )
}

#[test]
fn endpoint_wakes_from_zero_scales_up_and_drains_without_failing_a_request() {
    let dev = Dev::start(&["--gpus", "4xA100-80GB", "--cold-start-timeout", "30s"]);
    let gw = dev.gateway();
    let out = dev.apply(&endpoint_yaml(&testdata("linear.onnx")));
    assert!(out.status.success(), "{out:?}");
    let ep = dev.endpoint("linear");
    assert_eq!(ep.status.desired_replicas, 0);
    assert!(ep.status.replicas.is_empty());
    assert_eq!(
        dev.job_count(),
        0,
        "minReplicas 0: nothing runs before traffic"
    );
    // The gateway knows the endpoint as soon as apply returns: a request for a
    // name it has not routed yet makes it ask the scheduler before 404.
    let (code, body) = https(&gw, "GET", "/v2/models/linear/ready", "").unwrap();
    assert_ne!(code, 404, "right after apply: {body}");
    eventually(
        Duration::from_secs(10),
        "the endpoint to be back at zero",
        || (dev.job_count() == 0).then_some(()),
    );

    // 1. The first request wakes the endpoint and gets the model's answer.
    let t = Instant::now();
    let (code, body) = https(&gw, "POST", "/v2/models/linear/infer", INFER).unwrap();
    let cold = t.elapsed();
    assert_eq!(code, 200, "{body}");
    check_linear_answer(&body);
    eprintln!("cold start: first request answered in {cold:?}");
    assert!(cold < Duration::from_secs(10), "cold start took {cold:?}");
    let ep = dev.endpoint("linear");
    assert_eq!(ep.status.desired_replicas, 1);
    // The gateway reached the replica over TLS: the model server serves the
    // certificate its node signed, and its URL says https.
    let urls: Vec<_> = ep
        .status
        .replicas
        .iter()
        .filter_map(|r| r.url.clone())
        .collect();
    assert!(
        !urls.is_empty() && urls.iter().all(|u| u.starts_with("https://127.0.0.1:")),
        "{urls:?}"
    );
    assert!(ep
        .status
        .events
        .iter()
        .any(|e| e.reason == "Scaled" && e.message.contains("traffic arrived with no replicas")));

    // 2. Idle, it goes back to zero.
    eventually(Duration::from_secs(30), "scale to zero when idle", || {
        let ep = dev.endpoint("linear");
        (ep.status.desired_replicas == 0 && ep.status.replicas.is_empty() && dev.job_count() == 0)
            .then_some(())
    });

    // 3. Under 16 concurrent clients it scales past one replica; then one client keeps
    //    going while the endpoint scales down, and no request fails throughout.
    let stop_heavy = Arc::new(AtomicBool::new(false));
    let stop_all = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut clients = Vec::new();
    for i in 0..16 {
        let (gw, stop_heavy, stop_all, ok, failures) = (
            gw.clone(),
            stop_heavy.clone(),
            stop_all.clone(),
            ok.clone(),
            failures.clone(),
        );
        clients.push(std::thread::spawn(move || {
            let stop = if i == 0 { stop_all } else { stop_heavy };
            while !stop.load(Ordering::Relaxed) {
                match https(&gw, "POST", "/v2/models/linear/infer", INFER) {
                    Ok((200, body)) => {
                        check_linear_answer(&body);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((code, body)) => failures.lock().unwrap().push(format!("{code}: {body}")),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    let peak = eventually(Duration::from_secs(40), "scale-up past one replica", || {
        let ep = dev.endpoint("linear");
        let serving = ep.status.replicas.iter().filter(|r| r.serving()).count();
        (serving >= 2).then_some(serving)
    });
    eprintln!("scaled up to {peak} serving replicas");
    // Let the new replicas take traffic for a moment.
    std::thread::sleep(Duration::from_secs(2));
    stop_heavy.store(true, Ordering::Relaxed);
    eventually(Duration::from_secs(60), "scale-down to one replica", || {
        let ep = dev.endpoint("linear");
        let drained = ep
            .status
            .events
            .iter()
            .filter(|e| e.reason == "ReplicaStopped")
            .count();
        (ep.status.replicas.len() <= 1 && drained >= 2).then_some(())
    });
    stop_all.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failures.len(),
        failures.len() + ok.load(Ordering::Relaxed),
        failures.first()
    );
    assert!(ok.load(Ordering::Relaxed) > 50);

    // 4. `get endpoints` shows the URL; delete stops everything.
    let table = dev.ok(&["get", "endpoints"]);
    assert!(
        table.contains(&format!("https://{gw}/v2/models/linear")),
        "{table}"
    );
    let describe = dev.ok(&["describe", "endpoint", "linear"]);
    assert!(describe.contains("ReplicaDraining"), "{describe}");
    dev.ok(&["delete", "endpoint", "linear"]);
    assert_eq!(dev.ok(&["get", "endpoints", "-o", "json"]).trim(), "[]");
    eventually(Duration::from_secs(10), "replica jobs gone", || {
        (dev.job_count() == 0).then_some(())
    });
    let (code, _) = eventually(Duration::from_secs(10), "the gateway to forget it", || {
        let r = https(&gw, "POST", "/v2/models/linear/infer", INFER).ok()?;
        (r.0 == 404).then_some(r)
    });
    assert_eq!(code, 404);
}

#[test]
fn endpoint_without_room_for_a_replica_answers_503_saying_why() {
    let dev = Dev::start(&["--gpus", "1xA100-80GB", "--cold-start-timeout", "2s"]);
    let gw = dev.gateway();
    // More GPUs per replica than any node has: refused at apply, naming the field.
    let too_big = endpoint_yaml(&testdata("linear.onnx")).replace("gpus: 1", "gpus: 2");
    let out = dev.apply(&too_big);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.resources"), "{err}");
    // The only GPU is taken by a job: a replica can be created but never placed.
    dev.ok(&[
        "submit", "--name", "hog", "--gpus", "1", "--", "sleep", "600",
    ]);
    let out = dev.apply(&endpoint_yaml(&testdata("linear.onnx")));
    assert!(out.status.success(), "{out:?}");
    eventually(
        Duration::from_secs(10),
        "the gateway to know the endpoint",
        || {
            let (code, _) = https(&gw, "GET", "/v2/models/linear/ready", "").ok()?;
            (code != 404).then_some(())
        },
    );
    let t = Instant::now();
    let (code, body) = https(&gw, "POST", "/v2/models/linear/infer", INFER).unwrap();
    let waited = t.elapsed();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no ready replica after 2s"), "{body}");
    assert!(body.contains("pending: no node has room"), "{body}");
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(10));
    let ep = dev.endpoint("linear");
    assert_eq!(
        ep.status.desired_replicas, 1,
        "the request asked for a replica"
    );
}

#[test]
fn a_replica_that_keeps_failing_backs_off_and_the_503_says_so() {
    let dev = Dev::start(&["--gpus", "1xA100-80GB", "--cold-start-timeout", "60s"]);
    let gw = dev.gateway();
    // The model file does not exist: every replica's server exits at once.
    let yaml =
        endpoint_yaml(&testdata("no-such-model.onnx")).replace("minReplicas: 0", "minReplicas: 1");
    let out = dev.apply(&yaml);
    assert!(out.status.success(), "{out:?}");
    // Waits of 1, 2 and 4 s after the first three failures; the fourth waits 8 s.
    let ep = eventually(
        Duration::from_secs(40),
        "four replicas in a row to fail",
        || {
            let ep = dev.endpoint("linear");
            (ep.status.consecutive_failures >= 4).then_some(ep)
        },
    );
    let ended: Vec<u64> = ep
        .status
        .events
        .iter()
        .filter(|e| e.reason == "ReplicaEnded")
        .map(|e| e.time_ms)
        .collect();
    assert!(ended.len() >= 4, "{:?}", ep.status.events);
    let until = ep.status.backoff_until_ms.expect("backing off");
    assert!(
        until >= ended[ended.len() - 1] + 4_000,
        "the wait doubles: {until} vs {ended:?}"
    );
    // Fewer replica jobs than a restart every second would have made.
    assert!(ep.status.next_replica <= 5, "{}", ep.status.next_replica);
    // A request during the back-off gets 503 at once (not after the 60 s
    // cold-start timeout) saying why, with the replica's last output.
    let t = Instant::now();
    let (code, body) = https(&gw, "POST", "/v2/models/linear/infer", INFER).unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert!(
        body.contains("in a row failed soon after starting"),
        "{body}"
    );
    assert!(body.contains("last output:"), "{body}");
    assert!(body.contains("no-such-model.onnx"), "{body}");
    let described = dev.ok(&["describe", "endpoint", "linear"]);
    assert!(described.contains("Back-off:"), "{described}");
    assert!(described.contains("no-such-model.onnx"), "{described}");
    // The ended replica's job is gone; the error says where its reason is.
    let out = dev.run(&["logs", "linear-replica-0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gpuctl describe endpoint linear"), "{err}");
}

/// The leader's id, once `all` replicas (or any) answer `cluster status`.
fn leader_id(dev: &Dev, all: usize) -> Option<u64> {
    let out = dev.run(&["cluster", "status", "-o", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
    let answering = rows
        .iter()
        .filter(|r| r["health"] == "ok" || r["health"] == "lagging")
        .count();
    if answering < all {
        return None;
    }
    rows.iter()
        .find(|r| r["role"] == "Leader")
        .and_then(|r| r["id"].as_u64())
}

#[test]
fn endpoints_keep_serving_while_scheduler_leaders_die() {
    let dev = Dev::start(&[
        "--replicas",
        "3",
        "--gpus",
        "2xA100-80GB",
        "--restart-delay",
        "500ms",
        "--cold-start-timeout",
        "30s",
    ]);
    let gw = dev.gateway();
    let yaml = endpoint_yaml(&testdata("linear.onnx")).replace("maxReplicas: 3", "maxReplicas: 1");
    let out = dev.apply(&yaml);
    assert!(out.status.success(), "{out:?}");
    // Wake it and note which replica serves.
    let (code, body) = eventually(
        Duration::from_secs(30),
        "the gateway to know the endpoint",
        || {
            let r = https(&gw, "POST", "/v2/models/linear/infer", INFER).ok()?;
            (r.0 != 404).then_some(r)
        },
    );
    assert_eq!(code, 200, "{body}");
    check_linear_answer(&body);
    let replica = dev.endpoint("linear").status.replicas[0].job.clone();

    // Clients send requests back to back while two leaders are killed.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (gw, stop, served, failed) =
                (gw.clone(), stop.clone(), served.clone(), failed.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match https(&gw, "POST", "/v2/models/linear/infer", INFER) {
                        Ok((200, body)) => {
                            check_linear_answer(&body);
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok((code, body)) => failed.lock().unwrap().push(format!("{code}: {body}")),
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    for round in 1..=2 {
        let leader = eventually(Duration::from_secs(30), "a leader, all answering", || {
            leader_id(&dev, 3)
        });
        let pid = dev.scheduler_pids()[&leader];
        let before = served.load(Ordering::SeqCst);
        eventually(Duration::from_secs(20), "requests served", || {
            (served.load(Ordering::SeqCst) >= before + 20).then_some(())
        });
        dev.kill_scheduler(leader);
        // A new leader: another replica, or the killed one after its restart
        // (it comes back within a second and may well win the election).
        eventually(
            Duration::from_secs(60),
            &format!("round {round}: a new leader"),
            || leader_id(&dev, 2).filter(|&l| l != leader || dev.scheduler_pids()[&leader] != pid),
        );
        eventually(
            Duration::from_secs(30),
            "the killed replica to be restarted",
            || (dev.scheduler_pids()[&leader] != pid).then_some(()),
        );
    }
    let before = served.load(Ordering::SeqCst);
    eventually(Duration::from_secs(20), "requests served after", || {
        (served.load(Ordering::SeqCst) >= before + 20).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} requests failed: {failed:?}",
        failed.len()
    );
    // The same replica served throughout: no new leader stopped or replaced it.
    let ep = dev.endpoint("linear");
    let jobs: Vec<&str> = ep.status.replicas.iter().map(|r| r.job.as_str()).collect();
    assert_eq!(jobs, [replica.as_str()], "{:?}", ep.status.events);

    // Idle, the last leader takes it to zero; a request wakes it through that leader.
    eventually(Duration::from_secs(30), "scale to zero", || {
        let ep = dev.endpoint("linear");
        (ep.status.replicas.is_empty() && dev.job_count() == 0).then_some(())
    });
    let (code, body) = https(&gw, "POST", "/v2/models/linear/infer", INFER).unwrap();
    assert_eq!(code, 200, "{body}");
    check_linear_answer(&body);
}
