//! A task's or step's `templateRef`: what can be checked before the
//! referenced template is looked up (at submit, by [`crate::resolve`]).

use super::checker::Validator;
use crate::spec::TemplateRef;

impl Validator<'_> {
    /// Both names are given.
    pub(super) fn template_ref(&mut self, tp: &str, r: &TemplateRef) {
        if r.name.is_empty() {
            self.err(
                format!("{tp}.templateRef.name"),
                format!("missing: the {} to take the template from", r.kind()),
            );
        }
        if r.template.is_empty() {
            self.err(
                format!("{tp}.templateRef.template"),
                format!("missing: the template of {} {:?} to run", r.kind(), r.name),
            );
        }
    }
}
