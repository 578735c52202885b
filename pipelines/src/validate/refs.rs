//! `{{...}}` references: every variable a string names must exist where
//! the string sits (a workflow parameter, the template's inputs, a task
//! the current task depends on, an item of a fan-out, a step's pod name).

use super::checker::{Validator, VarCtx};
use crate::expr::{is_known_function, parse_expr};
use crate::vars::{segments, Segment};

impl Validator<'_> {
    /// Every `{{...}}` in `s`, found at `path`, must be well formed and
    /// refer to something in reach of `ctx`.
    pub(super) fn check_str(&mut self, path: &str, s: &str, ctx: VarCtx<'_>) {
        if !s.contains("{{") && !s.contains("}}") {
            return;
        }
        let segs = match segments(s) {
            Ok(segs) => segs,
            Err((_, e)) => {
                self.err(path, e);
                return;
            }
        };
        for seg in segs {
            match seg {
                Segment::Var(v) => {
                    if let Err(e) = self.check_var(v, ctx) {
                        self.err(path, e);
                    }
                }
                Segment::Expr(e) => self.check_expr(path, e, ctx),
                Segment::Text(_) => {}
            }
        }
    }

    /// An expr-lang expression at `path`: it parses, calls only functions
    /// gpuctl has, and reads only variables in reach of `ctx`.
    pub(super) fn check_expr(&mut self, path: &str, src: &str, ctx: VarCtx<'_>) {
        let ast = match parse_expr(src) {
            Ok(ast) => ast,
            Err(e) => {
                self.err(path, format!("syntax error in expression {src:?} {e}"));
                return;
            }
        };
        for f in ast.functions() {
            if !is_known_function(&f) {
                self.err(path, format!("function {f:?} in expression {src:?} is not supported by gpuctl (see README: expressions)"));
            }
        }
        for v in ast.variables() {
            let parts: Vec<&str> = v.split('.').collect();
            // A variable written down to its leaf is checked like
            // `{{...}}`; a map (`inputs.parameters`) only by its root.
            let leaf = match parts[0] {
                "inputs" => parts.len() >= 3,
                "workflow" => parts.len() >= 3 || (parts.len() == 2 && parts[1] != "parameters"),
                "tasks" | "steps" => parts.len() >= 3,
                "item" | "retries" => true,
                "pod" => parts.len() >= 2,
                "sprig" => continue,
                _ => {
                    self.err(path, format!("unknown name {:?} in expression {src:?} (known: inputs, workflow, tasks, steps, item, retries)", parts[0]));
                    continue;
                }
            };
            if leaf {
                if let Err(e) = self.check_var(&v, ctx) {
                    self.err(path, e);
                }
            }
        }
    }

    /// Whether variable `v` exists where `ctx` says the string sits, and if
    /// not, why (with what to write instead where there is an obvious fix).
    pub(super) fn check_var(&self, v: &str, ctx: VarCtx<'_>) -> Result<(), String> {
        let parts: Vec<&str> = v.split('.').collect();
        let wf = self.wf;
        let here = if ctx.leaf {
            "in a container or script"
        } else {
            "here"
        };
        match parts.as_slice() {
            ["workflow", "name" | "status" | "uid" | "namespace" | "duration" | "failures"] => Ok(()),
            // Set in the workflows a CronWorkflow creates.
            ["workflow", "scheduledTime"] => Ok(()),
            ["workflow", "parameters", p] => {
                let declared = wf
                    .spec
                    .arguments
                    .as_ref()
                    .is_some_and(|a| a.parameters.iter().any(|x| x.name == *p));
                if declared {
                    Ok(())
                } else {
                    Err(format!("`{{{{{v}}}}}`: no workflow parameter {p:?} in spec.arguments.parameters"))
                }
            }
            ["inputs", "parameters", p] => {
                if ctx.tmpl.input_parameters().iter().any(|x| x.name == *p) {
                    Ok(())
                } else {
                    Err(format!(
                        "`{{{{{v}}}}}`: template {:?} has no input parameter {p:?}",
                        ctx.tmpl.name
                    ))
                }
            }
            ["inputs", "artifacts", a, rest @ ..] => {
                if !ctx.tmpl.input_artifacts().iter().any(|x| x.name == *a) {
                    return Err(format!(
                        "`{{{{{v}}}}}`: template {:?} has no input artifact {a:?}",
                        ctx.tmpl.name
                    ));
                }
                match rest {
                    ["path"] if ctx.leaf => Ok(()),
                    [] if ctx.artifact => Ok(()),
                    _ => Err(format!("`{{{{{v}}}}}` cannot be used {here} (use `{{{{inputs.artifacts.{a}.path}}}}` in a step, `{{{{inputs.artifacts.{a}}}}}` in `from`)")),
                }
            }
            ["item", ..] => {
                if ctx.item {
                    Ok(())
                } else {
                    Err(format!("`{{{{{v}}}}}` is only defined in a task with `withItems` or `withParam`"))
                }
            }
            ["pod", "name"] | ["retries"] if ctx.leaf => Ok(()),
            [root @ ("tasks" | "steps"), t, rest @ ..] => {
                let what = if *root == "tasks" { "task" } else { "step" };
                let Some((tasks, allowed, me)) = ctx.dag else {
                    return Err(format!("`{{{{{v}}}}}`: only a DAG task's or a step's arguments, `when` and `withParam` (or a DAG's or steps template's outputs) can refer to {root}"));
                };
                match (ctx.steps, *root) {
                    (true, "tasks") => return Err(format!("`{{{{{v}}}}}`: in a steps template, refer to a step as `steps.{t}...`")),
                    (false, "steps") => return Err(format!("`{{{{{v}}}}}`: in a DAG, refer to a task as `tasks.{t}...`")),
                    _ => {}
                }
                let Some(idx) = tasks.iter().position(|x| x.name == *t) else {
                    return Err(format!("`{{{{{v}}}}}`: unknown {what} {t:?}"));
                };
                if let (Some(allowed), Some(me)) = (allowed, me) {
                    if !allowed.contains(&idx) {
                        return Err(if ctx.steps {
                            format!("`{{{{{v}}}}}`: step {t:?} is not in a group before the one of {me:?}; a step sees the outputs of earlier groups only")
                        } else {
                            format!("`{{{{{v}}}}}`: task {t:?} is not a dependency of {me:?}; add it to `depends` or `dependencies`")
                        });
                    }
                }
                let task_tmpl = tasks[idx]
                    .template
                    .as_deref()
                    .and_then(|n| wf.template(n))
                    .map(|(_, t)| t);
                match rest {
                    ["status"] | ["exitCode"] | ["id"] | ["outputs", "result"] | ["outputs", "parameters"] => Ok(()),
                    ["outputs", "parameters", p] => match task_tmpl {
                        Some(tt) if !tt.output_parameters().iter().any(|x| x.name == *p) => Err(format!(
                            "`{{{{{v}}}}}`: template {:?} of task {t:?} has no output parameter {p:?}",
                            tt.name
                        )),
                        _ => Ok(()),
                    },
                    ["outputs", "artifacts", a] if ctx.artifact => match task_tmpl {
                        Some(tt) if !tt.output_artifacts().iter().any(|x| x.name == *a) => Err(format!(
                            "`{{{{{v}}}}}`: template {:?} of task {t:?} has no output artifact {a:?}",
                            tt.name
                        )),
                        _ => Ok(()),
                    },
                    ["outputs", "artifacts", _] => Err(format!("`{{{{{v}}}}}`: pass artifacts with `arguments.artifacts[].from`")),
                    _ => Err(format!("`{{{{{v}}}}}`: unknown {what} variable (use {root}.{t}.outputs.parameters.NAME, {root}.{t}.outputs.result, {root}.{t}.outputs.artifacts.NAME or {root}.{t}.status)")),
                }
            }
            _ => Err(format!(
                "unknown variable `{{{{{v}}}}}` {here} (known: inputs.parameters.*, inputs.artifacts.*, workflow.name, workflow.parameters.*, workflow.status, tasks.*, steps.*, item)"
            )),
        }
    }
}
