//! `steps` templates: at least one group, no empty group, step names unique
//! in the template, no `depends` (a step runs after the group before it),
//! and `{{steps.X...}}` naming only steps of earlier groups.

use std::collections::BTreeSet;

use super::checker::{Validator, VarCtx};
use crate::spec::{DagTask, Template, WorkflowStep};

impl<'a> Validator<'a> {
    /// A steps template `t` at path `p`.
    pub(super) fn steps(&mut self, p: &str, t: &'a Template, groups: &'a [Vec<WorkflowStep>]) {
        let sp = format!("{p}.steps");
        if groups.is_empty() {
            self.err(&sp, "a steps template needs at least one group of steps");
            return;
        }
        // Every step, in order, and the first index of each group's steps.
        let flat: Vec<DagTask> = groups.iter().flatten().cloned().collect();
        let mut seen = BTreeSet::new();
        let mut first_of_group = Vec::with_capacity(groups.len());
        let mut k = 0;
        for (i, g) in groups.iter().enumerate() {
            first_of_group.push(k);
            k += g.len();
            if g.is_empty() {
                self.err(
                    format!("{sp}[{i}]"),
                    "an empty group: give it at least one step",
                );
            }
            for (j, step) in g.iter().enumerate() {
                let tp = format!("{sp}[{i}][{j}]");
                self.task_common(&tp, step, "step", &mut seen);
                for (field, set) in [
                    ("dependencies", step.dependencies.is_some()),
                    ("depends", step.depends.is_some()),
                ] {
                    if set {
                        self.err(
                            format!("{tp}.{field}"),
                            format!("`{field}` belongs to DAG tasks; a step runs once the group before it has ended (use a `dag` template for dependencies)"),
                        );
                    }
                }
            }
        }
        for (i, g) in groups.iter().enumerate() {
            let earlier: BTreeSet<usize> = (0..first_of_group[i]).collect();
            for (j, step) in g.iter().enumerate() {
                let tp = format!("{sp}[{i}][{j}]");
                let item = step.with_items.is_some()
                    || step.with_param.is_some()
                    || step.with_sequence.is_some();
                let ctx = VarCtx {
                    tmpl: t,
                    dag: Some((&flat, Some(&earlier), Some(&step.name))),
                    item,
                    leaf: false,
                    artifact: false,
                    steps: true,
                };
                self.task_refs(&tp, step, ctx);
                self.task_required_inputs(&tp, step);
                self.task_hooks(&tp, step, ctx);
            }
        }
        // A steps template's outputs may name any of its steps.
        let ctx = VarCtx {
            tmpl: t,
            dag: Some((&flat, None, None)),
            item: false,
            leaf: false,
            artifact: false,
            steps: true,
        };
        self.composite_output_refs(p, t, ctx);
    }
}
