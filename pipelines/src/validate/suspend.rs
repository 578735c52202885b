//! `suspend` templates: a duration Argo would accept, and no outputs (Argo's
//! `valueFrom.supplied`, values given at resume, is not supported yet).

use super::checker::{Validator, VarCtx};
use crate::spec::{parse_duration_ms, SuspendTemplate, Template};

impl Validator<'_> {
    pub(super) fn suspend(&mut self, p: &str, t: &Template, s: &SuspendTemplate, ctx: VarCtx<'_>) {
        if let Some(d) = &s.duration {
            let path = format!("{p}.suspend.duration");
            if d.0.contains("{{") {
                self.check_str(&path, &d.0, ctx);
            } else if let Err(e) = parse_duration_ms(&d.0) {
                self.err(path, e);
            }
        }
        if !t.output_parameters().is_empty() || !t.output_artifacts().is_empty() {
            self.err(
                format!("{p}.outputs"),
                "outputs of a suspend template (values supplied at resume) are not supported yet by gpuctl; see README",
            );
        }
    }
}
