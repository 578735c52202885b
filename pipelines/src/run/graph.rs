//! The structure of each DAG template, derived once from the spec when the
//! run starts and stored with it: run order, dependencies, which tasks are
//! in reach of `target`, and which failures a `depends` already handles.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::expr::Depends;
use crate::spec::Template;
use crate::validate::{ancestors_of, task_depends};
use crate::vars::{substitute, Scope};

/// Per DAG template: its graph, derived once from the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DagInfo {
    /// Task indices, dependencies first.
    pub(super) order: Vec<usize>,
    pub(super) deps: Vec<Vec<usize>>,
    pub(super) ancestors: Vec<Vec<usize>>,
    pub(super) depends: Vec<Option<Depends>>,
    /// Within `target`'s closure (all when there is no target).
    pub(super) active: Vec<bool>,
    /// Tasks whose branch phase decides the DAG's phase.
    pub(super) targets: Vec<usize>,
    /// A dependent's `depends` deals with this task failing, so its failure
    /// is part of the design and does not trigger failFast.
    pub(super) handled: Vec<bool>,
    pub(super) fail_fast: bool,
}

impl DagInfo {
    /// `workflow_vars` resolves a `target` written as a variable
    /// (`{{workflow.parameters.target}}`).
    pub(super) fn build(t: &Template, workflow_vars: &Scope) -> DagInfo {
        let d = t.dag.as_ref().expect("a DAG template");
        let target = d
            .target
            .as_deref()
            .map(|t| substitute(t, workflow_vars).unwrap_or_else(|_| t.to_string()));
        let n = d.tasks.len();
        let index: BTreeMap<&str, usize> = d
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let depends: Vec<Option<Depends>> = d
            .tasks
            .iter()
            .map(|t| task_depends(t).ok().flatten())
            .collect();
        let mut deps = vec![Vec::new(); n];
        let mut handled = vec![false; n];
        for (j, e) in depends.iter().enumerate() {
            if let Some(e) = e {
                for name in e.task_names() {
                    if let Some(&k) = index.get(name) {
                        deps[j].push(k);
                    }
                }
                mark_handled(e, false, &index, &mut handled);
            }
        }
        let ancestors: Vec<Vec<usize>> = (0..n)
            .map(|j| ancestors_of(j, &deps).into_iter().collect())
            .collect();
        // Topological order, stable by declaration.
        let mut order = Vec::with_capacity(n);
        let mut placed = vec![false; n];
        while order.len() < n {
            let before = order.len();
            for j in 0..n {
                if !placed[j] && deps[j].iter().all(|&k| placed[k]) {
                    placed[j] = true;
                    order.push(j);
                }
            }
            if order.len() == before {
                break; // a cycle; validation rejects these
            }
        }
        let (active, targets) = match target.as_deref() {
            Some(target) => {
                let mut active = vec![false; n];
                let mut targets = Vec::new();
                for name in target.split_whitespace() {
                    if let Some(&k) = index.get(name) {
                        targets.push(k);
                        active[k] = true;
                        for &a in &ancestors[k] {
                            active[a] = true;
                        }
                    }
                }
                (active, targets)
            }
            None => {
                let mut is_dep = vec![false; n];
                for ds in &deps {
                    for &k in ds {
                        is_dep[k] = true;
                    }
                }
                (vec![true; n], (0..n).filter(|&j| !is_dep[j]).collect())
            }
        };
        DagInfo {
            order,
            deps,
            ancestors,
            depends,
            active,
            targets,
            handled,
            fail_fast: d.fail_fast.unwrap_or(true),
        }
    }
}

fn mark_handled(e: &Depends, negated: bool, index: &BTreeMap<&str, usize>, out: &mut [bool]) {
    match e {
        Depends::Task { name, result } => {
            // Any explicit result (`A.Succeeded`, `A.Failed`, `!A`) means the
            // author wrote result-aware logic about A.
            let failure_aware = negated || result.is_some();
            if failure_aware {
                if let Some(&k) = index.get(name.as_str()) {
                    out[k] = true;
                }
            }
        }
        Depends::Not(x) => mark_handled(x, !negated, index, out),
        Depends::And(a, b) | Depends::Or(a, b) => {
            mark_handled(a, negated, index, out);
            mark_handled(b, negated, index, out);
        }
    }
}
