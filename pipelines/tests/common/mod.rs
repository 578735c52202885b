//! A tiny simulated executor: launches what the run asks for, finishes each
//! step after a scripted duration with a scripted outcome, and follows the
//! run's timers. Deterministic, bounded.
#![allow(dead_code)]

use std::collections::BTreeMap;

use gpuctl_pipelines::{
    parse_workflow, MemoEntry, Run, StepOutcome, StepToLaunch, Workflow, WorkflowPhase,
};

/// The text of Argo example `name` from the compatibility folder's `runs/`.
pub fn example(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/argo-examples/runs")
        .join(name);
    std::fs::read_to_string(p).unwrap()
}

pub fn wf(yaml: &str) -> Workflow {
    parse_workflow("wf.yaml", yaml).unwrap_or_else(|e| panic!("{e}"))
}

pub fn start(yaml: &str) -> Run {
    Run::new(&wf(yaml), "wf", &BTreeMap::new(), 0).unwrap()
}

pub struct Sim {
    pub run: Run,
    pub now: u64,
    pub cache: BTreeMap<String, MemoEntry>,
    /// (finish time, step id, outcome)
    pub running: Vec<(u64, String, StepOutcome)>,
    /// Every launch: (time, step).
    pub log: Vec<(u64, StepToLaunch)>,
    pub cancelled: Vec<(u64, String)>,
}

/// What a step does: how long it runs and how it ends.
pub type Script<'a> = dyn FnMut(&StepToLaunch) -> (u64, StepOutcome) + 'a;

impl Sim {
    pub fn new(run: Run) -> Sim {
        Sim {
            run,
            now: 0,
            cache: BTreeMap::new(),
            running: Vec::new(),
            log: Vec::new(),
            cancelled: Vec::new(),
        }
    }

    /// Launch whatever is ready now.
    pub fn launch(&mut self, script: &mut Script<'_>) {
        for s in self.run.ready_steps(self.now, &mut self.cache) {
            let (d, o) = script(&s);
            self.running.push((self.now + d, s.id.clone(), o));
            self.log.push((self.now, s));
        }
    }

    /// Advance to the next event and handle it; false when nothing is left.
    pub fn step(&mut self, script: &mut Script<'_>) -> bool {
        self.launch(script);
        let tick = self.run.on_tick(self.now);
        for id in tick.cancel {
            self.running.retain(|(_, r, _)| *r != id);
            self.cancelled.push((self.now, id));
        }
        if self.run.phase().is_terminal() {
            return false;
        }
        let next_finish = self.running.iter().map(|r| r.0).min();
        let next = match (next_finish, tick.next_wakeup_ms) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return !self.run.phase().is_terminal() && self.relaunch_check(),
            },
        };
        self.now = next.max(self.now);
        let (done, rest): (Vec<_>, Vec<_>) = self.running.drain(..).partition(|r| r.0 <= self.now);
        self.running = rest;
        for (_, id, o) in done {
            self.run
                .on_step_finished(&id, o, self.now, &mut self.cache)
                .unwrap();
        }
        true
    }

    fn relaunch_check(&mut self) -> bool {
        panic!(
            "run is stuck at {}: phase {:?}, nothing running and no timer\n{:#?}",
            self.now,
            self.run.phase(),
            self.run.status()
        );
    }

    /// Run to the end (at most 1000 events).
    pub fn finish(&mut self, script: &mut Script<'_>) -> WorkflowPhase {
        for _ in 0..1000 {
            if !self.step(script) {
                break;
            }
        }
        assert!(self.run.phase().is_terminal(), "did not finish");
        self.run.phase()
    }

    /// Display names of launched steps, in launch order.
    pub fn launched(&self) -> Vec<String> {
        self.log
            .iter()
            .map(|(_, s)| s.display_name.clone())
            .collect()
    }

    /// Step ids launched at time `t`.
    pub fn launched_at(&self, t: u64) -> Vec<String> {
        self.log
            .iter()
            .filter(|(at, _)| *at == t)
            .map(|(_, s)| s.display_name.clone())
            .collect()
    }

    pub fn step_named(&self, display: &str) -> &StepToLaunch {
        &self
            .log
            .iter()
            .find(|(_, s)| s.display_name == display)
            .unwrap_or_else(|| panic!("{display} was not launched: {:?}", self.launched()))
            .1
    }

    pub fn phase_of(&self, display: &str) -> gpuctl_pipelines::NodePhase {
        self.run
            .status()
            .root
            .unwrap()
            .find(display)
            .unwrap_or_else(|| panic!("no node {display}"))
            .phase
    }
}

/// Every step succeeds after one second.
pub fn all_ok(_: &StepToLaunch) -> (u64, StepOutcome) {
    (1000, StepOutcome::succeeded())
}

/// Steps whose display name is in `failing` fail (exit 1); others succeed.
pub fn failing(names: &'static [&'static str]) -> impl FnMut(&StepToLaunch) -> (u64, StepOutcome) {
    move |s| {
        if names.contains(&s.display_name.as_str()) {
            (1000, StepOutcome::failed(1))
        } else {
            (1000, StepOutcome::succeeded())
        }
    }
}

/// A leaf template named `name` that echoes.
pub const ECHO: &str = r#"
  - name: echo
    inputs:
      parameters: [{name: msg, default: hi}]
    container:
      image: alpine:3.7
      command: [echo, "{{inputs.parameters.msg}}"]
"#;
