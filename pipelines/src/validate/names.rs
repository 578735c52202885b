//! Names and the references between them: the workflow's name, template
//! names (present and unique), and the templates `entrypoint` and `onExit`
//! name.

use std::collections::BTreeSet;

use super::checker::Validator;

impl Validator<'_> {
    /// `metadata.name` or `metadata.generateName`.
    pub(super) fn metadata(&mut self) {
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
    }

    /// Every template has a name of its own.
    pub(super) fn template_names(&mut self) {
        let s = &self.wf.spec;
        // With `workflowTemplateRef` the templates come from the template.
        if s.templates.is_empty() && s.workflow_template_ref.is_none() {
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
    }

    /// `entrypoint` and `onExit` name templates that exist.
    pub(super) fn entry_points(&mut self) {
        let wf = self.wf;
        let s = &wf.spec;
        // A workflowTemplateRef brings the entrypoint and the templates it
        // may name; a WorkflowTemplate may leave the entrypoint to the
        // workflow that uses it. Both are checked once resolved.
        let elsewhere = s.workflow_template_ref.is_some();
        match &s.entrypoint {
            None if elsewhere || wf.kind != "Workflow" => {}
            Some(_) if elsewhere => {}
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
            if !elsewhere && wf.template(e).is_none() {
                self.err(
                    "spec.onExit",
                    format!("no template named {e:?}{}", self.known_templates()),
                );
            }
        }
    }
}
