//! Workflows end to end: Argo `Workflow` files applied to a real `gpuctl
//! dev` cluster. Steps are `sh` commands in the node's environment that
//! append `<nanoseconds> <event>` lines to a file of their workflow, so the
//! tests assert the order in which processes really ran, not only what the
//! scheduler recorded.

mod support;
use support::{eventually, DevCluster};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Dev(DevCluster);

impl std::ops::Deref for Dev {
    type Target = DevCluster;
    fn deref(&self) -> &DevCluster {
        &self.0
    }
}

impl Dev {
    fn start(extra: &[&str]) -> Dev {
        Dev(DevCluster::start(
            tempfile::tempdir().unwrap(),
            extra,
            Duration::from_secs(60),
        ))
    }

    /// Write a workflow file, with `EVENTS` replaced by its events file.
    fn write(&self, file: &str, yaml: &str) -> (PathBuf, PathBuf) {
        let events = self.dir().join(format!("{file}.events"));
        let path = self.dir().join(file);
        std::fs::write(&path, yaml.replace("EVENTS", &events.display().to_string())).unwrap();
        (path, events)
    }

    fn workflow(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["get", "workflow", name, "-o", "json"])).unwrap()
    }

    /// `gpuctl wait NAME`: the exit code.
    fn wait(&self, name: &str) -> i32 {
        let out = self.run(&["wait", name, "--timeout", "45s"]);
        out.status.code().unwrap_or(-1)
    }
}

/// `event → nanoseconds` from an events file (the last time each was seen).
fn events(path: &Path) -> BTreeMap<String, u128> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (t, e) = l.split_once(' ')?;
            Some((e.to_string(), t.parse().ok()?))
        })
        .collect()
}

fn ev(evs: &BTreeMap<String, u128>, e: &str) -> u128 {
    *evs.get(e)
        .unwrap_or_else(|| panic!("event {e:?} missing; events: {evs:?}"))
}

/// Assert `first` happened before `then`.
fn before(evs: &BTreeMap<String, u128>, first: &str, then: &str) {
    assert!(
        ev(evs, first) < ev(evs, then),
        "{first} should come before {then}: {evs:?}"
    );
}

/// Every node of a workflow's status tree, by display name.
fn nodes(wf: &Value) -> BTreeMap<String, Value> {
    fn walk(n: &Value, out: &mut BTreeMap<String, Value>) {
        if let Some(name) = n["displayName"].as_str() {
            out.insert(name.to_string(), n.clone());
        }
        for c in n["children"].as_array().into_iter().flatten() {
            walk(c, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(&wf["status"]["root"], &mut out);
    walk(&wf["status"]["onExit"], &mut out);
    out
}

fn phase(nodes: &BTreeMap<String, Value>, name: &str) -> String {
    nodes
        .get(name)
        .unwrap_or_else(|| panic!("no node {name}: {:?}", nodes.keys()))["phase"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A step that logs its start and end around a short sleep.
const MARK: &str = r#"
  - name: mark
    inputs: {parameters: [{name: msg}]}
    container:
      image: alpine:3
      command: [sh, -c]
      args: ["echo \"$(date +%s%N) start {{inputs.parameters.msg}}\" >> EVENTS; sleep 0.2; echo \"$(date +%s%N) end {{inputs.parameters.msg}}\" >> EVENTS"]
"#;

const DAG: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: shapes}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: a, template: produce}
      - {name: r, template: mark, arguments: {parameters: [{name: msg, value: root2}]}}
      - {name: b, template: mark, dependencies: [a], arguments: {parameters: [{name: msg, value: "b-{{tasks.a.outputs.result}}"}]}}
      - name: c
        template: consume
        dependencies: [a]
        arguments:
          artifacts: [{name: data, from: "{{tasks.a.outputs.artifacts.data}}"}]
      - name: d
        template: inner
        depends: "b && c"
        arguments: {parameters: [{name: x, value: "{{tasks.c.outputs.parameters.content}}"}]}
      - name: fan
        template: mark
        dependencies: [a]
        arguments: {parameters: [{name: msg, value: "item-{{item}}"}]}
        withItems: [1, 2, 3]
      - {name: list, template: list}
      - name: fanp
        template: mark
        dependencies: [list]
        arguments: {parameters: [{name: msg, value: "param-{{item.n}}"}]}
        withParam: "{{tasks.list.outputs.result}}"
      - {name: join, template: mark, dependencies: [fan, fanp], arguments: {parameters: [{name: msg, value: join}]}}
      - {name: cond-true, template: mark, dependencies: [a], when: "{{tasks.a.outputs.parameters.p}} == 7", arguments: {parameters: [{name: msg, value: cond-true}]}}
      - {name: cond-false, template: mark, dependencies: [a], when: "{{tasks.a.outputs.parameters.p}} > 100", arguments: {parameters: [{name: msg, value: cond-false}]}}
  - name: inner
    inputs: {parameters: [{name: x}]}
    dag:
      tasks:
      - {name: i1, template: mark, arguments: {parameters: [{name: msg, value: "i1-{{inputs.parameters.x}}"}]}}
      - {name: i2, template: mark, dependencies: [i1], arguments: {parameters: [{name: msg, value: i2}]}}
  - name: produce
    script:
      image: alpine:3
      command: [sh]
      source: |
        echo "$(date +%s%N) start a" >> EVENTS
        echo 7 > p.txt
        echo payload > data.txt
        echo hello
        echo "$(date +%s%N) end a" >> EVENTS
    outputs:
      parameters: [{name: p, valueFrom: {path: p.txt}}]
      artifacts: [{name: data, path: data.txt}]
  - name: consume
    inputs:
      artifacts: [{name: data, path: in/data.txt}]
    container:
      image: alpine:3
      command: [sh, -c]
      args: ["echo \"$(date +%s%N) start c\" >> EVENTS; cp in/data.txt content; echo \"$(date +%s%N) end c\" >> EVENTS"]
    outputs:
      parameters: [{name: content, valueFrom: {path: content}}]
  - name: list
    script:
      image: alpine:3
      command: [sh]
      source: |
        echo '[{"n": "x"}, {"n": "y"}]'
"#;

const TARGET: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: target-}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      target: t2
      tasks:
      - {name: t1, template: mark, arguments: {parameters: [{name: msg, value: t1}]}}
      - {name: t2, template: mark, dependencies: [t1], arguments: {parameters: [{name: msg, value: t2}]}}
      - {name: t3, template: mark, arguments: {parameters: [{name: msg, value: t3}]}}
"#;

const BAD: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: bad}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: a, template: mark, arguments: {parameters: [{name: msg, value: a}]}}
      - {name: b, template: mark, dependencies: [nope], arguments: {parameters: [{name: msg, value: b}]}}
"#;

#[test]
fn dag_shapes_parameters_artifacts_fan_out_and_conditions() {
    let dev = Dev::start(&["--gpus", "8xH100-80GB"]);

    // An invalid workflow is refused with its file and field, and nothing is stored.
    let (bad, _) = dev.write("bad.yaml", &format!("{BAD}{MARK}"));
    let out = dev.run(&["apply", "-f", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.yaml"), "{err}");
    assert!(err.contains("spec.templates[0].dag.tasks[1]"), "{err}");
    assert!(err.contains("nope"), "{err}");
    // So is one whose step asks for more GPUs than any node has.
    let huge = format!("{BAD}{MARK}")
        .replace("dependencies: [nope]", "dependencies: [a]")
        .replace(
            "command: [sh, -c]",
            "command: [sh, -c]\n      resources: {limits: {nvidia.com/gpu: 16}}",
        );
    let (huge, _) = dev.write("huge.yaml", &huge);
    let out = dev.run(&["apply", "-f", huge.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("huge.yaml"), "{err}");
    assert!(
        err.contains("spec.templates[1].container.resources"),
        "{err}"
    );
    assert_eq!(
        dev.ok(&["get", "workflows", "-o", "json"]).trim(),
        "[]",
        "nothing stored"
    );

    let (file, evs_path) = dev.write("shapes.yaml", &format!("{DAG}{MARK}"));
    let out = dev.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(out, "workflow/shapes created\n");
    let (tfile, tevs_path) = dev.write("target.yaml", &format!("{TARGET}{MARK}"));
    let out = dev.ok(&["submit", "-f", tfile.to_str().unwrap()]);
    let tname = out
        .strip_prefix("workflow/")
        .and_then(|s| s.strip_suffix(" submitted\n"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    assert!(tname.starts_with("target-") && tname.len() == "target-".len() + 5);

    assert_eq!(dev.wait("shapes"), 0, "{}", dev.log());
    assert_eq!(dev.wait(&tname), 0);

    let wf = dev.workflow("shapes");
    assert_eq!(wf["status"]["phase"], "Succeeded");
    let n = nodes(&wf);
    for step in [
        "a",
        "r",
        "b",
        "c",
        "d",
        "i1",
        "i2",
        "list",
        "join",
        "cond-true",
    ] {
        assert_eq!(phase(&n, step), "Succeeded", "{step}");
    }
    assert_eq!(phase(&n, "cond-false"), "Skipped");
    assert_eq!(n["d"]["nodeType"], "DAG", "nested DAG");
    // Parameters: a file (valueFrom.path) and a script's standard output.
    assert_eq!(n["a"]["outputs"]["parameters"]["p"], "7");
    assert_eq!(n["a"]["outputs"]["result"], "hello");
    // The artifact went from a to c through the store.
    assert_eq!(n["c"]["outputs"]["parameters"]["content"], "payload");

    let e = events(&evs_path);
    // Diamond: b and c after a; the nested DAG after both.
    before(&e, "end a", "start b-hello");
    before(&e, "end a", "start c");
    before(&e, "end b-hello", "start i1-payload");
    before(&e, "end c", "start i1-payload");
    before(&e, "end i1-payload", "start i2");
    // Two roots: r ran, not waiting for anything.
    assert!(e.contains_key("end root2"));
    // Fan-out (withItems, withParam) then fan-in.
    for item in ["item-1", "item-2", "item-3", "param-x", "param-y"] {
        before(&e, &format!("end {item}"), "start join");
    }
    before(&e, "end a", "start item-1");
    assert!(e.contains_key("end cond-true"));
    assert!(!e.contains_key("start cond-false"), "when false: not run");

    // target: only t2 and what it needs ran.
    let t = events(&tevs_path);
    before(&t, "end t1", "start t2");
    assert!(!t.contains_key("start t3"), "t3 is outside the target");

    // The CLI views.
    let table = dev.ok(&["get", "workflows"]);
    assert!(
        table.contains("shapes") && table.contains("Succeeded"),
        "{table}"
    );
    // 14 steps ran (cond-false was skipped, not a step that ran).
    assert!(table.contains("14/14"), "{table}");
    let describe = dev.ok(&["describe", "workflow", "shapes"]);
    assert!(describe.contains("Phase:      Succeeded"), "{describe}");
    assert!(describe.contains("├─✔ a"), "{describe}");
    assert!(describe.contains("p=7 result=hello"), "{describe}");
    assert!(describe.contains("○ cond-false"), "{describe}");
    let logs = dev.ok(&["logs", "workflow", "shapes", "--step", "a"]);
    assert_eq!(logs, "hello\n");
    let logs = dev.ok(&["logs", "workflow", "shapes"]);
    assert!(logs.contains("==> a (shapes-a) <==\nhello\n"), "{logs}");

    // A step's job goes with its workflow, not alone; deleting the finished
    // workflow removes it and every one of its step jobs.
    let out = dev.run(&["delete", "job", "shapes-a"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a step of workflow \"shapes\""), "{err}");
    let steps = |dev: &Dev| {
        let jobs: Vec<Value> =
            serde_json::from_str(&dev.ok(&["get", "jobs", "-o", "json"])).unwrap();
        jobs.iter()
            .filter(|j| j["metadata"]["labels"]["gpuctl.io/workflow"] == "shapes")
            .count()
    };
    assert!(steps(&dev) >= 14);
    let artifacts = dev.state().join("artifacts").join("shapes");
    assert!(artifacts.is_dir(), "no artifacts at {artifacts:?}");
    assert!(dev
        .ok(&["delete", "workflow", "shapes"])
        .contains("workflow/shapes deleted"));
    assert_eq!(steps(&dev), 0);
    // The nodes remove a deleted workflow's artifacts (they sweep every second here).
    eventually(Duration::from_secs(30), "the artifacts removed", || {
        (!artifacts.exists()).then_some(())
    });
    let out = dev.run(&["get", "workflow", "shapes"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

const FAILURES: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: failures}
spec:
  entrypoint: main
  onExit: exit
  templates:
  - name: main
    dag:
      tasks:
      - {name: flaky, template: flaky}
      - {name: bad, template: fail, continueOn: {failed: true}}
      - {name: after-bad, template: mark, dependencies: [bad], arguments: {parameters: [{name: msg, value: after-bad}]}}
      - {name: on-fail, template: mark, depends: "bad.Failed", arguments: {parameters: [{name: msg, value: on-fail}]}}
      - {name: on-ok, template: mark, depends: "bad.Succeeded", arguments: {parameters: [{name: msg, value: on-ok}]}}
      - {name: both, template: mark, depends: "flaky.Succeeded && (on-fail || on-ok)", arguments: {parameters: [{name: msg, value: both}]}}
  - name: flaky
    retryStrategy: {limit: 2, retryPolicy: Always, backoff: {duration: "1s"}}
    script:
      image: alpine:3
      command: [sh]
      source: |
        n=$(cat EVENTS.count 2>/dev/null || echo 0)
        echo $((n+1)) > EVENTS.count
        echo "$(date +%s%N) flaky-$n" >> EVENTS
        [ "$n" -ge 1 ]
  - name: fail
    container: {image: alpine:3, command: [sh, -c], args: ["exit 3"]}
  - name: exit
    container:
      image: alpine:3
      command: [sh, -c]
      args: ["echo \"$(date +%s%N) exit-{{workflow.status}}\" >> EVENTS"]
"#;

const DOOMED: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: doomed}
spec:
  entrypoint: main
  onExit: exit
  templates:
  - name: main
    dag:
      tasks:
      - {name: boom, template: boom}
      - {name: never, template: mark, dependencies: [boom], arguments: {parameters: [{name: msg, value: never}]}}
  - name: boom
    container: {image: alpine:3, command: [sh, -c], args: ["echo boom; exit 1"]}
  - name: exit
    container:
      image: alpine:3
      command: [sh, -c]
      args: ["echo \"$(date +%s%N) exit-{{workflow.status}}\" >> EVENTS"]
"#;

const MEMO: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: memo-}
spec:
  entrypoint: main
  arguments: {parameters: [{name: v, value: one}]}
  templates:
  - name: main
    dag:
      tasks:
      - {name: prep, template: prep, arguments: {parameters: [{name: v, value: "{{workflow.parameters.v}}"}]}}
  - name: prep
    inputs: {parameters: [{name: v}]}
    memoize:
      key: "prep-{{inputs.parameters.v}}"
      maxAge: "1h"
      cache: {configMap: {name: prep-cache}}
    container:
      image: alpine:3
      command: [sh, -c]
      args: ["echo \"$(date +%s%N) ran-{{inputs.parameters.v}}\" >> EVENTS; echo rows-{{inputs.parameters.v}} > rows"]
    outputs:
      parameters: [{name: rows, valueFrom: {path: rows}}]
"#;

const CANCEL: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: cancelme}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: long, template: long}
      - {name: next, template: long, dependencies: [long]}
  - name: long
    container:
      image: alpine:3
      command: [sh, -c]
      args: ["echo \"$(date +%s%N) start\" >> EVENTS; sleep 30; echo \"$(date +%s%N) end\" >> EVENTS"]
"#;

const DEADLINE: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: deadline}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: slow, template: slow}
  - name: slow
    activeDeadlineSeconds: 1
    container:
      image: alpine:3
      command: [sh, -c]
      args: ["echo \"$(date +%s%N) start\" >> EVENTS; sleep 30; echo \"$(date +%s%N) end\" >> EVENTS"]
"#;

fn submitted_name(out: &str) -> String {
    out.strip_prefix("workflow/")
        .and_then(|s| s.strip_suffix(" submitted\n"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string()
}

#[test]
fn failures_retries_exit_handlers_memoization_and_cancel() {
    let dev = Dev::start(&["--gpus", "8xH100-80GB"]);
    let (f, fevs) = dev.write("failures.yaml", &format!("{FAILURES}{MARK}"));
    let (d, devs) = dev.write("doomed.yaml", &format!("{DOOMED}{MARK}"));
    let (m, mevs) = dev.write("memo.yaml", MEMO);
    let (c, cevs) = dev.write("cancel.yaml", CANCEL);
    let (dl, _) = dev.write("deadline.yaml", DEADLINE);
    for file in [&f, &d, &c, &dl] {
        dev.ok(&["apply", "-f", file.to_str().unwrap()]);
    }
    let m1 = submitted_name(&dev.ok(&["submit", "-f", m.to_str().unwrap()]));

    // Cancel: once the first step runs, stop the workflow.
    eventually(Duration::from_secs(20), "the long step to start", || {
        events(&cevs).contains_key("start").then_some(())
    });
    assert_eq!(
        dev.ok(&["cancel", "workflow", "cancelme"]),
        "workflow/cancelme cancelled\n"
    );
    assert_eq!(dev.wait("cancelme"), 1);
    let wf = dev.workflow("cancelme");
    assert_eq!(wf["status"]["phase"], "Failed");
    let job = wf["status"]["jobs"]["cancelme.long"]
        .as_str()
        .unwrap()
        .to_string();
    let j: Value = serde_json::from_str(&dev.ok(&["get", "job", &job, "-o", "json"])).unwrap();
    assert_eq!(j["status"]["phase"], "Cancelled");
    assert!(nodes(&wf)
        .get("next")
        .is_none_or(|n| n["phase"] != "Running"));

    // activeDeadlineSeconds: the step is stopped after 1 s, and fails.
    let t0 = Instant::now();
    assert_eq!(dev.wait("deadline"), 1);
    assert!(t0.elapsed() < Duration::from_secs(20));
    let wf = dev.workflow("deadline");
    assert_eq!(phase(&nodes(&wf), "slow"), "Failed", "{wf}");
    let job = wf["status"]["jobs"]["deadline.slow"]
        .as_str()
        .unwrap()
        .to_string();
    let j: Value = serde_json::from_str(&dev.ok(&["get", "job", &job, "-o", "json"])).unwrap();
    assert_eq!(
        j["status"]["phase"], "Cancelled",
        "the step's job was stopped"
    );

    // continueOn, depends with failure branches, retries with backoff, onExit.
    assert_eq!(dev.wait("failures"), 0, "{}", dev.log());
    let wf = dev.workflow("failures");
    let n = nodes(&wf);
    assert_eq!(phase(&n, "bad"), "Failed");
    assert_eq!(phase(&n, "after-bad"), "Succeeded", "continueOn.failed");
    assert_eq!(phase(&n, "on-fail"), "Succeeded");
    assert_eq!(phase(&n, "on-ok"), "Omitted");
    assert_eq!(phase(&n, "both"), "Succeeded");
    assert_eq!(phase(&n, "flaky"), "Succeeded");
    assert_eq!(n["flaky"]["retries"], 1, "{:?}", n["flaky"]);
    let e = events(&fevs);
    let gap = ev(&e, "flaky-1") - ev(&e, "flaky-0");
    assert!(
        gap >= 900_000_000,
        "backoff of 1s between attempts, saw {gap} ns"
    );
    before(&e, "end on-fail", "start both");
    before(&e, "end both", "exit-Succeeded");

    // A failing step fails the workflow; wait says so; the handler still runs.
    assert_eq!(dev.wait("doomed"), 1);
    let wf = dev.workflow("doomed");
    assert_eq!(wf["status"]["phase"], "Failed");
    // After the failure nothing new starts (failFast): `never` never ran.
    assert!(nodes(&wf)
        .get("never")
        .is_none_or(|n| n["phase"] != "Succeeded"));
    let e = events(&devs);
    assert!(e.contains_key("exit-Failed"), "{e:?}");
    assert!(!e.contains_key("start never"));

    // Memoization: the same key again completes from the cache without running.
    assert_eq!(dev.wait(&m1), 0);
    let m2 = submitted_name(&dev.ok(&["submit", "-f", m.to_str().unwrap()]));
    assert_eq!(dev.wait(&m2), 0);
    let n2 = nodes(&dev.workflow(&m2));
    assert_eq!(n2["prep"]["memoized"], true);
    assert_eq!(n2["prep"]["outputs"]["parameters"]["rows"], "rows-one");
    let text = std::fs::read_to_string(&mevs).unwrap();
    assert_eq!(text.matches("ran-one").count(), 1, "{text}");
    // A different argument is a different key: it runs.
    let m3 = submitted_name(&dev.ok(&["submit", "-f", m.to_str().unwrap(), "-p", "v=two"]));
    assert_eq!(dev.wait(&m3), 0);
    let n3 = nodes(&dev.workflow(&m3));
    assert_eq!(n3["prep"]["memoized"], false);
    assert_eq!(n3["prep"]["outputs"]["parameters"]["rows"], "rows-two");
}
