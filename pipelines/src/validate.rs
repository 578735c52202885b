//! Checks that need no cluster: everything that can be known about a
//! workflow before any step runs.
//!
//! [`validate_all`] returns every problem found, each with its field path
//! (`spec.templates[1].dag.tasks[2].depends`) and the reason; the first is
//! what [`crate::parse_workflow`] reports.

use std::collections::{BTreeMap, BTreeSet};

use gpuctl_common::api::{FieldError, MAX_GPUS_PER_TASK};

use crate::expr::{parse_depends, parse_when, Depends};
use crate::spec::{
    parse_duration_ms, Artifact, DagTask, IntOrString, Parameter, Template, Unsupported, Workflow,
};
use crate::vars::{segments, var_names};

/// Most retries one step may have.
pub const MAX_RETRY_LIMIT: i64 = 100;
/// Longest deadline (30 days); more is surely a unit mistake.
pub const MAX_DEADLINE_SECONDS: i64 = 30 * 24 * 3600;
/// Deepest nesting of DAGs in a run (bounds recursion that has a base case).
pub const MAX_DAG_DEPTH: usize = 50;
/// Most tasks in one DAG template.
pub const MAX_TASKS_PER_DAG: usize = 1000;
/// Most items one `withItems` / `withParam` may expand to.
pub const MAX_FAN_OUT: usize = 10_000;

impl Workflow {
    /// The template called `name` and its index.
    pub fn template(&self, name: &str) -> Option<(usize, &Template)> {
        self.spec
            .templates
            .iter()
            .enumerate()
            .find(|(_, t)| t.name == name)
    }

    /// The run's name: `metadata.name`, or `metadata.generateName` followed
    /// by `suffix` (the caller's randomness, e.g. five random letters).
    pub fn run_name(&self, suffix: &str) -> String {
        match (&self.metadata.name, &self.metadata.generate_name) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, Some(g)) => format!("{g}{suffix}"),
            _ => suffix.to_string(),
        }
    }
}

/// The dependency structure of one DAG task, derived from `depends` or
/// `dependencies`.
pub fn task_depends(task: &DagTask) -> Result<Option<Depends>, crate::expr::SyntaxError> {
    if let Some(d) = &task.depends {
        if d.trim().is_empty() {
            return Ok(None);
        }
        return parse_depends(d).map(Some);
    }
    Ok(task.dependencies.as_deref().and_then(Depends::all_of))
}

/// Every problem in the workflow, in document order.
pub fn validate_all(wf: &Workflow) -> Vec<FieldError> {
    let mut v = Validator {
        wf,
        errors: Vec::new(),
    };
    v.workflow();
    v.errors
}

struct Validator<'a> {
    wf: &'a Workflow,
    errors: Vec<FieldError>,
}

/// A DAG's tasks, which of them may be named (`None`: all), and the task
/// doing the naming.
type DagRefs<'a> = (&'a [DagTask], Option<&'a BTreeSet<usize>>, Option<&'a str>);

/// Where a string with `{{...}}` sits, which decides what it may refer to.
#[derive(Clone, Copy)]
struct VarCtx<'a> {
    /// Whose `inputs.*` are in reach.
    tmpl: &'a Template,
    /// In a DAG task or DAG output: the DAG and which of its tasks may be
    /// named (`None`: any task of the DAG).
    dag: Option<DagRefs<'a>>,
    item: bool,
    leaf: bool,
    /// An artifact `from`: `tasks.X.outputs.artifacts.Y`, `inputs.artifacts.Y`.
    artifact: bool,
}

fn unsupported(
    errors: &mut Vec<FieldError>,
    path: &str,
    fields: &[(&str, &Unsupported)],
    why: &str,
) {
    for (name, f) in fields {
        if f.is_some() {
            let sep = if path.is_empty() { "" } else { "." };
            errors.push(FieldError::new(
                format!("{path}{sep}{name}"),
                format!("`{name}` is not supported by gpuctl{why}"),
            ));
        }
    }
}

fn valid_task_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn positive_seconds(v: &IntOrString) -> Result<i64, String> {
    match v.as_int() {
        Some(s) if s <= 0 => Err(format!("must be at least 1 second, got {s}")),
        Some(s) if s > MAX_DEADLINE_SECONDS => Err(format!(
            "{s} seconds is more than 30 days; is the unit right?"
        )),
        Some(s) => Ok(s),
        None => Err(format!("expected a whole number of seconds, got {v}")),
    }
}

impl<'a> Validator<'a> {
    fn err(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError::new(path, reason));
    }

    fn workflow(&mut self) {
        let wf = self.wf;
        let m = &wf.metadata;
        match (&m.name, &m.generate_name) {
            (None, None) => self.err(
                "metadata",
                "missing `name` or `generateName` (e.g. `generateName: train-`)",
            ),
            (name, gen) => {
                for (field, val) in [("name", name), ("generateName", gen)] {
                    if let Some(n) = val {
                        let ok = !n.is_empty()
                            && n.len() <= 200
                            && n.chars().all(|c| {
                                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                            });
                        if !ok {
                            self.err(format!("metadata.{field}"), format!("{n:?} is not a valid name: use lowercase letters, digits, '-' and '.'"));
                        }
                    }
                }
            }
        }
        let s = &wf.spec;
        unsupported(
            &mut self.errors,
            "spec",
            &[
                ("parallelism", &s.parallelism),
                ("workflowTemplateRef", &s.workflow_template_ref),
                ("volumeClaimTemplates", &s.volume_claim_templates),
                ("hooks", &s.hooks),
                ("synchronization", &s.synchronization),
                ("templateDefaults", &s.template_defaults),
                ("suspend", &s.suspend),
                ("shutdown", &s.shutdown),
                ("retryStrategy", &s.retry_strategy),
            ],
            "",
        );
        if let Some(a) = &s.arguments {
            unsupported(
                &mut self.errors,
                "spec.arguments",
                &[("artifacts", &a.artifacts)],
                " (pass artifacts between tasks with `from`)",
            );
            let mut seen = BTreeSet::new();
            for (i, p) in a.parameters.iter().enumerate() {
                let path = format!("spec.arguments.parameters[{i}]");
                self.param_common(&path, p);
                if !seen.insert(p.name.as_str()) {
                    self.err(
                        format!("{path}.name"),
                        format!("duplicate parameter {:?}", p.name),
                    );
                }
                if p.value_from.is_some() {
                    self.err(
                        format!("{path}.valueFrom"),
                        "workflow arguments take a `value`",
                    );
                }
                if let (Some(v), Some(allowed)) = (&p.value, &p.enum_values) {
                    if !allowed.contains(v) {
                        self.err(
                            format!("{path}.value"),
                            format!(
                                "{:?} is not one of the allowed values {:?}",
                                v.0,
                                allowed.iter().map(|a| a.0.as_str()).collect::<Vec<_>>()
                            ),
                        );
                    }
                }
            }
        }
        if let Some(d) = &s.active_deadline_seconds {
            if let Err(e) = positive_seconds(d) {
                self.err("spec.activeDeadlineSeconds", e);
            }
        }
        if s.templates.is_empty() {
            self.err("spec.templates", "a workflow needs at least one template");
        }
        let mut names = BTreeSet::new();
        for (i, t) in s.templates.iter().enumerate() {
            if t.name.is_empty() {
                self.err(format!("spec.templates[{i}].name"), "must not be empty");
            } else if !names.insert(t.name.as_str()) {
                self.err(
                    format!("spec.templates[{i}].name"),
                    format!("duplicate template name {:?}", t.name),
                );
            }
        }
        match &s.entrypoint {
            None => self.err(
                "spec.entrypoint",
                "missing: name the template to start with (e.g. `entrypoint: main`)",
            ),
            Some(e) if wf.template(e).is_none() => self.err(
                "spec.entrypoint",
                format!("no template named {e:?}{}", self.known_templates()),
            ),
            Some(_) => {}
        }
        if let Some(e) = &s.on_exit {
            if wf.template(e).is_none() {
                self.err(
                    "spec.onExit",
                    format!("no template named {e:?}{}", self.known_templates()),
                );
            }
        }
        for (i, t) in s.templates.iter().enumerate() {
            self.template(i, t);
        }
        self.recursion();
    }

    fn known_templates(&self) -> String {
        let names: Vec<&str> = self
            .wf
            .spec
            .templates
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        if names.is_empty() {
            String::new()
        } else {
            format!(" (templates: {})", names.join(", "))
        }
    }

    fn param_common(&mut self, path: &str, p: &Parameter) {
        if p.name.is_empty() {
            self.err(format!("{path}.name"), "must not be empty");
        }
        unsupported(
            &mut self.errors,
            path,
            &[("globalName", &p.global_name)],
            "",
        );
        if let Some(vf) = &p.value_from {
            unsupported(
                &mut self.errors,
                &format!("{path}.valueFrom"),
                &[
                    ("jsonPath", &vf.json_path),
                    ("jqFilter", &vf.jq_filter),
                    ("configMapKeyRef", &vf.config_map_key_ref),
                    ("expression", &vf.expression),
                    ("supplied", &vf.supplied),
                    ("event", &vf.event),
                ],
                " (use `path` for a step's output file or `parameter` for a DAG's output)",
            );
        }
    }

    fn artifact_common(&mut self, path: &str, a: &Artifact) {
        if a.name.is_empty() {
            self.err(format!("{path}.name"), "must not be empty");
        }
        unsupported(
            &mut self.errors,
            path,
            &[
                ("s3", &a.s3),
                ("gcs", &a.gcs),
                ("http", &a.http),
                ("git", &a.git),
                ("raw", &a.raw),
                ("artifactory", &a.artifactory),
                ("hdfs", &a.hdfs),
                ("oss", &a.oss),
                ("azure", &a.azure),
                ("subPath", &a.sub_path),
                ("globalName", &a.global_name),
            ],
            " (artifacts pass between tasks with `from` and live in gpuctl's artifact store)",
        );
    }

    fn check_str(&mut self, path: &str, s: &str, ctx: VarCtx<'_>) {
        if !s.contains("{{") && !s.contains("}}") {
            return;
        }
        if let Err((_, e)) = segments(s) {
            self.err(path, e);
            return;
        }
        for v in var_names(s) {
            if let Err(e) = self.check_var(v, ctx) {
                self.err(path, e);
            }
        }
    }

    fn check_var(&self, v: &str, ctx: VarCtx<'_>) -> Result<(), String> {
        let parts: Vec<&str> = v.split('.').collect();
        let wf = self.wf;
        let here = if ctx.leaf {
            "in a container or script"
        } else {
            "here"
        };
        match parts.as_slice() {
            ["workflow", "name" | "status" | "uid" | "namespace"] => Ok(()),
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
            ["tasks", t, rest @ ..] => {
                let Some((tasks, allowed, me)) = ctx.dag else {
                    return Err(format!("`{{{{{v}}}}}`: only a DAG task's arguments, `when` and `withParam` (or a DAG's outputs) can refer to tasks"));
                };
                let Some(idx) = tasks.iter().position(|x| x.name == *t) else {
                    return Err(format!("`{{{{{v}}}}}`: unknown task {t:?}"));
                };
                if let (Some(allowed), Some(me)) = (allowed, me) {
                    if !allowed.contains(&idx) {
                        return Err(format!("`{{{{{v}}}}}`: task {t:?} is not a dependency of {me:?}; add it to `depends` or `dependencies`"));
                    }
                }
                let task_tmpl = tasks[idx]
                    .template
                    .as_deref()
                    .and_then(|n| wf.template(n))
                    .map(|(_, t)| t);
                match rest {
                    ["status"] | ["exitCode"] | ["outputs", "result"] | ["outputs", "parameters"] => Ok(()),
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
                    _ => Err(format!("`{{{{{v}}}}}`: unknown task variable (use tasks.{t}.outputs.parameters.NAME, tasks.{t}.outputs.result, tasks.{t}.outputs.artifacts.NAME or tasks.{t}.status)")),
                }
            }
            _ => Err(format!(
                "unknown variable `{{{{{v}}}}}` {here} (known: inputs.parameters.*, inputs.artifacts.*, workflow.name, workflow.parameters.*, workflow.status, tasks.*, item)"
            )),
        }
    }

    fn template(&mut self, i: usize, t: &'a Template) {
        let p = format!("spec.templates[{i}]");
        unsupported(
            &mut self.errors,
            &p,
            &[
                ("steps", &t.steps),
                ("resource", &t.resource),
                ("suspend", &t.suspend),
                ("containerSet", &t.container_set),
                ("http", &t.http),
                ("data", &t.data),
                ("plugin", &t.plugin),
                ("parallelism", &t.parallelism),
                ("synchronization", &t.synchronization),
                ("sidecars", &t.sidecars),
                ("initContainers", &t.init_containers),
                ("daemon", &t.daemon),
                ("timeout", &t.timeout),
                ("podSpecPatch", &t.pod_spec_patch),
            ],
            " (templates are `dag`, `container` or `script`)",
        );
        let kinds = [t.dag.is_some(), t.container.is_some(), t.script.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if kinds == 0 && t.steps.is_none() && t.resource.is_none() && t.suspend.is_none() {
            self.err(
                &p,
                format!(
                    "template {:?} has none of `dag`, `container`, `script`",
                    t.name
                ),
            );
        } else if kinds > 1 {
            self.err(
                &p,
                format!(
                    "template {:?} must have exactly one of `dag`, `container`, `script`",
                    t.name
                ),
            );
        }
        let leaf = t.dag.is_none();
        let ctx = VarCtx {
            tmpl: t,
            dag: None,
            item: false,
            leaf,
            artifact: false,
        };
        // inputs
        let mut seen = BTreeSet::new();
        for (j, ip) in t.input_parameters().iter().enumerate() {
            let pp = format!("{p}.inputs.parameters[{j}]");
            self.param_common(&pp, ip);
            if !seen.insert(ip.name.as_str()) {
                self.err(
                    format!("{pp}.name"),
                    format!("duplicate input parameter {:?}", ip.name),
                );
            }
            if ip.value_from.is_some() {
                self.err(
                    format!("{pp}.valueFrom"),
                    "input parameters take `value` or `default`; use `valueFrom` in outputs",
                );
            }
        }
        let mut seen = BTreeSet::new();
        for (j, a) in t.input_artifacts().iter().enumerate() {
            let ap = format!("{p}.inputs.artifacts[{j}]");
            self.artifact_common(&ap, a);
            if !seen.insert(a.name.as_str()) {
                self.err(
                    format!("{ap}.name"),
                    format!("duplicate input artifact {:?}", a.name),
                );
            }
            if leaf && a.path.is_none() {
                self.err(
                    format!("{ap}.path"),
                    "missing: where the step expects the artifact (e.g. /tmp/model)",
                );
            }
            if a.from.is_some() {
                self.err(
                    format!("{ap}.from"),
                    "pass `from` in the task's `arguments.artifacts`",
                );
            }
        }
        // outputs
        let mut seen = BTreeSet::new();
        for (j, op) in t.output_parameters().iter().enumerate() {
            let pp = format!("{p}.outputs.parameters[{j}]");
            self.param_common(&pp, op);
            if !seen.insert(op.name.as_str()) {
                self.err(
                    format!("{pp}.name"),
                    format!("duplicate output parameter {:?}", op.name),
                );
            }
            let vf = op.value_from.as_ref();
            let has_path = vf.is_some_and(|v| v.path.is_some());
            let has_param = vf.is_some_and(|v| v.parameter.is_some());
            if leaf {
                if has_param {
                    self.err(format!("{pp}.valueFrom.parameter"), "only a DAG's outputs take `valueFrom.parameter`; a step's take `valueFrom.path`");
                }
                if !has_path && op.value.is_none() {
                    self.err(
                        format!("{pp}.valueFrom"),
                        "missing `valueFrom.path`: the file the step writes the value to",
                    );
                }
                if let Some(v) = &op.value {
                    self.check_str(&format!("{pp}.value"), &v.0, ctx);
                }
            } else if has_path {
                self.err(format!("{pp}.valueFrom.path"), "a DAG has no files; use `valueFrom.parameter: \"{{tasks.TASK.outputs.parameters.NAME}}\"`");
            } else if !has_param && op.value.is_none() {
                self.err(format!("{pp}.valueFrom"), "missing `valueFrom.parameter`");
            }
        }
        let mut seen = BTreeSet::new();
        for (j, a) in t.output_artifacts().iter().enumerate() {
            let ap = format!("{p}.outputs.artifacts[{j}]");
            self.artifact_common(&ap, a);
            if !seen.insert(a.name.as_str()) {
                self.err(
                    format!("{ap}.name"),
                    format!("duplicate output artifact {:?}", a.name),
                );
            }
            if leaf {
                if a.path.is_none() {
                    self.err(
                        format!("{ap}.path"),
                        "missing: the file or folder the step writes",
                    );
                }
                if a.from.is_some() {
                    self.err(
                        format!("{ap}.from"),
                        "a step's output artifact takes a `path`",
                    );
                }
            } else if a.from.is_none() {
                self.err(format!("{ap}.from"), "missing: a DAG's output artifact comes `from: \"{{tasks.TASK.outputs.artifacts.NAME}}\"`");
            }
        }
        if let Some(c) = &t.container {
            let cp = format!("{p}.container");
            unsupported(
                &mut self.errors,
                &cp,
                &[
                    ("envFrom", &c.env_from),
                    ("stdin", &c.stdin),
                    ("lifecycle", &c.lifecycle),
                ],
                "",
            );
            self.leaf_fields(
                &cp,
                &c.image,
                &c.command,
                &c.args,
                &c.env,
                &c.working_dir,
                &c.resources,
                ctx,
            );
            if c.command.is_empty() {
                self.err(format!("{cp}.command"), "missing: gpuctl runs the command in the node's environment, not the image's entrypoint; give e.g. [python, train.py]");
            }
        }
        if let Some(s) = &t.script {
            let sp = format!("{p}.script");
            unsupported(
                &mut self.errors,
                &sp,
                &[
                    ("envFrom", &s.env_from),
                    ("stdin", &s.stdin),
                    ("lifecycle", &s.lifecycle),
                ],
                "",
            );
            self.leaf_fields(
                &sp,
                &s.image,
                &s.command,
                &s.args,
                &s.env,
                &s.working_dir,
                &s.resources,
                ctx,
            );
            if s.command.is_empty() {
                self.err(
                    format!("{sp}.command"),
                    "missing: the interpreter that runs `source`, e.g. [python]",
                );
            }
            if s.source.trim().is_empty() {
                self.err(format!("{sp}.source"), "missing: the script to run");
            }
            self.check_str(&format!("{sp}.source"), &s.source, ctx);
        }
        if let Some(r) = &t.retry_strategy {
            let rp = format!("{p}.retryStrategy");
            unsupported(
                &mut self.errors,
                &rp,
                &[("affinity", &r.affinity), ("expression", &r.expression)],
                "",
            );
            match r.limit.as_ref().map(|l| (l, l.as_int())) {
                None => self.err(format!("{rp}.limit"), format!("missing: gpuctl does not retry forever; give a limit (at most {MAX_RETRY_LIMIT})")),
                Some((l, None)) => self.err(format!("{rp}.limit"), format!("expected a whole number, got {l}")),
                Some((_, Some(n))) if n < 0 => self.err(format!("{rp}.limit"), format!("must be zero or more, got {n}")),
                Some((_, Some(n))) if n > MAX_RETRY_LIMIT => self.err(format!("{rp}.limit"), format!("{n} retries is absurd (limit {MAX_RETRY_LIMIT})")),
                Some(_) => {}
            }
            if let Some(b) = &r.backoff {
                let bp = format!("{rp}.backoff");
                unsupported(
                    &mut self.errors,
                    &bp,
                    &[("cap", &b.cap)],
                    " (use maxDuration)",
                );
                for (name, val) in [("duration", &b.duration), ("maxDuration", &b.max_duration)] {
                    if let Some(d) = val {
                        if let Err(e) = parse_duration_ms(&d.0) {
                            self.err(format!("{bp}.{name}"), e);
                        }
                    }
                }
                if let Some(f) = &b.factor {
                    match f.as_int() {
                        Some(n) if (1..=100).contains(&n) => {}
                        _ => self.err(
                            format!("{bp}.factor"),
                            format!("expected a whole number from 1 to 100, got {f}"),
                        ),
                    }
                }
            }
        }
        if let Some(d) = &t.active_deadline_seconds {
            if let Err(e) = positive_seconds(d) {
                self.err(format!("{p}.activeDeadlineSeconds"), e);
            }
        }
        if let Some(m) = &t.memoize {
            let mp = format!("{p}.memoize");
            if !leaf {
                self.err(
                    &mp,
                    "memoize is supported on container and script templates only",
                );
            }
            if m.key.trim().is_empty() {
                self.err(format!("{mp}.key"), "must not be empty");
            }
            self.check_str(&format!("{mp}.key"), &m.key, ctx);
            if let Some(a) = &m.max_age {
                if let Err(e) = parse_duration_ms(a) {
                    self.err(format!("{mp}.maxAge"), e);
                }
            }
        }
        if let Some(d) = &t.dag {
            self.dag(&p, t, d);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn leaf_fields(
        &mut self,
        p: &str,
        image: &Option<String>,
        command: &[String],
        args: &[String],
        env: &[crate::spec::EnvVar],
        working_dir: &Option<String>,
        resources: &Option<crate::spec::ResourceRequirements>,
        ctx: VarCtx<'_>,
    ) {
        if let Some(i) = image {
            self.check_str(&format!("{p}.image"), i, ctx);
        }
        for (j, c) in command.iter().enumerate() {
            self.check_str(&format!("{p}.command[{j}]"), c, ctx);
        }
        for (j, a) in args.iter().enumerate() {
            self.check_str(&format!("{p}.args[{j}]"), a, ctx);
        }
        let mut seen = BTreeSet::new();
        for (j, e) in env.iter().enumerate() {
            let ep = format!("{p}.env[{j}]");
            if e.name.is_empty() || e.name.contains('=') || e.name.contains('\0') {
                self.err(
                    format!("{ep}.name"),
                    format!("invalid variable name {:?}", e.name),
                );
            } else if !seen.insert(e.name.as_str()) {
                self.err(
                    format!("{ep}.name"),
                    format!("duplicate variable {:?}", e.name),
                );
            }
            unsupported(
                &mut self.errors,
                &ep,
                &[("valueFrom", &e.value_from)],
                " (use `value`)",
            );
            if let Some(v) = &e.value {
                self.check_str(&format!("{ep}.value"), &v.0, ctx);
            }
        }
        if let Some(w) = working_dir {
            self.check_str(&format!("{p}.workingDir"), w, ctx);
        }
        if let Some(r) = resources {
            for (name, list) in [("limits", &r.limits), ("requests", &r.requests)] {
                if let Some(g) = list.as_ref().and_then(|l| l.gpu.as_ref()) {
                    if let Err(e) = parse_gpus(&g.0) {
                        self.err(format!("{p}.resources.{name}.nvidia.com/gpu"), e);
                    }
                }
            }
        }
    }

    fn dag(&mut self, p: &str, t: &'a Template, d: &'a crate::spec::DagTemplate) {
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
        let index: BTreeMap<&str, usize> = d
            .tasks
            .iter()
            .enumerate()
            .rev()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let names_list = || {
            d.tasks
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Per-task structure first, so later checks can rely on the graph.
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); d.tasks.len()];
        let mut seen = BTreeSet::new();
        for (j, task) in d.tasks.iter().enumerate() {
            let tp = format!("{dp}.tasks[{j}]");
            if !valid_task_name(&task.name) {
                self.err(format!("{tp}.name"), format!("{:?} is not a valid task name: use letters, digits, '-' and '_', starting with a letter or digit", task.name));
            } else if !seen.insert(task.name.as_str()) {
                self.err(
                    format!("{tp}.name"),
                    format!("duplicate task name {:?}", task.name),
                );
            }
            unsupported(
                &mut self.errors,
                &tp,
                &[
                    ("templateRef", &task.template_ref),
                    ("withSequence", &task.with_sequence),
                    ("onExit", &task.on_exit),
                    ("hooks", &task.hooks),
                    ("inline", &task.inline),
                ],
                "",
            );
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
            if task.dependencies.is_some() && task.depends.is_some() {
                self.err(
                    format!("{tp}.depends"),
                    "use either `depends` or `dependencies`, not both",
                );
                continue;
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
        if let Some(target) = &d.target {
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
            return;
        }
        let ancestors: Vec<BTreeSet<usize>> =
            (0..d.tasks.len()).map(|j| ancestors_of(j, &deps)).collect();
        for (j, task) in d.tasks.iter().enumerate() {
            let tp = format!("{dp}.tasks[{j}]");
            let item = task.with_items.is_some() || task.with_param.is_some();
            let ctx = VarCtx {
                tmpl: t,
                dag: Some((&d.tasks, Some(&ancestors[j]), Some(&task.name))),
                item,
                leaf: false,
                artifact: false,
            };
            if let Some(w) = &task.when {
                self.check_str(&format!("{tp}.when"), w, ctx);
                // Syntax check with each variable replaced by a plain word.
                if let Ok(segs) = segments(w) {
                    let probe: String = segs
                        .iter()
                        .map(|s| match s {
                            crate::vars::Segment::Text(t) => t.to_string(),
                            crate::vars::Segment::Var(_) => "x".to_string(),
                        })
                        .collect();
                    if let Err(e) = parse_when(&probe) {
                        self.err(format!("{tp}.when"), format!("syntax error in {w:?} {e}"));
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
                match &a.from {
                    None => self.err(
                        format!("{ap}.from"),
                        "missing: e.g. `from: \"{{tasks.train.outputs.artifacts.model}}\"`",
                    ),
                    Some(f) => {
                        if crate::vars::sole_var(f).is_none() && segments(f).is_ok() {
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
            // Required inputs of the called template must be supplied.
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
                    if !given && ia.optional != Some(true) {
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
        // A DAG's outputs may name any of its tasks.
        let ctx = VarCtx {
            tmpl: t,
            dag: Some((&d.tasks, None, None)),
            item: false,
            leaf: false,
            artifact: false,
        };
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

    /// A DAG template that calls itself (directly or through others) needs a
    /// task with `when` on the way, or it would nest forever.
    fn recursion(&mut self) {
        let tpls = &self.wf.spec.templates;
        // edges[i] = (task index, callee template index)
        let edges: Vec<Vec<(usize, usize)>> = tpls
            .iter()
            .map(|t| {
                t.dag.as_ref().map_or(Vec::new(), |d| {
                    d.tasks
                        .iter()
                        .enumerate()
                        .filter_map(|(j, task)| {
                            let (k, callee) = self.wf.template(task.template.as_deref()?)?;
                            callee.dag.is_some().then_some((j, k))
                        })
                        .collect()
                })
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
                            tpls[ti]
                                .dag
                                .as_ref()
                                .is_some_and(|d| d.tasks[tj].when.is_some())
                        });
                        let key: BTreeSet<usize> = cycle.iter().map(|c| c.0).collect();
                        if !has_base && reported.insert(key) {
                            let mut names: Vec<&str> = cycle
                                .iter()
                                .map(|&(ti, _)| tpls[ti].name.as_str())
                                .collect();
                            names.push(&tpls[start].name);
                            self.err(
                                format!("spec.templates[{node}].dag.tasks[{task}].template"),
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

/// GPUs from `nvidia.com/gpu`: whole GPUs or a share of one.
pub fn parse_gpus(s: &str) -> Result<f64, String> {
    let g: f64 = match s.trim().strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().map(|m| m / 1000.0),
        None => s.trim().parse(),
    }
    .map_err(|_| format!("invalid GPU count {s:?} (expected e.g. 1, 2 or 0.5)"))?;
    if !g.is_finite() || g < 0.0 {
        return Err(format!("must be zero or more, got {s}"));
    }
    if g > MAX_GPUS_PER_TASK {
        return Err(format!(
            "{g} GPUs for one step is more than any node has (limit {MAX_GPUS_PER_TASK})"
        ));
    }
    if g > 1.0 && g.fract() != 0.0 {
        return Err(format!(
            "{g} is neither whole GPUs nor a share of one GPU (use e.g. 2 or 0.5)"
        ));
    }
    Ok(g)
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
