//! Argo's own example workflows (the compatibility folder
//! `pipelines/tests/argo-examples/runs/`, each file noting its source and
//! any edit) submitted to a real `gpuctl dev` cluster, each checked for the
//! outcome Argo gives it: the workflow's phase, which steps ran (or were
//! skipped or never started) and in what order, and their outputs.

mod support;
use support::DevCluster;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("pipelines/tests/argo-examples/runs")
        .join(name)
}

/// One finished run: its status and every node by its id without the run
/// name (`.A[0].echo(0:1)`; the root is `""`).
struct Outcome {
    name: String,
    phase: String,
    nodes: BTreeMap<String, Value>,
}

impl Outcome {
    fn node(&self, id: &str) -> &Value {
        self.nodes.get(id).unwrap_or_else(|| {
            panic!(
                "{}: no node {id:?}; nodes: {:?}",
                self.name,
                self.nodes.keys()
            )
        })
    }
    fn phase_of(&self, id: &str) -> &str {
        self.node(id)["phase"].as_str().unwrap_or_default()
    }
    /// `first` ended before `then` started.
    fn before(&self, first: &str, then: &str) {
        let end = self.node(first)["finishedMs"].as_u64().unwrap();
        let start = self.node(then)["startedMs"].as_u64().unwrap();
        assert!(
            end <= start,
            "{}: {first} (ended {end}) should end before {then} starts ({start})",
            self.name
        );
    }
    /// Ids of the Pod nodes (the steps that ran), sorted.
    fn pods(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|(_, n)| n["nodeType"] == "Pod")
            .map(|(id, _)| id.as_str())
            .collect()
    }
    fn result(&self, id: &str) -> &str {
        self.node(id)["outputs"]["result"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {id} has no result", self.name))
    }
}

fn submit(dev: &DevCluster, file: &str) -> String {
    let path = example(file);
    let out = dev.ok(&["submit", "-f", path.to_str().unwrap()]);
    out.trim()
        .strip_prefix("workflow/")
        .and_then(|s| s.strip_suffix(" submitted"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string()
}

/// The run once it has ended (at most 90 s).
fn outcome(dev: &DevCluster, name: &str) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let wf: Value =
            serde_json::from_str(&dev.ok(&["get", "workflow", name, "-o", "json"])).unwrap();
        let phase = wf["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if phase != "Running" {
            let mut nodes = BTreeMap::new();
            fn walk(n: &Value, run: &str, out: &mut BTreeMap<String, Value>) {
                if let Some(id) = n["id"].as_str() {
                    out.insert(id.strip_prefix(run).unwrap_or(id).to_string(), n.clone());
                }
                for c in n["children"].as_array().into_iter().flatten() {
                    walk(c, run, out);
                }
            }
            walk(&wf["status"]["root"], name, &mut nodes);
            walk(&wf["status"]["onExit"], name, &mut nodes);
            return Outcome {
                name: name.to_string(),
                phase,
                nodes,
            };
        }
        assert!(
            Instant::now() < deadline,
            "{name} still running: {wf:#}\n{}",
            dev.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn logs(dev: &DevCluster, name: &str, step: &str) -> String {
    dev.ok(&["logs", "workflow", name, "--step", step])
}

#[test]
fn argo_examples_run_with_argos_outcome() {
    let dev = DevCluster::start(tempfile::tempdir().unwrap(), &[], Duration::from_secs(60));
    let files = [
        "steps.yaml",
        "coinflip.yaml",
        "dag-diamond-steps.yaml",
        "loops.yaml",
        "output-parameter.yaml",
        "parameter-aggregation.yaml",
        "scripts-bash.yaml",
        "exit-handlers.yaml",
        "dag-targets.yaml",
        "dag-enhanced-depends.yaml",
        "global-parameters.yaml",
        "dag-diamond.yaml",
        "dag-nested.yaml",
        "dag-conditional-parameters.yaml",
        "continue-on-fail.yaml",
        "loops-sequence.yaml",
        "exit-handler-dag-level.yaml",
        "exit-handler-step-level.yaml",
        "suspend-template.yaml",
        "dag-inline-workflow.yaml",
        "steps-inline-workflow.yaml",
        "input-artifact-raw.yaml",
        "dag-conditional-artifacts.yaml",
        "with-items-with-hooks.yaml",
    ];
    // Every file of the folder is here.
    let dir = example("");
    let on_disk = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        on_disk,
        files.len(),
        "a file of {} is not run here",
        dir.display()
    );
    let names: BTreeMap<&str, String> = files.iter().map(|f| (*f, submit(&dev, f))).collect();
    let run = |f: &str| outcome(&dev, &names[f]);

    // suspend-template: `approve` waits (nothing after it starts) until
    // `gpuctl resume`, as `argo resume`.
    let suspended = &names["suspend-template.yaml"];
    let node_phase = |wf: &Value, id: &str| -> Option<String> {
        fn find<'a>(n: &'a Value, id: &str) -> Option<&'a Value> {
            if n["id"] == id {
                return Some(n);
            }
            n["children"].as_array()?.iter().find_map(|c| find(c, id))
        }
        find(&wf["status"]["root"], id).map(|n| n["phase"].as_str().unwrap_or("").to_string())
    };
    let approve = format!("{suspended}[1].approve");
    support::eventually(Duration::from_secs(60), "approve waits", || {
        let wf: Value =
            serde_json::from_str(&dev.ok(&["get", "workflow", suspended, "-o", "json"])).unwrap();
        (node_phase(&wf, &approve).as_deref() == Some("Running")).then_some(())
    });
    let describe = dev.ok(&["describe", "workflow", suspended]);
    assert!(describe.contains("approve"), "{describe}");
    let wf: Value =
        serde_json::from_str(&dev.ok(&["get", "workflow", suspended, "-o", "json"])).unwrap();
    assert_eq!(wf["status"]["phase"], "Running");
    assert_eq!(node_phase(&wf, &format!("{suspended}[2].delay")), None);
    assert!(wf["status"]["jobs"]
        .get(format!("{suspended}[3].release"))
        .is_none());
    assert_eq!(
        dev.ok(&["resume", suspended]),
        format!("workflow/{suspended} resumed\n")
    );

    // `gpuctl wait` waits for the workflow, exit handler included, even when
    // its entrypoint is one container whose step job has the workflow's name.
    let exit_handlers = &names["exit-handlers.yaml"];
    let out = dev.run(&[
        "wait",
        &format!("workflow/{exit_handlers}"),
        "--timeout",
        "60s",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let wf: Value =
        serde_json::from_str(&dev.ok(&["get", "workflow", exit_handlers, "-o", "json"])).unwrap();
    assert_eq!(wf["status"]["phase"], "Failed");
    assert_eq!(
        wf["status"]["onExit"]["phase"], "Succeeded",
        "the exit handler ended first"
    );
    let global = &names["global-parameters.yaml"];
    let out = dev.ok(&["wait", global, "--timeout", "60s"]);
    assert_eq!(out, format!("workflow/{global} Succeeded\n"));

    // steps: hello1, then hello2a and hello2b together.
    let o = run("steps.yaml");
    assert_eq!(o.phase, "Succeeded");
    assert_eq!(o.pods(), ["[0].hello1", "[1].hello2a", "[1].hello2b"]);
    o.before("[0].hello1", "[1].hello2a");
    o.before("[0].hello1", "[1].hello2b");
    assert_eq!(logs(&dev, &o.name, "hello2b"), "hello2b\n");

    // coinflip: the side the coin (a script's output) shows runs, the
    // other is Skipped.
    let o = run("coinflip.yaml");
    assert_eq!(o.phase, "Succeeded");
    let side = o.result("[0].flip-coin").to_string();
    let other = if side == "heads" { "tails" } else { "heads" };
    assert!(side == "heads" || side == "tails", "{side:?}");
    assert_eq!(o.phase_of(&format!("[1].{side}")), "Succeeded");
    assert_eq!(o.phase_of(&format!("[1].{other}")), "Skipped");
    assert_eq!(logs(&dev, &o.name, &side), format!("it was {side}\n"));

    // dag-diamond-steps: each DAG task is a steps template fanning out.
    let o = run("dag-diamond-steps.yaml");
    assert_eq!(o.phase, "Succeeded");
    assert_eq!(o.pods().len(), 12);
    for t in ["A", "B", "C", "D"] {
        for (i, item) in ["1", "2", "3"].iter().enumerate() {
            assert_eq!(
                o.phase_of(&format!(".{t}[0].echo({i}:{item})")),
                "Succeeded"
            );
        }
    }
    o.before(".A", ".B");
    o.before(".A", ".C");
    o.before(".B", ".D");
    o.before(".C", ".D");

    // loops: one step per item.
    let o = run("loops.yaml");
    assert_eq!(o.phase, "Succeeded");
    assert_eq!(
        o.pods(),
        [
            "[0].print-message-loop(0:hello world)",
            "[0].print-message-loop(1:goodbye world)"
        ]
    );

    // output-parameter: a file read after the step, passed to the next.
    let o = run("output-parameter.yaml");
    assert_eq!(o.phase, "Succeeded");
    assert_eq!(
        o.node("[0].generate-parameter")["outputs"]["parameters"]["hello-param"],
        "hello world"
    );
    assert_eq!(logs(&dev, &o.name, "consume-parameter"), "hello world\n");

    // parameter-aggregation: fan-out, aggregated parameters, a `when` per
    // item, and a fan-out over the aggregated results.
    let o = run("parameter-aggregation.yaml");
    assert_eq!(o.phase, "Succeeded");
    assert_eq!(
        o.phase_of("[3].divide-by-2(1:evenness:even,num:2)"),
        "Succeeded"
    );
    assert_eq!(
        o.phase_of("[3].divide-by-2(0:evenness:odd,num:1)"),
        "Skipped"
    );
    assert_eq!(o.result("[3].divide-by-2(3:evenness:even,num:4)"), "2");
    assert_eq!(o.phase_of("[4].print(0:1)"), "Succeeded");
    assert_eq!(o.phase_of("[4].print(1:2)"), "Succeeded");
    assert_eq!(
        logs(&dev, &o.name, "print-evenness"),
        "[\"odd\",\"even\",\"odd\",\"even\"]\n"
    );

    // scripts-bash: a script's result feeds the next step.
    let o = run("scripts-bash.yaml");
    assert_eq!(o.phase, "Succeeded");
    let n: u32 = o.result("[0].generate").parse().unwrap();
    assert!((1..=101).contains(&n), "{n}");
    assert_eq!(logs(&dev, &o.name, "print"), format!("result was: {n}\n"));

    // exit-handlers: the entrypoint fails, the exit handler runs and cries.
    let o = run("exit-handlers.yaml");
    assert_eq!(o.phase, "Failed");
    assert_eq!(o.phase_of(""), "Failed");
    assert_eq!(o.phase_of(".onExit[0].notify"), "Succeeded");
    assert_eq!(o.phase_of(".onExit[0].cry"), "Succeeded");
    assert_eq!(o.phase_of(".onExit[0].celebrate"), "Skipped");
    let notify = logs(&dev, &o.name, "notify");
    assert!(
        notify.starts_with(&format!("send e-mail: {} Failed ", o.name)),
        "{notify}"
    );
    assert!(notify.contains("intentional-fail"), "{notify}");

    // dag-targets: the target comes from a workflow parameter (E).
    let o = run("dag-targets.yaml");
    assert_eq!(o.phase, "Succeeded");
    assert_eq!(o.pods(), [".A", ".C", ".E"]);
    o.before(".C", ".E");

    // dag-enhanced-depends: C fails, what handles it runs, B && C is
    // omitted, and the workflow succeeds.
    let o = run("dag-enhanced-depends.yaml");
    assert_eq!(o.phase, "Succeeded");
    assert_eq!(o.phase_of(".C"), "Failed");
    for t in ["should-execute-1", "should-execute-2", "should-execute-3"] {
        assert_eq!(o.phase_of(&format!(".{t}")), "Succeeded", "{t}");
    }
    assert_eq!(o.phase_of(".should-not-execute"), "Omitted");

    // global-parameters: the entrypoint is one container.
    let o = run("global-parameters.yaml");
    assert_eq!(o.phase, "Succeeded");
    assert_eq!(o.pods(), [""]);

    // dag-diamond and dag-nested.
    let o = run("dag-diamond.yaml");
    assert_eq!(o.phase, "Succeeded");
    assert_eq!(o.pods(), [".A", ".B", ".C", ".D"]);
    o.before(".A", ".B");
    o.before(".B", ".D");
    o.before(".C", ".D");
    let o = run("dag-nested.yaml");
    assert_eq!(o.phase, "Succeeded");
    assert_eq!(o.pods().len(), 16);
    o.before(".A.D", ".B.A");
    // `logs --step A` names four steps here: the CLI asks which one.
    let out = dev.run(&["logs", "workflow", &o.name, "--step", "A"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("A.A, B.A, C.A, D.A"), "{err}");
    assert_eq!(logs(&dev, &o.name, "B.A"), "BA\n");

    // dag-conditional-parameters: valueFrom.expression picks the result
    // of the branch that ran.
    let o = run("dag-conditional-parameters.yaml");
    assert_eq!(o.phase, "Succeeded");
    let side = o.result(".flip-coin").to_string();
    assert_eq!(o.result(&format!(".{side}")), side);
    assert_eq!(
        o.node("")["outputs"]["parameters"]["stepresult"],
        side.as_str()
    );

    // continue-on-fail: C fails, `continueOn.failed` lets D run; with
    // `parallelism: 1` no two steps overlap.
    let o = run("continue-on-fail.yaml");
    assert_eq!(o.phase, "Succeeded");
    assert_eq!(o.phase_of("[1].C"), "Failed");
    assert_eq!(o.phase_of("[2].D"), "Succeeded");
    o.before("[0].A", "[1].B");
    let (b, c) = (o.node("[1].B"), o.node("[1].C"));
    let apart = b["finishedMs"].as_u64() <= c["startedMs"].as_u64()
        || c["finishedMs"].as_u64() <= b["startedMs"].as_u64();
    assert!(apart, "B and C overlap under parallelism 1: {b} {c}");
    o.before("[1].C", "[2].D");

    // exit-handler-dag-level: each task's handler runs after it, and
    // before the tasks that depend on it.
    let o = run("exit-handler-dag-level.yaml");
    assert_eq!(o.phase, "Succeeded");
    assert_eq!(
        o.pods(),
        [
            ".A",
            ".A.onExit",
            ".B",
            ".B.onExit",
            ".C",
            ".C.onExit",
            ".D",
            ".D.onExit"
        ]
    );
    o.before(".A", ".A.onExit");
    o.before(".A.onExit", ".B");
    o.before(".A.onExit", ".C");
    o.before(".B.onExit", ".D");
    o.before(".C.onExit", ".D");
    o.before(".D", ".D.onExit");
    assert_eq!(logs(&dev, &o.name, "D.onExit"), "task cleanup\n");

    // exit-handler-step-level: `hooks.exit` of each step, the next group
    // after the handlers of the one before.
    let o = run("exit-handler-step-level.yaml");
    assert_eq!(o.phase, "Succeeded");
    o.before("[0].hello1", "[0].hello1.onExit");
    o.before("[0].hello1.onExit", "[1].hello2a");
    o.before("[1].hello2b", "[1].hello2b.onExit");
    assert_eq!(logs(&dev, &o.name, "hello2a.onExit"), "step cleanup\n");

    // suspend-template, resumed above: `delay` resumed itself after its 2 s.
    let o = run("suspend-template.yaml");
    assert_eq!(o.phase, "Succeeded");
    assert_eq!(o.pods(), ["[0].build", "[3].release"]);
    assert_eq!(o.node("[1].approve")["nodeType"], "Suspend");
    assert_eq!(o.phase_of("[1].approve"), "Succeeded");
    assert_eq!(o.phase_of("[2].delay"), "Succeeded");
    o.before("[0].build", "[1].approve");
    o.before("[1].approve", "[2].delay");
    o.before("[2].delay", "[3].release");
    let delay = o.node("[2].delay");
    let waited = delay["finishedMs"].as_u64().unwrap() - delay["startedMs"].as_u64().unwrap();
    assert!(waited >= 2000, "delay waited {waited} ms");

    // dag-inline-workflow and steps-inline-workflow: the template written
    // in the task runs.
    let o = run("dag-inline-workflow.yaml");
    assert_eq!(o.phase, "Succeeded");
    assert_eq!(o.pods(), [".a"]);
    assert_eq!(logs(&dev, &o.name, "a"), "hello\n");
    let o = run("steps-inline-workflow.yaml");
    assert_eq!(o.phase, "Succeeded");
    assert_eq!(o.pods(), ["[0].a"]);

    // input-artifact-raw: the raw content is the file the step reads.
    let o = run("input-artifact-raw.yaml");
    assert_eq!(o.phase, "Succeeded");
    assert_eq!(
        logs(&dev, &o.name, &o.name),
        "this is\nthe raw file\ncontents\n"
    );

    // dag-conditional-artifacts: the DAG's output artifact is the one of
    // the branch that ran (fromExpression).
    let o = run("dag-conditional-artifacts.yaml");
    assert_eq!(o.phase, "Succeeded");
    let side = o.result(".flip-coin").to_string();
    assert!(side == "heads" || side == "tails", "{side:?}");
    let picked = &o.node("")["outputs"]["artifacts"]["stepresult"];
    assert_eq!(picked["step"], format!("{}.{side}", o.name), "{picked}");
    assert_eq!(picked["name"], format!("{side}result"), "{picked}");

    // loops-sequence: counts, ranges (down too), a count from a parameter
    // and a printf format.
    let o = run("loops-sequence.yaml");
    assert_eq!(o.phase, "Succeeded");
    let items = |step: &str| -> Vec<String> {
        let mut v: Vec<String> = o
            .pods()
            .iter()
            .filter_map(|p| p.strip_prefix(&format!("[0].{step}(")))
            .map(|p| {
                p.split_once(':')
                    .unwrap()
                    .1
                    .trim_end_matches(')')
                    .to_string()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(items("sequence-count"), ["0", "1", "2", "3", "4"]);
    assert_eq!(
        items("sequence-start-end"),
        ["100", "101", "102", "103", "104", "105"]
    );
    assert_eq!(items("sequence-param"), ["200", "201", "202"]);

    // with-items-with-hooks (Argo's smoke test): each item of the fan-out
    // task has its own exit handler, run after that item.
    let o = run("with-items-with-hooks.yaml");
    assert_eq!(o.phase, "Succeeded");
    for item in ["(0:1)", "(1:2)", "(2:3)"] {
        o.before(
            &format!(".run-sim{item}[0].run-sim"),
            &format!(".run-sim{item}.onExit"),
        );
        assert_eq!(
            logs(&dev, &o.name, &format!("run-sim{item}.onExit")),
            "I am a hook bar\n"
        );
    }
    assert_eq!(
        o.pods().iter().filter(|p| p.ends_with(".onExit")).count(),
        3
    );
    assert_eq!(items("sequence-negative"), ["0", "1", "2", "3", "4", "5"]);
    assert_eq!(
        items("sequence-format"),
        [
            "testuser00",
            "testuser01",
            "testuser02",
            "testuser03",
            "testuser04"
        ]
    );
}
