//! A workflow's DAG as the page draws it: one box per step (a task's run;
//! a `withItems` task has one per item), in layers by the longest chain of
//! dependencies before it, edges from each step of a task's dependencies.
//! Tasks not started yet are boxes in phase `Pending`; the exit handler is
//! a box after the last layer. Pure: the page only places the boxes.

use std::collections::{BTreeMap, HashMap};

use gpuctl_pipelines::run::{NodeType, NodeView, WorkflowStatus};
use gpuctl_pipelines::spec::DagTask;
use gpuctl_pipelines::Workflow;
use serde::Serialize;

/// One box.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// The run's node id (empty for a task not started yet).
    pub id: String,
    pub name: String,
    /// The DAG task it runs.
    pub task: String,
    pub phase: String,
    pub node_type: String,
    pub template: Option<String>,
    pub layer: usize,
    /// Its place in the layer, from 0.
    pub row: usize,
    pub message: Option<String>,
    pub exit_code: Option<i32>,
    pub retries: u32,
    pub memoized: bool,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub outputs: serde_json::Value,
    /// What it was given (`parameters`, `artifacts`); filled in by the
    /// caller, which has the run's nodes (`null` until then).
    pub inputs: serde_json::Value,
    /// The job that ran it (the last attempt's).
    pub job: Option<String>,
}

/// The laid-out graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Graph {
    pub layers: usize,
    pub steps: Vec<Step>,
    /// `[from, to]` indexes into `steps`.
    pub edges: Vec<[usize; 2]>,
}

/// The names in a task's `dependencies` and `depends` that are tasks of
/// the same DAG.
fn deps<'a>(t: &'a DagTask, names: &HashMap<&'a str, usize>) -> Vec<usize> {
    let mut out: Vec<usize> = t
        .dependencies
        .iter()
        .flatten()
        .filter_map(|d| names.get(d.as_str()).copied())
        .collect();
    if let Some(expr) = &t.depends {
        for word in expr.split(|c: char| c.is_whitespace() || "&|!()".contains(c)) {
            let task = word.split('.').next().unwrap_or("");
            if let Some(&i) = names.get(task) {
                out.push(i);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Each task's layer: one more than its deepest dependency's (a cycle,
/// which validation refuses, is cut where found).
fn layers(deps: &[Vec<usize>]) -> Vec<usize> {
    fn visit(i: usize, deps: &[Vec<usize>], memo: &mut [Option<usize>], on: &mut [bool]) -> usize {
        if let Some(l) = memo[i] {
            return l;
        }
        if on[i] {
            return 0;
        }
        on[i] = true;
        let l = deps[i]
            .iter()
            .map(|&d| visit(d, deps, memo, on) + 1)
            .max()
            .unwrap_or(0);
        on[i] = false;
        memo[i] = Some(l);
        l
    }
    let mut memo = vec![None; deps.len()];
    let mut on = vec![false; deps.len()];
    (0..deps.len())
        .map(|i| visit(i, deps, &mut memo, &mut on))
        .collect()
}

fn step(n: &NodeView, task: &str, layer: usize, jobs: &BTreeMap<String, String>) -> Step {
    // A retried step's job is its last attempt's.
    let job = match n.node_type {
        NodeType::Retry => n.children.last().and_then(|c| jobs.get(&c.id)),
        _ => jobs.get(&n.id),
    };
    Step {
        id: n.id.clone(),
        name: n.display_name.clone(),
        task: task.to_string(),
        phase: format!("{:?}", n.phase),
        node_type: n.node_type.to_string(),
        template: n.template.clone(),
        layer,
        row: 0,
        message: n.message.clone(),
        exit_code: n.exit_code,
        retries: n.retries,
        memoized: n.memoized,
        started_ms: n.started_ms,
        finished_ms: n.finished_ms,
        outputs: serde_json::to_value(&n.outputs).unwrap_or_default(),
        inputs: serde_json::Value::Null,
        job: job.cloned(),
    }
}

/// The steps of task `name` among the root's children: its node, or the
/// items of its task group.
fn instances<'a>(root: &'a NodeView, name: &str) -> Vec<&'a NodeView> {
    let mut out = Vec::new();
    for c in &root.children {
        let of_task = c.display_name == name
            || c.display_name
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('('));
        if !of_task {
            continue;
        }
        if c.node_type == NodeType::TaskGroup && !c.children.is_empty() {
            out.extend(c.children.iter());
        } else {
            out.push(c);
        }
    }
    out
}

/// The graph of `wf`'s entry DAG as `status` has it now; `jobs` maps step
/// ids to their jobs.
pub fn layout(wf: &Workflow, status: &WorkflowStatus, jobs: &BTreeMap<String, String>) -> Graph {
    let entry = wf
        .spec
        .entrypoint
        .as_deref()
        .or_else(|| status.root.as_ref().and_then(|r| r.template.as_deref()));
    let dag = entry
        .and_then(|e| wf.spec.templates.iter().find(|t| t.name == e))
        .and_then(|t| t.dag.as_ref());
    let mut steps: Vec<Step> = Vec::new();
    let mut edges = Vec::new();
    match (dag, &status.root) {
        (Some(dag), root) => {
            let names: HashMap<&str, usize> = dag
                .tasks
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.as_str(), i))
                .collect();
            let task_deps: Vec<Vec<usize>> = dag.tasks.iter().map(|t| deps(t, &names)).collect();
            let task_layer = layers(&task_deps);
            let mut of_task: Vec<Vec<usize>> = vec![Vec::new(); dag.tasks.len()];
            for (i, t) in dag.tasks.iter().enumerate() {
                let found = root
                    .as_ref()
                    .map(|r| instances(r, &t.name))
                    .unwrap_or_default();
                if found.is_empty() {
                    of_task[i].push(steps.len());
                    steps.push(Step {
                        id: String::new(),
                        name: t.name.clone(),
                        task: t.name.clone(),
                        phase: "Pending".into(),
                        node_type: "Pending".into(),
                        template: t.template.clone(),
                        layer: task_layer[i],
                        row: 0,
                        message: None,
                        exit_code: None,
                        retries: 0,
                        memoized: false,
                        started_ms: None,
                        finished_ms: None,
                        outputs: serde_json::Value::Null,
                        inputs: serde_json::Value::Null,
                        job: None,
                    });
                }
                for n in found {
                    of_task[i].push(steps.len());
                    steps.push(step(n, &t.name, task_layer[i], jobs));
                }
            }
            for (i, ds) in task_deps.iter().enumerate() {
                for &d in ds {
                    for &from in &of_task[d] {
                        for &to in &of_task[i] {
                            edges.push([from, to]);
                        }
                    }
                }
            }
        }
        (None, Some(root)) => steps.push(step(root, &root.display_name, 0, jobs)),
        (None, None) => {}
    }
    let mut layer_count = steps.iter().map(|s| s.layer + 1).max().unwrap_or(0);
    if let Some(exit) = &status.on_exit {
        steps.push(step(exit, "onExit", layer_count, jobs));
        layer_count += 1;
    }
    let mut rows = vec![0usize; layer_count];
    for s in &mut steps {
        s.row = rows[s.layer];
        rows[s.layer] += 1;
    }
    Graph {
        layers: layer_count,
        steps,
        edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIAMOND: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: diamond}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: a, template: t}
      - {name: b, template: t, dependencies: [a], withItems: ["1", "2"]}
      - {name: c, template: t, depends: "a.Succeeded"}
      - {name: d, template: t, depends: "b && (c.Failed || c.Succeeded)"}
  - name: t
    container: {image: x, command: ["true"]}
"#;

    #[test]
    fn a_dag_not_started_is_its_tasks_in_layers() {
        let wf = gpuctl_pipelines::spec::parse_unvalidated(DIAMOND).unwrap();
        let status = WorkflowStatus {
            name: "diamond".into(),
            phase: gpuctl_pipelines::run::WorkflowPhase::Running,
            started_ms: 0,
            finished_ms: None,
            message: None,
            root: None,
            on_exit: None,
            suspended: false,
        };
        let g = layout(&wf, &status, &BTreeMap::new());
        let placed: Vec<(&str, usize, usize, &str)> = g
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.layer, s.row, s.phase.as_str()))
            .collect();
        assert_eq!(
            placed,
            [
                ("a", 0, 0, "Pending"),
                ("b", 1, 0, "Pending"),
                ("c", 1, 1, "Pending"),
                ("d", 2, 0, "Pending")
            ]
        );
        assert_eq!(g.layers, 3);
        assert_eq!(g.edges, [[0, 1], [0, 2], [1, 3], [2, 3]]);
    }
}
