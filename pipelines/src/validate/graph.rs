//! The dependency structure of DAGs: a task's dependencies from
//! `depends` or `dependencies`, cycles between tasks, everything a task
//! depends on, and templates that call themselves without a way to stop.

use std::collections::BTreeSet;

use super::checker::Validator;
use crate::expr::{parse_depends, Depends, SyntaxError};
use crate::spec::{DagTask, Template};

/// The dependency structure of one DAG task, derived from `depends` or
/// `dependencies`.
pub fn task_depends(task: &DagTask) -> Result<Option<Depends>, SyntaxError> {
    if let Some(d) = &task.depends {
        if d.trim().is_empty() {
            return Ok(None);
        }
        return parse_depends(d).map(Some);
    }
    Ok(task.dependencies.as_deref().and_then(Depends::all_of))
}

/// A cycle in `deps` (task → the tasks it depends on), in run order and
/// starting at the first-declared task on it.
pub fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let n = deps.len();
    let mut mark = vec![Mark::New; n];
    for root in 0..n {
        if mark[root] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::Open;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if *next < deps[node].len() {
                let d = deps[node][*next];
                *next += 1;
                match mark[d] {
                    Mark::New => {
                        mark[d] = Mark::Open;
                        stack.push((d, 0));
                    }
                    Mark::Open => {
                        // stack from d to node is the cycle, in "depends on" order.
                        let pos = stack.iter().position(|(x, _)| *x == d).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[pos..].iter().map(|(x, _)| *x).collect();
                        cycle.reverse(); // run order: a dependency before its dependent
                        let min_pos = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, &x)| x)
                            .map(|(i, _)| i)
                            .unwrap_or(0);
                        cycle.rotate_left(min_pos);
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

/// All tasks `j` depends on, directly or not.
pub fn ancestors_of(j: usize, deps: &[Vec<usize>]) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let mut todo = deps[j].clone();
    while let Some(k) = todo.pop() {
        if out.insert(k) {
            todo.extend(deps[k].iter().copied());
        }
    }
    out
}

/// The tasks of a DAG template or the steps of a steps template, in order.
fn calls(t: &Template) -> impl Iterator<Item = &DagTask> {
    let dag = t.dag.iter().flat_map(|d| d.tasks.iter());
    let steps = t.steps.iter().flatten().flatten();
    dag.chain(steps)
}

/// The path of the `template` field of call `j` (in [`calls`] order) of
/// template `i`.
fn call_path(t: &Template, i: usize, j: usize) -> String {
    if let Some(groups) = &t.steps {
        let mut k = j;
        for (g, steps) in groups.iter().enumerate() {
            if k < steps.len() {
                return format!("spec.templates[{i}].steps[{g}][{k}].template");
            }
            k -= steps.len();
        }
    }
    format!("spec.templates[{i}].dag.tasks[{j}].template")
}

impl Validator<'_> {
    /// A DAG or steps template that calls itself (directly or through others) needs a
    /// task with `when` on the way, or it would nest forever.
    pub(super) fn recursion(&mut self) {
        let tpls = &self.wf.spec.templates;
        // edges[i] = (task index, callee template index)
        let edges: Vec<Vec<(usize, usize)>> = tpls
            .iter()
            .map(|t| {
                calls(t)
                    .enumerate()
                    .filter_map(|(j, task)| {
                        let (k, callee) = self.wf.template(task.template.as_deref()?)?;
                        callee.is_composite().then_some((j, k))
                    })
                    .collect()
            })
            .collect();
        let mut reported = BTreeSet::new();
        for start in 0..tpls.len() {
            // DFS keeping the path of (template, task) edges.
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            let mut path: Vec<(usize, usize)> = Vec::new(); // (template, task) taken
            let mut on_path = vec![false; tpls.len()];
            on_path[start] = true;
            let mut visited = vec![false; tpls.len()];
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if *next < edges[node].len() {
                    let (task, callee) = edges[node][*next];
                    *next += 1;
                    if callee == start {
                        let mut cycle = path.clone();
                        cycle.push((node, task));
                        let has_base = cycle.iter().any(|&(ti, tj)| {
                            calls(&tpls[ti]).nth(tj).is_some_and(|t| t.when.is_some())
                        });
                        let key: BTreeSet<usize> = cycle.iter().map(|c| c.0).collect();
                        if !has_base && reported.insert(key) {
                            let mut names: Vec<&str> = cycle
                                .iter()
                                .map(|&(ti, _)| tpls[ti].name.as_str())
                                .collect();
                            names.push(&tpls[start].name);
                            self.err(
                                call_path(&tpls[node], node, task),
                                format!("recursion without a base case: {} (add a `when` to a task on this loop so it can stop)", names.join(" -> ")),
                            );
                        }
                    } else if !on_path[callee] && !visited[callee] {
                        on_path[callee] = true;
                        path.push((node, task));
                        stack.push((callee, 0));
                    }
                } else {
                    stack.pop();
                    on_path[node] = false;
                    visited[node] = true;
                    path.pop();
                }
            }
        }
    }
}
