//! Parameters and artifacts: workflow arguments, template inputs and
//! outputs, and the fields they share. Argo sources we do not implement
//! (S3, Git, `jsonPath`, ...) are rejected by name.

use std::collections::BTreeSet;

use super::checker::{unsupported, Validator, VarCtx};
use crate::spec::{Artifact, Parameter, Template, WorkflowArguments};

impl Validator<'_> {
    /// `spec.arguments`: the workflow's parameters.
    pub(super) fn workflow_arguments(&mut self, a: &WorkflowArguments) {
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

    /// What every parameter needs, wherever it is declared.
    pub(super) fn param_common(&mut self, path: &str, p: &Parameter) {
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
                    ("supplied", &vf.supplied),
                    ("event", &vf.event),
                ],
                " (use `path` for a step's output file or `parameter` for a DAG's output)",
            );
        }
    }

    /// What every artifact needs, wherever it is declared.
    pub(super) fn artifact_common(&mut self, path: &str, a: &Artifact) {
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
                ("artifactory", &a.artifactory),
                ("hdfs", &a.hdfs),
                ("oss", &a.oss),
                ("azure", &a.azure),
                ("subPath", &a.sub_path),
                ("globalName", &a.global_name),
            ],
            " (artifacts pass between tasks with `from` and live in gpuctl's artifact store)",
        );
        let sources = [
            a.from.is_some(),
            a.raw.is_some(),
            a.from_expression.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            self.err(path, "give one of `from`, `fromExpression` and `raw`");
        }
        if let Some(e) = &a.from_expression {
            if let Err(err) = crate::expr::parse_expr(e) {
                self.err(
                    format!("{path}.fromExpression"),
                    format!("syntax error in expression {e:?} {err}"),
                );
            }
        }
    }

    /// A template's `inputs`.
    pub(super) fn template_inputs(&mut self, p: &str, t: &Template, ctx: VarCtx<'_>) {
        let leaf = !t.is_composite();
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
            if a.from.is_some() || a.from_expression.is_some() {
                self.err(
                    format!("{ap}.from"),
                    "pass `from` in the task's `arguments.artifacts`",
                );
            }
            if let Some(r) = &a.raw {
                self.check_str(&format!("{ap}.raw.data"), &r.data, ctx);
            }
        }
    }

    /// A template's `outputs`: a step's come from files, a DAG's from its
    /// tasks.
    pub(super) fn template_outputs(&mut self, p: &str, t: &Template, ctx: VarCtx<'_>) {
        let leaf = !t.is_composite();
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
            } else if !has_param && op.value.is_none() && vf.is_none_or(|v| v.expression.is_none())
            {
                self.err(format!("{pp}.valueFrom"), "missing `valueFrom.parameter`");
            }
            if leaf && vf.is_some_and(|v| v.expression.is_some()) {
                self.err(format!("{pp}.valueFrom.expression"), "not supported yet on a container or script: use `valueFrom.path`, or compute it in the DAG or steps template that calls the step");
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
            if a.raw.is_some() {
                self.err(
                    format!("{ap}.raw"),
                    "`raw` gives an input's content; an output artifact is written by a step",
                );
            }
            if leaf {
                if a.path.is_none() {
                    self.err(
                        format!("{ap}.path"),
                        "missing: the file or folder the step writes",
                    );
                }
                if a.from.is_some() || a.from_expression.is_some() {
                    self.err(
                        format!("{ap}.from"),
                        "a step's output artifact takes a `path`",
                    );
                }
            } else if a.from.is_none() && a.from_expression.is_none() {
                self.err(format!("{ap}.from"), "missing: a DAG's output artifact comes `from: \"{{tasks.TASK.outputs.artifacts.NAME}}\"`");
            }
        }
    }
}
