//! The launch spec of a `Pod` node: the leaf template's command, env,
//! resources and output locations with every `{{...}}` substituted.

use std::collections::BTreeMap;

use gpuctl_common::artifact::ArtifactKey;

use super::state::Run;
use super::step::{OutputArtifactSpec, OutputParameterSpec, StepResources, StepToLaunch};
use crate::spec::{parse_duration_ms, ResourceList, ResourceRequirements, Template};
use crate::validate::parse_gpus;
use crate::vars::substitute;

impl Run {
    /// The launch spec of pod `id`, with every `{{...}}` substituted.
    pub(super) fn build_step(&self, id: &str) -> Result<StepToLaunch, String> {
        let n = self.nodes.get(id).ok_or("no such node")?;
        let tname = n.template.clone().unwrap_or_default();
        let t = self.template(&tname).ok_or("template not found")?;
        let scope = self.leaf_scope(n);
        let sub = |s: &str| substitute(s, &scope);
        let subs = |v: &[String]| v.iter().map(|s| sub(s)).collect::<Result<Vec<_>, _>>();
        let (image, command, args, env, working_dir, resources, source) =
            match (&t.container, &t.script) {
                (Some(c), _) => (
                    &c.image,
                    &c.command,
                    &c.args,
                    &c.env,
                    &c.working_dir,
                    &c.resources,
                    None,
                ),
                (None, Some(s)) => (
                    &s.image,
                    &s.command,
                    &s.args,
                    &s.env,
                    &s.working_dir,
                    &s.resources,
                    Some(&s.source),
                ),
                _ => return Err(format!("template {tname:?} is not a container or script")),
            };
        let mut env_out = BTreeMap::new();
        for e in env {
            let v = e.value.as_ref().map(|v| v.0.as_str()).unwrap_or("");
            env_out.insert(e.name.clone(), sub(v)?);
        }
        let res = resources
            .as_ref()
            .map(step_resources)
            .transpose()?
            .unwrap_or_default();
        let memoize_key = t.memoize.as_ref().map(|m| sub(&m.key)).transpose()?;
        let mut output_parameters = Vec::new();
        for p in t.output_parameters() {
            if let Some(path) = p.value_from.as_ref().and_then(|v| v.path.as_deref()) {
                output_parameters.push(OutputParameterSpec {
                    name: p.name.clone(),
                    path: sub(path)?,
                });
            }
        }
        let mut output_artifacts = Vec::new();
        for a in t.output_artifacts() {
            output_artifacts.push(OutputArtifactSpec {
                name: a.name.clone(),
                path: sub(a.path.as_deref().unwrap_or_default())?,
                optional: a.optional == Some(true),
                key: ArtifactKey {
                    workflow: self.name.clone(),
                    step: id.to_string(),
                    name: a.name.clone(),
                },
            });
        }
        Ok(StepToLaunch {
            id: id.to_string(),
            workflow: self.name.clone(),
            display_name: n.display_name.clone(),
            template: tname.clone(),
            image: image.as_deref().map(sub).transpose()?,
            command: subs(command)?,
            args: subs(args)?,
            env: env_out,
            working_dir: working_dir.as_deref().map(sub).transpose()?,
            script_source: source.map(|s| sub(s)).transpose()?,
            resources: res,
            attempt: n.retries,
            memoize_key,
            active_deadline_seconds: deadline_seconds(t),
            input_artifacts: n.inputs.artifacts.values().cloned().collect(),
            output_parameters,
            output_artifacts,
            capture_result: t.script.is_some() || self.reads_results,
        })
    }
}

/// A leaf's deadline in seconds: the sooner of `activeDeadlineSeconds` and
/// `timeout` (rounded up to a whole second).
fn deadline_seconds(t: &Template) -> Option<u64> {
    let ads = t
        .active_deadline_seconds
        .as_ref()
        .and_then(|d| d.as_int())
        .map(|s| s as u64);
    let timeout = t
        .timeout
        .as_ref()
        .and_then(|d| parse_duration_ms(&d.0).ok())
        .map(|ms| ms.div_ceil(1000).max(1));
    match (ads, timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a step needs: GPUs from `limits` (else `requests`), CPU and memory
/// from `requests` (else `limits`). The one reading of a leaf's resources:
/// the scheduler's checks and the example tests use it too.
pub fn step_resources(r: &ResourceRequirements) -> Result<StepResources, String> {
    let mut res = StepResources::default();
    let pick = |f: &dyn Fn(&ResourceList) -> bool| {
        r.requests
            .as_ref()
            .filter(|l| f(l))
            .or(r.limits.as_ref().filter(|l| f(l)))
    };
    if let Some(l) = r
        .limits
        .as_ref()
        .filter(|l| l.gpu.is_some())
        .or(r.requests.as_ref().filter(|l| l.gpu.is_some()))
    {
        res.gpus = parse_gpus(&l.gpu.as_ref().map(|g| g.0.clone()).unwrap_or_default())?;
    }
    res.cpu = pick(&|l| l.cpu.is_some()).and_then(|l| l.cpu);
    res.memory = pick(&|l| l.memory.is_some()).and_then(|l| l.memory);
    Ok(res)
}
