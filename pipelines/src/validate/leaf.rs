//! Leaf templates (`container` and `script`): the command, env and working
//! directory, what they may refer to, and `memoize`.

use std::collections::BTreeSet;

use super::checker::{unsupported, Validator, VarCtx};
use crate::spec::{parse_duration_ms, Container, EnvVar, Memoize, ResourceRequirements, Script};

impl Validator<'_> {
    /// A `container` template's fields; the command must be given.
    pub(super) fn container(&mut self, p: &str, c: &Container, ctx: VarCtx<'_>) {
        let cp = format!("{p}.container");
        unsupported(
            &mut self.errors,
            &cp,
            &[
                ("envFrom", &c.env_from),
                ("stdin", &c.stdin),
                ("lifecycle", &c.lifecycle),
                ("readinessProbe", &c.readiness_probe),
                ("livenessProbe", &c.liveness_probe),
                ("startupProbe", &c.startup_probe),
                ("volumeDevices", &c.volume_devices),
                ("terminationMessagePath", &c.termination_message_path),
                ("terminationMessagePolicy", &c.termination_message_policy),
                ("tty", &c.tty),
                ("stdinOnce", &c.stdin_once),
                ("restartPolicy", &c.restart_policy),
                ("resizePolicy", &c.resize_policy),
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
            self.err(format!("{cp}.command"), "missing: gpuctl runs the command (in the image on nodes with a container runtime, else in the node's environment), not the image's entrypoint; give e.g. [python, train.py]");
        }
    }

    /// A `script` template's fields; the interpreter and source must be given.
    pub(super) fn script(&mut self, p: &str, s: &Script, ctx: VarCtx<'_>) {
        let sp = format!("{p}.script");
        unsupported(
            &mut self.errors,
            &sp,
            &[
                ("envFrom", &s.env_from),
                ("stdin", &s.stdin),
                ("lifecycle", &s.lifecycle),
                ("readinessProbe", &s.readiness_probe),
                ("livenessProbe", &s.liveness_probe),
                ("startupProbe", &s.startup_probe),
                ("volumeDevices", &s.volume_devices),
                ("terminationMessagePath", &s.termination_message_path),
                ("terminationMessagePolicy", &s.termination_message_policy),
                ("tty", &s.tty),
                ("stdinOnce", &s.stdin_once),
                ("restartPolicy", &s.restart_policy),
                ("resizePolicy", &s.resize_policy),
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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn leaf_fields(
        &mut self,
        p: &str,
        image: &Option<String>,
        command: &[String],
        args: &[String],
        env: &[EnvVar],
        working_dir: &Option<String>,
        resources: &Option<ResourceRequirements>,
        ctx: VarCtx<'_>,
    ) {
        if let Some(i) = image {
            self.check_str(&format!("{p}.image"), i, ctx);
            // One without `{{...}}` must be an image reference now.
            if !i.contains("{{") {
                if let Err(why) = gpuctl_common::api::check_image(i) {
                    self.err(format!("{p}.image"), why);
                }
            }
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
            unsupported(&mut self.errors, &ep, &[("valueFrom", &e.value_from)], "");
            if let Some(v) = &e.value {
                self.check_str(&format!("{ep}.value"), &v.0, ctx);
            }
        }
        if let Some(w) = working_dir {
            self.check_str(&format!("{p}.workingDir"), w, ctx);
        }
        if let Some(r) = resources {
            self.resources(p, r);
        }
    }

    /// `memoize`: leaf templates only, a key, and a `maxAge` that parses.
    pub(super) fn memoize(&mut self, p: &str, m: &Memoize, leaf: bool, ctx: VarCtx<'_>) {
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
}
