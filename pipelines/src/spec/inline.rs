//! `inline` templates: a DAG task or step that writes its template in place
//! instead of naming one. Before validation and before a run, each is
//! hoisted into `spec.templates` under a name no template of the user's can
//! have (`PARENT/TASK`: Argo's template names have no `/`), and the task
//! names it; everything after sees ordinary templates. Errors found in a
//! hoisted template are reported at its place in the document
//! (`spec.templates[0].dag.tasks[1].inline...`).

use gpuctl_common::api::FieldError;

use super::template::Template;
use super::workflow::Workflow;

/// Hoisting too deep means inline templates nest without end.
const MAX_HOISTED: usize = 10_000;

/// `wf` with every inline template hoisted, and for each hoisted template
/// (in order, after the document's own) the path of the `inline` it came
/// from; the third part lists the inline templates that are no template
/// (an unknown field, a wrong type), at their place. A task that names a
/// `template` as well keeps its `inline` (for validation to refuse).
pub fn hoist_inline(wf: &Workflow) -> (Workflow, Vec<String>, Vec<FieldError>) {
    let mut out = wf.clone();
    let mut origins: Vec<String> = Vec::new();
    let mut errors = Vec::new();
    let own = out.spec.templates.len();
    let mut i = 0;
    while i < out.spec.templates.len() && origins.len() < MAX_HOISTED {
        let base = if i < own {
            format!("spec.templates[{i}]")
        } else {
            origins[i - own].clone()
        };
        let parent = out.spec.templates[i].name.clone();
        let mut hoisted = Vec::new();
        let t = &mut out.spec.templates[i];
        let dag = t.dag.as_mut().map(|d| {
            d.tasks
                .iter_mut()
                .enumerate()
                .map(|(j, task)| (format!("{base}.dag.tasks[{j}]"), task))
                .collect::<Vec<_>>()
        });
        let steps = t.steps.as_mut().map(|groups| {
            groups
                .iter_mut()
                .enumerate()
                .flat_map(|(g, steps)| {
                    let base = base.clone();
                    steps
                        .iter_mut()
                        .enumerate()
                        .map(move |(j, s)| (format!("{base}.steps[{g}][{j}]"), s))
                })
                .collect::<Vec<_>>()
        });
        for (path, task) in dag.into_iter().chain(steps).flatten() {
            if task.template.is_some() {
                continue;
            }
            let Some(inline) = task.inline.take() else {
                continue;
            };
            let mut tmpl: Template = match serde_path_to_error::deserialize(inline) {
                Ok(t) => t,
                Err(e) => {
                    let at = e.path().to_string();
                    let at = if at == "." || at.is_empty() {
                        format!("{path}.inline")
                    } else {
                        format!("{path}.inline.{at}")
                    };
                    errors.push(FieldError::new(at, e.into_inner().to_string()));
                    continue;
                }
            };
            tmpl.name = format!("{parent}/{}", task.name);
            task.template = Some(tmpl.name.clone());
            hoisted.push((format!("{path}.inline"), tmpl));
        }
        for (path, tmpl) in hoisted {
            origins.push(path);
            out.spec.templates.push(tmpl);
        }
        i += 1;
    }
    (out, origins, errors)
}

/// `path` (of an error in the hoisted workflow) at its place in the
/// document: `spec.templates[N]...` of a hoisted template becomes the path
/// of the `inline` it came from.
pub fn unhoisted_path(path: &str, own: usize, origins: &[String]) -> String {
    let Some(rest) = path.strip_prefix("spec.templates[") else {
        return path.to_string();
    };
    let Some((n, tail)) = rest.split_once(']') else {
        return path.to_string();
    };
    match n.parse::<usize>() {
        Ok(n) if n >= own => match origins.get(n - own) {
            Some(origin) => {
                // A hoisted template's `name` is gpuctl's, not the user's.
                format!("{origin}{tail}")
            }
            None => path.to_string(),
        },
        _ => path.to_string(),
    }
}
