//! DAG templates: task names, the templates they call, `depends` and
//! `dependencies`, fan-out, `target` and cycles first; then, on a graph
//! known to be sound, what each task's `when`, `withParam` and arguments
//! refer to, the inputs a called template needs, and the DAG's outputs.

use std::collections::{BTreeMap, BTreeSet};

use super::checker::{unsupported, Validator, VarCtx};
use super::graph::{ancestors_of, find_cycle, task_depends};
use super::limits::{MAX_FAN_OUT, MAX_TASKS_PER_DAG};
use crate::expr::parse_when;
use crate::spec::{DagTask, DagTemplate, Template};
use crate::vars::{segments, sole_var, Segment};

fn valid_task_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `a, b, c`: the task names of a DAG, for errors.
fn task_names(d: &DagTemplate) -> String {
    d.tasks
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl<'a> Validator<'a> {
    /// A DAG template `t` at path `p`.
    pub(super) fn dag(&mut self, p: &str, t: &'a Template, d: &'a DagTemplate) {
        let dp = format!("{p}.dag");
        if d.tasks.is_empty() {
            self.err(format!("{dp}.tasks"), "a DAG needs at least one task");
            return;
        }
        if d.tasks.len() > MAX_TASKS_PER_DAG {
            self.err(
                format!("{dp}.tasks"),
                format!(
                    "{} tasks is more than the limit of {MAX_TASKS_PER_DAG}",
                    d.tasks.len()
                ),
            );
        }
        let Some(deps) = self.dag_tasks(&dp, d) else {
            return;
        };
        let ancestors: Vec<BTreeSet<usize>> =
            (0..d.tasks.len()).map(|j| ancestors_of(j, &deps)).collect();
        for (j, task) in d.tasks.iter().enumerate() {
            let tp = format!("{dp}.tasks[{j}]");
            let item = task.with_items.is_some()
                || task.with_param.is_some()
                || task.with_sequence.is_some();
            let ctx = VarCtx {
                tmpl: t,
                dag: Some((&d.tasks, Some(&ancestors[j]), Some(&task.name))),
                item,
                leaf: false,
                artifact: false,
                steps: false,
            };
            self.task_refs(&tp, task, ctx);
            self.task_required_inputs(&tp, task);
            self.task_hooks(&tp, task, ctx);
        }
        // A DAG's outputs may name any of its tasks.
        let ctx = VarCtx {
            tmpl: t,
            dag: Some((&d.tasks, None, None)),
            item: false,
            leaf: false,
            artifact: false,
            steps: false,
        };
        self.composite_output_refs(p, t, ctx);
    }

    /// What a DAG's or steps template's outputs refer to.
    pub(super) fn composite_output_refs(&mut self, p: &str, t: &Template, ctx: VarCtx<'_>) {
        for (j, op) in t.output_parameters().iter().enumerate() {
            if let Some(s) = op.value_from.as_ref().and_then(|v| v.parameter.as_ref()) {
                self.check_str(
                    &format!("{p}.outputs.parameters[{j}].valueFrom.parameter"),
                    s,
                    ctx,
                );
            }
            if let Some(v) = &op.value {
                self.check_str(&format!("{p}.outputs.parameters[{j}].value"), &v.0, ctx);
            }
            if let Some(e) = op.value_from.as_ref().and_then(|v| v.expression.as_ref()) {
                self.check_expr(
                    &format!("{p}.outputs.parameters[{j}].valueFrom.expression"),
                    e,
                    ctx,
                );
            }
        }
        for (j, a) in t.output_artifacts().iter().enumerate() {
            if let Some(f) = &a.from {
                self.check_str(
                    &format!("{p}.outputs.artifacts[{j}].from"),
                    f,
                    VarCtx {
                        artifact: true,
                        ..ctx
                    },
                );
            }
        }
    }

    /// Each task's own fields and its dependencies, then `target`. Returns
    /// the dependency graph (task → the tasks it depends on), or `None`
    /// when it has a cycle.
    fn dag_tasks(&mut self, dp: &str, d: &DagTemplate) -> Option<Vec<Vec<usize>>> {
        let index: BTreeMap<&str, usize> = d
            .tasks
            .iter()
            .enumerate()
            .rev()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let names_list = || task_names(d);
        // Per-task structure first, so later checks can rely on the graph.
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); d.tasks.len()];
        let mut seen = BTreeSet::new();
        for (j, task) in d.tasks.iter().enumerate() {
            let tp = format!("{dp}.tasks[{j}]");
            self.task_common(&tp, task, "task", &mut seen);
            if task.dependencies.is_some() && task.depends.is_some() {
                self.err(
                    format!("{tp}.depends"),
                    "use either `depends` or `dependencies`, not both",
                );
                continue;
            }
            let field = if task.depends.is_some() {
                "depends"
            } else {
                "dependencies"
            };
            match task_depends(task) {
                Err(e) => self.err(
                    format!("{tp}.depends"),
                    format!(
                        "syntax error in {:?} {e}",
                        task.depends.as_deref().unwrap_or("")
                    ),
                ),
                Ok(None) => {}
                Ok(Some(expr)) => {
                    for name in expr.task_names() {
                        match index.get(name) {
                            None => self.err(
                                format!("{tp}.{field}"),
                                format!("unknown task {name:?} (tasks: {})", names_list()),
                            ),
                            Some(&k) if k == j => self.err(
                                format!("{tp}.{field}"),
                                format!("task {name:?} depends on itself"),
                            ),
                            Some(&k) => deps[j].push(k),
                        }
                    }
                }
            }
        }
        if let Some(target) = d.target.as_ref().filter(|t| t.contains("{{")) {
            // A target from a workflow parameter (`-p target=E`) is checked
            // when the run starts.
            for v in crate::vars::var_names(target) {
                if !v.starts_with("workflow.parameters.") {
                    self.err(
                        format!("{dp}.target"),
                        format!("`{{{{{v}}}}}`: a target can only use workflow parameters"),
                    );
                }
            }
        } else if let Some(target) = &d.target {
            for name in target.split_whitespace() {
                if !index.contains_key(name) {
                    self.err(
                        format!("{dp}.target"),
                        format!("unknown task {name:?} (tasks: {})", names_list()),
                    );
                }
            }
            if target.trim().is_empty() {
                self.err(format!("{dp}.target"), "must name at least one task");
            }
        }
        if let Some(cycle) = find_cycle(&deps) {
            let mut names: Vec<&str> = cycle.iter().map(|&k| d.tasks[k].name.as_str()).collect();
            names.push(names[0]);
            let first = cycle[0];
            let field = if d.tasks[first].depends.is_some() {
                "depends"
            } else {
                "dependencies"
            };
            self.err(
                format!("{dp}.tasks[{first}].{field}"),
                format!("cycle: {}", names.join(" -> ")),
            );
            return None;
        }
        Some(deps)
    }

    /// What every DAG task and step needs: a valid, unique name, a template
    /// that exists, and at most one kind of fan-out. `what` is "task" or
    /// "step", for errors.
    pub(super) fn task_common<'t>(
        &mut self,
        tp: &str,
        task: &'t DagTask,
        what: &str,
        seen: &mut BTreeSet<&'t str>,
    ) {
        if !valid_task_name(&task.name) {
            self.err(format!("{tp}.name"), format!("{:?} is not a valid {what} name: use letters, digits, '-' and '_', starting with a letter or digit", task.name));
        } else if !seen.insert(task.name.as_str()) {
            self.err(
                format!("{tp}.name"),
                format!("duplicate {what} name {:?}", task.name),
            );
        }
        unsupported(
            &mut self.errors,
            tp,
            &[("templateRef", &task.template_ref)],
            "",
        );
        // Left in place by hoisting only beside a `template`.
        if task.inline.is_some() {
            self.err(
                format!("{tp}.inline"),
                "use either `template` or `inline`, not both",
            );
        }
        match &task.template {
            None => self.err(
                format!("{tp}.template"),
                "missing: the template this task runs",
            ),
            Some(n) if self.wf.template(n).is_none() => self.err(
                format!("{tp}.template"),
                format!("no template named {n:?}{}", self.known_templates()),
            ),
            Some(_) => {}
        }
        if task.with_sequence.is_some() && (task.with_items.is_some() || task.with_param.is_some())
        {
            self.err(
                format!("{tp}.withSequence"),
                "use one of `withItems`, `withParam` and `withSequence`",
            );
        }
        if let Some(seq) = &task.with_sequence {
            if seq.count.is_some() == seq.end.is_some() {
                self.err(format!("{tp}.withSequence"), "give either `count` or `end`");
            }
            if let Some(f) = &seq.format {
                if let Err(e) = crate::run::format_sequence_item(f, 0) {
                    self.err(format!("{tp}.withSequence.format"), e);
                }
            }
        }
        if task.with_items.is_some() && task.with_param.is_some() {
            self.err(
                format!("{tp}.withParam"),
                "use either `withItems` or `withParam`, not both",
            );
        }
        if let Some(items) = &task.with_items {
            if items.len() > MAX_FAN_OUT {
                self.err(
                    format!("{tp}.withItems"),
                    format!(
                        "{} items is more than the limit of {MAX_FAN_OUT}",
                        items.len()
                    ),
                );
            }
        }
    }

    /// What a task's `when`, `withParam` and arguments refer to.
    pub(super) fn task_refs(&mut self, tp: &str, task: &DagTask, ctx: VarCtx<'_>) {
        if let Some(w) = &task.when {
            self.check_str(&format!("{tp}.when"), w, ctx);
            // Syntax check with each variable replaced by a plain word.
            if let Ok(segs) = segments(w) {
                let probe: String = segs
                    .iter()
                    .map(|s| match s {
                        Segment::Text(t) => t.to_string(),
                        Segment::Var(_) | Segment::Expr(_) => "x".to_string(),
                    })
                    .collect();
                if let Err(e) = parse_when(&probe) {
                    self.err(format!("{tp}.when"), format!("syntax error in {w:?} {e}"));
                }
            }
        }
        if let Some(seq) = &task.with_sequence {
            for (name, v) in [
                ("count", &seq.count),
                ("start", &seq.start),
                ("end", &seq.end),
            ] {
                if let Some(v) = v {
                    self.check_str(
                        &format!("{tp}.withSequence.{name}"),
                        &v.0,
                        VarCtx { item: false, ..ctx },
                    );
                }
            }
        }
        if let Some(wp) = &task.with_param {
            self.check_str(
                &format!("{tp}.withParam"),
                wp,
                VarCtx { item: false, ..ctx },
            );
        }
        let mut seen = BTreeSet::new();
        for (k, a) in task.parameters().iter().enumerate() {
            let ap = format!("{tp}.arguments.parameters[{k}]");
            self.param_common(&ap, a);
            if !seen.insert(a.name.as_str()) {
                self.err(
                    format!("{ap}.name"),
                    format!("duplicate argument {:?}", a.name),
                );
            }
            if a.value_from.is_some() {
                self.err(
                    format!("{ap}.valueFrom"),
                    "task arguments take a `value` (e.g. \"{{tasks.A.outputs.parameters.x}}\")",
                );
            }
            if let Some(v) = &a.value {
                self.check_str(&format!("{ap}.value"), &v.0, ctx);
            }
        }
        for (k, a) in task.artifacts().iter().enumerate() {
            let ap = format!("{tp}.arguments.artifacts[{k}]");
            self.artifact_common(&ap, a);
            if let Some(r) = &a.raw {
                self.check_str(&format!("{ap}.raw.data"), &r.data, ctx);
                continue;
            }
            if a.from_expression.is_some() {
                continue;
            }
            match &a.from {
                None => self.err(
                    format!("{ap}.from"),
                    "missing: e.g. `from: \"{{tasks.train.outputs.artifacts.model}}\"`",
                ),
                Some(f) => {
                    if sole_var(f).is_none() && segments(f).is_ok() {
                        self.err(format!("{ap}.from"), format!("{f:?} must be exactly one variable such as \"{{{{tasks.A.outputs.artifacts.model}}}}\""));
                    } else {
                        self.check_str(
                            &format!("{ap}.from"),
                            f,
                            VarCtx {
                                artifact: true,
                                ..ctx
                            },
                        );
                    }
                }
            }
        }
    }

    /// Required inputs of the called template must be supplied.
    pub(super) fn task_required_inputs(&mut self, tp: &str, task: &DagTask) {
        if let Some((_, callee)) = task.template.as_deref().and_then(|n| self.wf.template(n)) {
            for ip in callee.input_parameters() {
                let given = task.parameters().iter().any(|a| a.name == ip.name);
                if !given && ip.value.is_none() && ip.default.is_none() {
                    self.err(
                        format!("{tp}.arguments.parameters"),
                        format!(
                            "missing parameter {:?} that template {:?} needs",
                            ip.name, callee.name
                        ),
                    );
                }
            }
            for ia in callee.input_artifacts() {
                let given = task.artifacts().iter().any(|a| a.name == ia.name);
                if !given && ia.optional != Some(true) && ia.raw.is_none() {
                    self.err(
                        format!("{tp}.arguments.artifacts"),
                        format!(
                            "missing artifact {:?} that template {:?} needs",
                            ia.name, callee.name
                        ),
                    );
                }
            }
        }
    }
}
