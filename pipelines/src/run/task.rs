//! Starting one task of a DAG: fan-out over `withItems`/`withParam` into a
//! `TaskGroup`, then for each instance the `when` check, argument
//! resolution against the task's scope, and the template's nodes.

use super::artifact_sources::{artifact_from_expression, raw_input, with_inputs};
use super::node::{InputArtifact, Node, NodeInputs, NodePhase, NodeType};
use super::scope::TaskScope;
use super::state::Run;
use crate::expr::eval_when;
use crate::spec::{AnyString, DagTask, Sequence, Template};
use crate::validate::MAX_FAN_OUT;
use crate::vars::{sole_var, substitute, Scope};

impl Run {
    /// Start task `task` of DAG `dag_id` (or a step of the step group
    /// `dag_id`): expand, check `when`, resolve arguments, and create its
    /// nodes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_task(
        &mut self,
        dag_id: &str,
        task_id: &str,
        task: &DagTask,
        scope: &TaskScope,
        depth: usize,
        exit_handler: bool,
        now_ms: u64,
    ) {
        let items = match fan_out_items(task, &scope.vars) {
            Ok(items) => items,
            Err(msg) => {
                let mut n = Node::new(task_id, &task.name, NodeType::Skipped, NodePhase::Error);
                n.template = task.template.clone();
                n.message = Some(msg);
                n.started_ms = Some(now_ms);
                n.finished_ms = Some(now_ms);
                n.exit_handler = exit_handler;
                self.add_task_node(dag_id, &task.name, n);
                return;
            }
        };
        let Some(items) = items else {
            let n = self.make_task_instance(
                task_id,
                &task.name,
                task,
                &scope.vars,
                scope,
                depth,
                exit_handler,
                now_ms,
            );
            if let Some(n) = n {
                self.add_task_node(dag_id, &task.name, n);
            } else {
                let d = self.node_mut(dag_id).expect("dag node");
                d.task_nodes.insert(task.name.clone(), task_id.to_string());
                d.children.push(task_id.to_string());
            }
            return;
        };
        self.start_task_group(
            dag_id,
            task_id,
            task,
            scope,
            &items,
            depth,
            exit_handler,
            now_ms,
        );
    }

    /// A fan-out task: a `TaskGroup` node with one instance per item, each
    /// with `{{item}}` (and `{{item.KEY}}` for a map) in reach.
    #[allow(clippy::too_many_arguments)]
    fn start_task_group(
        &mut self,
        dag_id: &str,
        task_id: &str,
        task: &DagTask,
        scope: &TaskScope,
        items: &[serde_json::Value],
        depth: usize,
        exit_handler: bool,
        now_ms: u64,
    ) {
        let mut group = Node::new(task_id, &task.name, NodeType::TaskGroup, NodePhase::Running);
        group.template = task.template.clone();
        group.started_ms = Some(now_ms);
        group.exit_handler = exit_handler;
        if items.is_empty() {
            group.phase = NodePhase::Skipped;
            group.message = Some("withItems/withParam expanded to no items".into());
            group.finished_ms = Some(now_ms);
        }
        self.add_task_node(dag_id, &task.name, group);
        for (i, item) in items.iter().enumerate() {
            let label = format!("{}({i}:{})", task.name, item_label(item));
            let child_id = format!("{task_id}({i}:{})", item_label(item));
            let mut vars = scope.vars.clone();
            insert_item(&mut vars, item);
            let n = self.make_task_instance(
                &child_id,
                &label,
                task,
                &vars,
                scope,
                depth,
                exit_handler,
                now_ms,
            );
            if let Some(n) = n {
                self.insert_node(n);
            }
            self.node_mut(task_id)
                .expect("group")
                .children
                .push(child_id);
        }
    }

    /// One instance of a task (the task itself or one fan-out item): a
    /// Skipped/Error node returned for the caller to insert, or `None` when
    /// the template's nodes were created under `id`.
    #[allow(clippy::too_many_arguments)]
    fn make_task_instance(
        &mut self,
        id: &str,
        display: &str,
        task: &DagTask,
        vars: &Scope,
        scope: &TaskScope,
        depth: usize,
        exit_handler: bool,
        now_ms: u64,
    ) -> Option<Node> {
        let done = |phase: NodePhase, msg: String| {
            let mut n = Node::new(id, display, NodeType::Skipped, phase);
            n.template = task.template.clone();
            n.message = Some(msg);
            n.started_ms = Some(now_ms);
            n.finished_ms = Some(now_ms);
            n.exit_handler = exit_handler;
            Some(n)
        };
        if let Some(w) = &task.when {
            if let Err((phase, msg)) = check_when(task, w, vars) {
                return done(phase, msg);
            }
        }
        let Some(callee) = task
            .template
            .as_deref()
            .and_then(|t| self.template(t))
            .cloned()
        else {
            return done(NodePhase::Error, "template not found".into());
        };
        let inputs = match task_inputs(&self.name, id, task, &callee, vars, scope) {
            Ok(inputs) => inputs,
            Err(msg) => return done(NodePhase::Error, msg),
        };
        let depth = if callee.is_composite() {
            depth + 1
        } else {
            depth
        };
        self.instantiate(id, display, &callee, inputs, depth, exit_handler, now_ms);
        None
    }
}

/// The items a task fans out over: `withItems` as written, or `withParam`
/// after substitution parsed as a JSON list; `None` for a task without
/// either. An error is why the task cannot start.
pub(super) fn fan_out_items(
    task: &DagTask,
    vars: &Scope,
) -> Result<Option<Vec<serde_json::Value>>, String> {
    if let Some(items) = &task.with_items {
        return Ok(Some(items.clone()));
    }
    if let Some(seq) = &task.with_sequence {
        return sequence_items(seq, vars).map(Some);
    }
    let Some(wp) = &task.with_param else {
        return Ok(None);
    };
    let text = substitute(wp, vars).map_err(|e| format!("withParam: {e}"))?;
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Array(v)) if v.len() <= MAX_FAN_OUT => Ok(Some(v)),
        Ok(serde_json::Value::Array(v)) => Err(format!(
            "withParam expanded to {} items, more than the limit of {MAX_FAN_OUT}",
            v.len()
        )),
        _ => Err(format!(
            "withParam value could not be parsed as a JSON list: {}",
            text.trim()
        )),
    }
}

/// A task's `when` condition `w` after substitution. `Err` carries the
/// phase the task instance ends in (Skipped when false, Error when the
/// condition cannot be evaluated) and why.
fn check_when(task: &DagTask, w: &str, vars: &Scope) -> Result<(), (NodePhase, String)> {
    let text = substitute(w, vars).map_err(|e| {
        (
            NodePhase::Error,
            format!("when {w:?} of task {:?}: {e}", task.name),
        )
    })?;
    match eval_when(&text) {
        Ok(true) => Ok(()),
        Ok(false) => Err((NodePhase::Skipped, format!("when '{text}' evaluated false"))),
        Err(e) => Err((
            NodePhase::Error,
            format!(
                "when {w:?} of task {:?} (after substitution: {text:?}): {e}",
                task.name
            ),
        )),
    }
}

/// The inputs of the template `callee` that a task instance calls: each
/// parameter from the task's argument (substituted) or the input's own
/// value or default, each artifact from the task's `from`. An error is the
/// first input that cannot be supplied.
fn task_inputs(
    workflow: &str,
    id: &str,
    task: &DagTask,
    callee: &Template,
    vars: &Scope,
    scope: &TaskScope,
) -> Result<NodeInputs, String> {
    let mut inputs = NodeInputs::default();
    for ip in callee.input_parameters() {
        let arg = task.parameters().iter().find(|a| a.name == ip.name);
        let v = match arg {
            Some(a) => {
                let raw = a.value.as_ref().map(|v| v.0.clone()).unwrap_or_default();
                let v = substitute(&raw, vars)
                    .map_err(|e| format!("argument {:?} of task {:?}: {e}", ip.name, task.name))?;
                Some(v)
            }
            None => ip
                .value
                .as_ref()
                .or(ip.default.as_ref())
                .map(|v| v.0.clone()),
        };
        match v {
            Some(v) => {
                inputs.parameters.insert(ip.name.clone(), v);
            }
            None => return Err(format!("inputs.parameters.{} was not supplied", ip.name)),
        }
    }
    for ia in callee.input_artifacts() {
        let arg = task.artifacts().iter().find(|a| a.name == ia.name);
        // The argument's `raw`, `fromExpression` or `from`; else the
        // template's own `raw`.
        let raw = match arg {
            Some(a) => raw_input(workflow, id, &ia.name, ia.path.as_ref(), a, vars),
            None => {
                let own = with_inputs(vars, &inputs.parameters);
                raw_input(workflow, id, &ia.name, ia.path.as_ref(), ia, &own)
            }
        };
        if let Some(r) = raw {
            inputs.artifacts.insert(ia.name.clone(), r?);
            continue;
        }
        let key =
            match arg.and_then(|a| a.from_expression.as_deref()) {
                Some(e) => Some(artifact_from_expression(e, vars, &scope.artifacts).map_err(
                    |e| format!("input artifact {:?} of task {:?}: {e}", ia.name, task.name),
                )?),
                None => arg
                    .and_then(|a| a.from.as_deref())
                    .and_then(sole_var)
                    .and_then(|v| scope.artifacts.get(v))
                    .cloned(),
            };
        match key {
            Some(k) => {
                inputs.artifacts.insert(
                    ia.name.clone(),
                    InputArtifact {
                        name: ia.name.clone(),
                        path: ia.path.clone(),
                        from: k,
                        raw: None,
                    },
                );
            }
            None if ia.optional == Some(true) || arg.is_some_and(|a| a.optional == Some(true)) => {}
            None => {
                return Err(format!(
                    "input artifact {:?} of task {:?}: unable to resolve {}",
                    ia.name,
                    task.name,
                    arg.and_then(|a| a.from.as_deref()).unwrap_or("(no from)")
                ))
            }
        }
    }
    Ok(inputs)
}

/// `{{item}}` text: strings as they are, everything else as JSON.
/// `{{item}}`, and `{{item.KEY}}` for a map.
pub(super) fn insert_item(vars: &mut Scope, item: &serde_json::Value) {
    vars.insert("item".into(), value_text(item));
    if let serde_json::Value::Object(m) = item {
        for (k, v) in m {
            vars.insert(format!("item.{k}"), value_text(v));
        }
    }
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The part of a fan-out child's name after the index, as Argo writes it:
/// `foo` for a scalar, `a:1,b:2` (keys sorted) for a map.
fn item_label(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let mut parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}:{}", value_text(v)))
                .collect();
            parts.sort();
            parts.join(",")
        }
        other => value_text(other),
    }
}

/// The items of a `withSequence`: each number as text in its `format`.
fn sequence_items(seq: &Sequence, vars: &Scope) -> Result<Vec<serde_json::Value>, String> {
    let num = |name: &str, v: &Option<AnyString>| -> Result<Option<i64>, String> {
        let Some(v) = v else { return Ok(None) };
        let text = substitute(&v.0, vars).map_err(|e| format!("withSequence.{name}: {e}"))?;
        text.trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| format!("withSequence.{name}: {text:?} is not a whole number"))
    };
    let start = num("start", &seq.start)?.unwrap_or(0);
    let numbers: Vec<i64> = match (num("count", &seq.count)?, num("end", &seq.end)?) {
        (Some(c), _) if c < 0 => return Err(format!("withSequence.count: {c} is negative")),
        (Some(c), _) if c as u64 > MAX_FAN_OUT as u64 => {
            return Err(format!(
                "withSequence.count: {c} is more than the limit of {MAX_FAN_OUT}"
            ))
        }
        (Some(c), _) => (0..c).map(|i| start + i).collect(),
        // As Argo: `end` is included, and a sequence counts down when it
        // ends below its start.
        (None, Some(e)) if e.abs_diff(start) >= MAX_FAN_OUT as u64 => {
            return Err(format!(
                "withSequence from {start} to {e} is more than the limit of {MAX_FAN_OUT} items"
            ))
        }
        (None, Some(e)) if e >= start => (start..=e).collect(),
        (None, Some(e)) => (e..=start).rev().collect(),
        (None, None) => return Err("withSequence needs `count` or `end`".into()),
    };
    let format = seq.format.as_deref().unwrap_or("%d");
    numbers
        .into_iter()
        .map(|n| format_sequence_item(format, n).map(serde_json::Value::String))
        .collect()
}

/// `n` written with a printf-style `format` as Argo's `withSequence` takes
/// it: text around one `%d`, `%Nd`, `%0Nd`, `%x`, `%X` or `%o` (and `%%`).
pub fn format_sequence_item(format: &str, n: i64) -> Result<String, String> {
    let bad = || format!("unsupported format {format:?}: use text with one %d, %03d, %x or %o");
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let mut used = false;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            out.push('%');
            continue;
        }
        let zero = chars.peek() == Some(&'0');
        let mut width = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(*d);
            chars.next();
        }
        let w: usize = if width.is_empty() {
            0
        } else {
            width.parse().map_err(|_| bad())?
        };
        if used || w > 64 {
            return Err(bad());
        }
        used = true;
        let text = match chars.next() {
            Some('d') => n.to_string(),
            Some('x') => format!("{n:x}"),
            Some('X') => format!("{n:X}"),
            Some('o') => format!("{n:o}"),
            _ => return Err(bad()),
        };
        let pad = if zero { '0' } else { ' ' };
        for _ in text.chars().count()..w {
            out.push(pad);
        }
        out.push_str(&text);
    }
    if !used {
        return Err(bad());
    }
    Ok(out)
}
