//! A task's or step's exit handler (`onExit`, `hooks.exit`): a template
//! that exists, arguments that resolve (the task itself is in reach: its
//! `status`, `exitCode` and outputs), and the hooks gpuctl does not run
//! yet named as such.

use super::checker::{Validator, VarCtx};
use crate::spec::DagTask;

impl Validator<'_> {
    /// `ctx` is the task's own context; the hook's arguments may also name
    /// the task itself.
    pub(super) fn task_hooks(&mut self, tp: &str, task: &DagTask, ctx: VarCtx<'_>) {
        let hooks = task.hooks.as_ref();
        if task.on_exit.is_some() && hooks.is_some_and(|h| h.contains_key("exit")) {
            self.err(
                format!("{tp}.onExit"),
                "use either `onExit` or `hooks.exit`, not both",
            );
        }
        for (name, h) in hooks.into_iter().flatten() {
            let hp = format!("{tp}.hooks.{name}");
            if name != "exit" {
                self.err(
                    &hp,
                    format!("`hooks.{name}` (a hook run when its expression holds) is not supported yet by gpuctl; only `hooks.exit` runs; see README"),
                );
                continue;
            }
            if h.expression.is_some() {
                self.err(
                    format!("{hp}.expression"),
                    "`expression` on an exit hook is not supported yet by gpuctl; see README",
                );
            }
        }
        let Some(hook) = task.exit_hook() else {
            return;
        };
        let hp = if task.on_exit.is_some() {
            format!("{tp}.onExit")
        } else {
            format!("{tp}.hooks.exit")
        };
        match (hook.template.as_deref(), &hook.template_ref) {
            (Some(_), Some(_)) => self.err(
                format!("{hp}.templateRef"),
                "use either `template` or `templateRef`, not both",
            ),
            (None, Some(r)) => self.template_ref(&hp, r),
            (None, None) => self.err(
                format!("{hp}.template"),
                "missing: the template the exit handler runs (`template`, or `templateRef` for one of a WorkflowTemplate)",
            ),
            (Some(n), None) if self.wf.template(n).is_none() => self.err(
                if task.on_exit.is_some() {
                    hp.clone()
                } else {
                    format!("{hp}.template")
                },
                format!("no template named {n:?}{}", self.known_templates()),
            ),
            (Some(_), None) => {}
        }
        let as_task = DagTask {
            name: task.name.clone(),
            template: hook.template.clone(),
            template_ref: hook.template_ref.clone(),
            arguments: hook.arguments.clone(),
            ..Default::default()
        };
        // The task itself is in reach of its exit handler's arguments.
        let ctx = VarCtx {
            dag: ctx.dag.map(|(tasks, _, _)| (tasks, None, None)),
            ..ctx
        };
        self.task_refs(&hp, &as_task, ctx);
        self.task_required_inputs(&hp, &as_task);
    }
}
