//! The calls the shell makes: which steps to launch (or complete from the
//! memoization cache), how a launched step ended, timers (deadlines and
//! retry backoff), and termination.

use super::node::{Node, NodeOutputs, NodePhase, NodeType};
use super::state::Run;
use super::step::{RunError, StepOutcome, StepPhase, StepToLaunch, Tick};
use crate::spec::{parse_duration_ms, Template};
use crate::store::{ArtifactKey, MemoCache, MemoEntry};
use crate::vars::substitute;

impl Run {
    /// The launch spec of a step, e.g. to launch again a running step whose
    /// job was lost in a failover. Does not change the run.
    pub fn step_spec(&self, id: &str) -> Option<StepToLaunch> {
        let n = self.nodes.get(id)?;
        (n.node_type == NodeType::Pod)
            .then(|| self.build_step(id).ok())
            .flatten()
    }

    /// Steps whose turn has come. Marks them Running: each is returned once.
    /// Steps whose `memoize` key hits a fresh entry of `cache` complete from
    /// it here without being returned.
    pub fn ready_steps(&mut self, now_ms: u64, cache: &mut dyn MemoCache) -> Vec<StepToLaunch> {
        self.apply_deadlines(now_ms);
        self.reconcile(now_ms);
        let mut out = Vec::new();
        loop {
            // A suspended run starts nothing; what runs finishes.
            if self.phase.is_terminal() || self.suspended {
                break;
            }
            self.refresh_open();
            let pending: Vec<(u64, String)> = self
                .open
                .pending
                .iter()
                .filter(|(_, id)| {
                    self.nodes[id.as_str()]
                        .not_before_ms
                        .is_none_or(|t| t <= now_ms)
                })
                .cloned()
                .collect();
            let mut limits = self.parallelism_limits();
            let mut changed = false;
            for (_, id) in pending {
                if !limits.admit(&id) {
                    continue;
                }
                match self.build_step(&id) {
                    Err(e) => {
                        self.finish_node(&id, NodePhase::Error, Some(e), now_ms);
                        changed = true;
                    }
                    Ok(step) => {
                        if let Some(key) = &step.memoize_key {
                            if let Some(entry) = self.memo_hit(&id, key, cache, now_ms) {
                                let n = self.node_mut(&id).expect("pending node");
                                n.outputs = entry.outputs;
                                n.memoized = true;
                                n.started_ms = Some(now_ms);
                                n.memo_key = Some(key.clone());
                                self.finish_node(
                                    &id,
                                    NodePhase::Succeeded,
                                    Some(format!("memoized: outputs of {}", entry.step)),
                                    now_ms,
                                );
                                changed = true;
                                continue;
                            }
                        }
                        let n = self.node_mut(&id).expect("pending node");
                        n.phase = NodePhase::Running;
                        n.started_ms = Some(now_ms);
                        n.not_before_ms = None;
                        n.memo_key = step.memoize_key.clone();
                        n.deadline_ms = step.active_deadline_seconds.map(|s| now_ms + s * 1000);
                        limits.launched(&id);
                        out.push(step);
                    }
                }
            }
            if !changed {
                break;
            }
            self.reconcile(now_ms);
        }
        self.refresh_open();
        out
    }

    /// The `parallelism` limits in force: the workflow's, and each running
    /// DAG or steps invocation's whose template sets one, with the steps
    /// running under each.
    fn parallelism_limits(&self) -> Limits {
        let running: Vec<&str> = self
            .nodes
            .values()
            .filter(|n| n.node_type == NodeType::Pod && n.phase == NodePhase::Running)
            .map(|n| n.id.as_str())
            .collect();
        let mut scopes = Vec::new();
        if let Some(p) = self
            .workflow
            .spec
            .parallelism
            .as_ref()
            .and_then(|p| p.as_int())
        {
            scopes.push((None, p.max(1) as usize, running.len()));
        }
        for n in self.nodes.values() {
            if !matches!(n.node_type, NodeType::Dag | NodeType::Steps) || n.phase.is_fulfilled() {
                continue;
            }
            let limit = n
                .template
                .as_deref()
                .and_then(|t| self.template(t))
                .and_then(|t| t.parallelism.as_ref())
                .and_then(|p| p.as_int());
            if let Some(p) = limit {
                let under = running.iter().filter(|r| is_under(r, &n.id)).count();
                scopes.push((Some(n.id.clone()), p.max(1) as usize, under));
            }
        }
        Limits { scopes }
    }

    /// A fresh cache entry for a first attempt's `key` (within the
    /// template's `memoize.maxAge`, when it has one).
    fn memo_hit(
        &self,
        id: &str,
        key: &str,
        cache: &dyn MemoCache,
        now_ms: u64,
    ) -> Option<MemoEntry> {
        let n = self.nodes.get(id)?;
        if n.retries > 0 {
            return None; // only a first attempt is looked up
        }
        let tmpl = self.template(n.template.as_deref()?)?;
        let max_age = tmpl
            .memoize
            .as_ref()?
            .max_age
            .as_deref()
            .and_then(|a| parse_duration_ms(a).ok());
        let entry = cache.get(key)?;
        let age = now_ms.saturating_sub(entry.created_ms);
        match max_age {
            Some(max) if age > max => None,
            _ => Some(entry),
        }
    }

    /// Record how a launched step ended. Reports for steps already finished
    /// (say, failed by a deadline) are ignored, so repeating one is harmless.
    pub fn on_step_finished(
        &mut self,
        id: &str,
        outcome: StepOutcome,
        now_ms: u64,
        cache: &mut dyn MemoCache,
    ) -> Result<(), RunError> {
        let node = self
            .nodes
            .get(id)
            .ok_or_else(|| RunError::UnknownStep(id.to_string()))?;
        if node.node_type != NodeType::Pod {
            return Err(RunError::NotAStep(id.to_string()));
        }
        if node.phase.is_fulfilled() {
            return Ok(());
        }
        if node.phase == NodePhase::Pending {
            return Err(RunError::NotLaunched(id.to_string()));
        }
        let tmpl = node
            .template
            .as_deref()
            .and_then(|t| self.template(t))
            .cloned()
            .unwrap_or_default();
        let mut phase = match outcome.phase {
            StepPhase::Succeeded => NodePhase::Succeeded,
            StepPhase::Failed => NodePhase::Failed,
            StepPhase::Errored => NodePhase::Error,
        };
        let mut message = outcome.message.clone();
        let mut outputs = NodeOutputs {
            result: outcome.result.as_deref().map(argo_result),
            ..Default::default()
        };
        if phase == NodePhase::Succeeded {
            if let Some(missing) =
                self.collect_leaf_outputs(id, node, &tmpl, &outcome, &mut outputs)
            {
                phase = NodePhase::Error;
                message = Some(missing);
            }
        }
        let memo_key = node.memo_key.clone();
        let n = self.node_mut(id).expect("checked above");
        n.exit_code = outcome.exit_code;
        n.outputs = outputs;
        if phase == NodePhase::Succeeded {
            if let Some(key) = memo_key {
                cache.put(
                    &key,
                    MemoEntry {
                        created_ms: now_ms,
                        outputs: n.outputs.clone(),
                        step: id.to_string(),
                    },
                );
            }
        }
        self.finish_node(id, phase, message, now_ms);
        self.reconcile(now_ms);
        self.refresh_open();
        Ok(())
    }

    /// Fill `outputs` with a succeeded step's declared outputs from what the
    /// shell found. Returns why the step is an Error instead when a required
    /// output is missing: the first missing parameter, else the first
    /// missing artifact.
    fn collect_leaf_outputs(
        &self,
        id: &str,
        node: &Node,
        tmpl: &Template,
        outcome: &StepOutcome,
        outputs: &mut NodeOutputs,
    ) -> Option<String> {
        let mut missing = None;
        let scope = self.leaf_scope(node);
        for p in tmpl.output_parameters() {
            let vf = p.value_from.as_ref();
            let value = outcome
                .parameters
                .get(&p.name)
                .cloned()
                .or_else(|| vf.and_then(|v| v.default.as_ref()).map(|d| d.0.clone()))
                .or_else(|| p.default.as_ref().map(|d| d.0.clone()))
                .or_else(|| p.value.as_ref().and_then(|v| substitute(&v.0, &scope).ok()));
            match value {
                Some(v) => {
                    outputs.parameters.insert(p.name.clone(), v);
                }
                None => {
                    missing = Some(format!(
                        "output parameter {:?} not found (the step did not write {})",
                        p.name,
                        vf.and_then(|v| v.path.as_deref()).unwrap_or("its file")
                    ));
                    break;
                }
            }
        }
        for a in tmpl.output_artifacts() {
            if outcome.artifacts.contains(&a.name) {
                outputs.artifacts.insert(
                    a.name.clone(),
                    ArtifactKey {
                        workflow: self.name.clone(),
                        step: id.to_string(),
                        name: a.name.clone(),
                    },
                );
            } else if a.optional != Some(true) && missing.is_none() {
                missing = Some(format!(
                    "output artifact {:?} not found at {}",
                    a.name,
                    a.path.as_deref().unwrap_or("its path")
                ));
            }
        }
        missing
    }

    /// Launched steps to stop, collected since the last call (also
    /// returned by [`Run::on_tick`] and [`Run::terminate`]).
    pub fn take_cancellations(&mut self) -> Vec<String> {
        std::mem::take(&mut self.to_cancel)
    }

    /// Apply deadlines and backoff timers. Returns the steps to stop and
    /// when to call again.
    pub fn on_tick(&mut self, now_ms: u64) -> Tick {
        self.apply_deadlines(now_ms);
        self.reconcile(now_ms);
        self.refresh_open();
        Tick {
            cancel: std::mem::take(&mut self.to_cancel),
            next_wakeup_ms: self.next_wakeup_ms(now_ms),
        }
    }

    /// Stop the run now: running steps are to be stopped, nothing new
    /// starts, the exit handler does not run. Returns the steps to stop.
    pub fn terminate(&mut self, now_ms: u64, reason: &str) -> Vec<String> {
        if !self.phase.is_terminal() {
            self.terminated = true;
            let root = self.root.clone();
            self.fail_subtree(&root, reason, now_ms);
            if let Some(e) = self.exit_node.clone() {
                self.fail_subtree(&e, reason, now_ms);
            }
            self.reconcile(now_ms);
            self.message = Some(reason.to_string());
        }
        self.refresh_open();
        std::mem::take(&mut self.to_cancel)
    }

    /// The earliest time something timed happens: a retry becomes due or a
    /// deadline passes.
    pub fn next_wakeup_ms(&self, now_ms: u64) -> Option<u64> {
        if self.phase.is_terminal() {
            return None;
        }
        let mut t: Option<u64> = None;
        let mut consider = |x: u64| {
            if x > now_ms {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        let main_done = self
            .nodes
            .get(&self.root)
            .is_some_and(|n| n.phase.is_fulfilled());
        if let (Some(d), false) = (self.deadline_ms, main_done) {
            consider(d);
        }
        // The timed nodes when the index holds (after every call that
        // changes the run), else every node.
        let timed: Box<dyn Iterator<Item = &Node>> = if self.open_is_current() {
            Box::new(self.open.timed.iter().filter_map(|id| self.nodes.get(id)))
        } else {
            Box::new(self.nodes.values())
        };
        for n in timed {
            if n.phase == NodePhase::Pending {
                if let Some(nb) = n.not_before_ms {
                    consider(nb);
                }
            }
            if n.phase == NodePhase::Running {
                if let Some(d) = n.deadline_ms {
                    consider(d);
                }
            }
        }
        t
    }

    /// Fail what has run past its deadline: the whole run
    /// (`spec.activeDeadlineSeconds`), then each running step or DAG.
    fn apply_deadlines(&mut self, now_ms: u64) {
        if self.phase.is_terminal() {
            return;
        }
        let root_done = self
            .nodes
            .get(&self.root)
            .is_none_or(|n| n.phase.is_fulfilled());
        if let (Some(d), false) = (self.deadline_ms, root_done) {
            if now_ms >= d {
                let root = self.root.clone();
                let secs = (d - self.started_ms) / 1000;
                self.fail_subtree(
                    &root,
                    &format!("Workflow exceeded its deadline (activeDeadlineSeconds: {secs})"),
                    now_ms,
                );
                self.message = Some(format!(
                    "Workflow exceeded its deadline (activeDeadlineSeconds: {secs})"
                ));
            }
        }
        self.refresh_open();
        self.wake_suspended(now_ms);
        let expired: Vec<(String, NodeType)> = self
            .open
            .timed
            .iter()
            .filter_map(|id| self.nodes.get(id))
            .filter(|n| n.phase == NodePhase::Running && n.deadline_ms.is_some_and(|d| now_ms >= d))
            .map(|n| (n.id.clone(), n.node_type))
            .collect();
        for (id, ty) in expired {
            let why = if ty == NodeType::Pod {
                "Step exceeded its deadline (activeDeadlineSeconds)"
            } else {
                "Template exceeded its deadline (activeDeadlineSeconds)"
            };
            self.fail_subtree(&id, why, now_ms);
        }
    }
}

/// Most bytes of `outputs.result`.
const MAX_RESULT_BYTES: usize = 256 * 1024;

/// A step's standard output as Argo keeps it for `outputs.result`: one
/// final newline trimmed, then the last 256 KiB (cut at a character
/// boundary).
fn argo_result(out: &str) -> String {
    let out = out.strip_suffix('\n').unwrap_or(out);
    let mut start = out.len().saturating_sub(MAX_RESULT_BYTES);
    while !out.is_char_boundary(start) {
        start += 1;
    }
    out[start..].to_string()
}

/// Step `id` is inside the invocation `scope`: its id continues the
/// scope's with a task (`.`) or a group (`[`).
fn is_under(id: &str, scope: &str) -> bool {
    id.strip_prefix(scope)
        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// `parallelism` bookkeeping while launching: (invocation, or `None` for
/// the whole run; limit; steps running in it).
struct Limits {
    scopes: Vec<(Option<String>, usize, usize)>,
}

impl Limits {
    fn applies(scope: &Option<String>, id: &str) -> bool {
        scope.as_deref().is_none_or(|s| is_under(id, s))
    }
    /// Whether step `id` may start now.
    fn admit(&self, id: &str) -> bool {
        self.scopes
            .iter()
            .all(|(s, limit, n)| !Self::applies(s, id) || n < limit)
    }
    fn launched(&mut self, id: &str) {
        for (s, _, n) in &mut self.scopes {
            if Self::applies(s, id) {
                *n += 1;
            }
        }
    }
}
