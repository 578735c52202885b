//! `gpuctl suspend` and `gpuctl resume` on a real `gpuctl dev` cluster, as
//! `argo suspend` and `argo resume`: a suspended workflow starts no new step
//! while the running one finishes, and a resume starts the rest.

mod support;
use support::{eventually, DevCluster};

use std::time::Duration;

use serde_json::Value;

const WF: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: hold}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: first, template: wait-for-go}
    - - {name: second, template: hello}
  - name: wait-for-go
    container:
      image: busybox
      command: [sh, -c, "i=0; while [ ! -f GO ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; printf first"]
      workingDir: DIR
  - name: hello
    container: {image: busybox, command: [echo, second]}
"#;

fn node_phase(wf: &Value, id: &str) -> Option<String> {
    fn find<'a>(n: &'a Value, id: &str) -> Option<&'a Value> {
        if n["id"] == id {
            return Some(n);
        }
        n["children"].as_array()?.iter().find_map(|c| find(c, id))
    }
    find(&wf["status"]["root"], id).map(|n| n["phase"].as_str().unwrap_or("").to_string())
}

#[test]
fn a_suspended_workflow_starts_no_step_until_resumed() {
    let dev = DevCluster::start(tempfile::tempdir().unwrap(), &[], Duration::from_secs(60));
    let dir = dev.dir().join("steps");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dev.dir().join("hold.yaml");
    std::fs::write(&file, WF.replace("DIR", &dir.display().to_string())).unwrap();
    dev.ok(&["submit", "-f", file.to_str().unwrap()]);
    let get = || -> Value {
        serde_json::from_str(&dev.ok(&["get", "workflow", "hold", "-o", "json"])).unwrap()
    };
    eventually(Duration::from_secs(60), "first runs", || {
        (node_phase(&get(), "hold[0].first").as_deref() == Some("Running")).then_some(())
    });

    assert_eq!(dev.ok(&["suspend", "hold"]), "workflow/hold suspended\n");
    let table = dev.ok(&["get", "workflows"]);
    assert!(table.contains("Running (Suspended)"), "{table}");
    // The running step finishes; the next one does not start.
    std::fs::write(dir.join("GO"), "").unwrap();
    eventually(Duration::from_secs(60), "first ends", || {
        (node_phase(&get(), "hold[0].first").as_deref() == Some("Succeeded")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let wf = get();
    assert_eq!(wf["status"]["phase"], "Running");
    assert_eq!(wf["status"]["suspended"], true);
    // Its node may wait as Pending; no job was made for it.
    let second = node_phase(&wf, "hold[1].second");
    assert!(
        matches!(second.as_deref(), None | Some("Pending")),
        "{wf:#}"
    );
    assert!(
        wf["status"]["jobs"].get("hold[1].second").is_none(),
        "{wf:#}"
    );

    // Only workflows are suspended; an unknown one is named.
    let out = dev.run(&["suspend", "job/x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = dev.run(&["resume", "nope"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope"),
        "{out:?}"
    );
    let out = dev.run(&["resume", "hold", "--node-field-selector", "inputs.x=1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not supported yet"),
        "{out:?}"
    );

    assert_eq!(
        dev.ok(&["resume", "workflow/hold"]),
        "workflow/hold resumed\n"
    );
    let out = dev.ok(&["wait", "workflow/hold", "--timeout", "60s"]);
    assert_eq!(out, "workflow/hold Succeeded\n");
    assert_eq!(
        dev.ok(&["logs", "workflow", "hold", "--step", "second"]),
        "second\n"
    );
    // `first` printed no final newline: the next header still starts a
    // line of its own.
    assert_eq!(
        dev.ok(&["logs", "workflow", "hold"]),
        "==> first (hold-0-first) <==\nfirst\n==> second (hold-1-second) <==\nsecond\n"
    );
    // A finished workflow cannot be suspended.
    let out = dev.run(&["suspend", "hold"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already Succeeded"),
        "{out:?}"
    );
}
