//! Tasks that wait to start: a GPU they need is still held by a task that
//! is stopping.

use super::{LocalState, Reconciler};
use crate::assignment::Assignment;
use crate::runtime::TaskKey;

impl Reconciler {
    /// Why `a` cannot start yet: one of its GPUs would be used beyond its
    /// capacity, counting processes still stopping on it. `None` when it can.
    pub(super) fn blocked_by(&self, a: &Assignment) -> Option<String> {
        let want = a.gpu_shares();
        for (&gpu, &need) in a.gpu_indices.iter().zip(&want) {
            let holders = self.tasks.iter().filter_map(|(k, t)| {
                let live = t.state.has_process();
                let i = t.gpus.iter().position(|&g| g == gpu)?;
                live.then(|| (k, t.state, t.milli.get(i).copied().unwrap_or(1000)))
            });
            let (mut held, mut stopping) = (0u32, Vec::new());
            for (k, state, m) in holders {
                held += m;
                if state == LocalState::Stopping {
                    stopping.push(k.to_string());
                }
            }
            if !stopping.is_empty() && held + need > 1000 {
                return Some(format!(
                    "GPU {gpu} is still held by {} (stopping)",
                    stopping.join(", ")
                ));
            }
        }
        None
    }

    /// Start the waiting tasks that can start now (after a process exited).
    pub(super) fn start_waiting(&mut self) {
        if self.shutting_down {
            return;
        }
        let waiting: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.state == LocalState::Waiting)
            .map(|(k, _)| k.clone())
            .collect();
        for key in waiting {
            let Some((a, received)) = self.tasks.remove(&key).and_then(|t| t.waiting) else {
                continue;
            };
            self.start(&a, received);
        }
    }
}
