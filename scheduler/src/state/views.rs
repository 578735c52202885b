//! Read models computed from the state: what a queue holds, an endpoint
//! with its replicas' URLs, the jobs waiting for placement, and the tasks
//! bound to or running on a node (which `api::assignments` turns into a node
//! daemon's messages).

use gpuctl_common::api::{Job, JobPhase, TaskStatus};
use gpuctl_common::endpoint::Endpoint;
use gpuctl_common::queue::{QueueStatus, DEFAULT_QUEUE};

use super::State;

impl State {
    /// What a queue's jobs hold and wait for now.
    pub fn queue_status(&self, queue: &str) -> QueueStatus {
        let mut st = QueueStatus::default();
        let mut milli = 0u64;
        // Ended jobs neither wait nor run, and hold nothing once their
        // tasks stopped: the live ones are all that count.
        for j in self.live_jobs() {
            if j.metadata.queue.as_deref().unwrap_or(DEFAULT_QUEUE) != queue {
                continue;
            }
            match j.status.phase {
                JobPhase::Pending => st.pending_jobs += 1,
                JobPhase::Running => st.running_jobs += 1,
                _ => {}
            }
            milli += j.gpu_milli_held();
        }
        st.gpus_in_use = milli as f64 / 1000.0;
        st
    }

    /// An endpoint as users and the gateway read it: each replica's phase, node and
    /// URL filled in from its job and node.
    pub fn endpoint_view(&self, name: &str) -> Option<Endpoint> {
        let mut e = self.endpoints.get(name)?.clone();
        let tls = e.spec.serves_tls();
        for r in &mut e.status.replicas {
            let task = self.jobs.get(&r.job).and_then(|j| j.status.tasks.first());
            r.phase = task.map(|t| t.phase);
            r.node = task.and_then(|t| t.node.clone());
            r.url = task.and_then(|t| {
                let node = self.nodes.get(t.node.as_deref()?)?;
                let port = t.port?;
                let host = if node.status.address.contains(':') {
                    format!("[{}]", node.status.address)
                } else {
                    node.status.address.clone()
                };
                // A node with TLS gives its replicas certificates (its
                // agent endpoint is https): the gateway reaches them over https.
                let https = tls && node.status.agent_endpoint.starts_with("https://");
                let scheme = if https { "https" } else { "http" };
                Some(format!("{scheme}://{host}:{port}"))
            });
            if let Some(p) = task.and_then(|t| t.port) {
                r.port = p;
            }
        }
        e.status.api_key_hashes = self.api_key_hashes(&e, gpuctl_security::sealing::installed());
        Some(e)
    }

    /// Every endpoint as [`State::endpoint_view`] shows it.
    pub fn endpoint_views(&self) -> Vec<Endpoint> {
        self.endpoints
            .keys()
            .filter_map(|n| self.endpoint_view(n))
            .collect()
    }

    /// Jobs not ended, or ended with a task still holding resources, in
    /// name order: every job a scheduling round's fair share, workload mix
    /// and preemption can count (read from the index, not a scan of every
    /// job ever held).
    pub fn live_jobs(&self) -> impl Iterator<Item = &Job> + '_ {
        self.index.live().filter_map(|n| self.jobs.get(n))
    }

    /// Up to `limit` jobs (0: no limit) in submission order, from just
    /// after the job `after` (its uid and name), and whether more follow.
    pub fn jobs_page(&self, after: Option<(u64, &str)>, limit: usize) -> (Vec<&Job>, bool) {
        let mut it = self
            .index
            .submitted_after(after)
            .filter_map(|n| self.jobs.get(n));
        if limit == 0 {
            return (it.collect(), false);
        }
        let page: Vec<&Job> = it.by_ref().take(limit).collect();
        let more = it.next().is_some();
        (page, more)
    }

    /// Jobs waiting for placement, in submission order.
    pub fn pending_jobs(&self) -> Vec<&Job> {
        // From the index, already in order (priority, then submission).
        self.index
            .pending()
            .filter_map(|n| self.jobs.get(n))
            .collect()
    }

    /// Tasks (of current attempts) bound to or running on `node`, read from
    /// the jobs-by-node index (the jobs with a task there, in name order).
    pub fn tasks_on_node<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = (&'a Job, &'a TaskStatus)> + 'a {
        self.index
            .jobs_on(node)
            .filter_map(move |n| self.jobs.get(n))
            .flat_map(move |j| {
                j.status
                    .tasks
                    .iter()
                    .filter(move |t| t.phase.holds_resources() && t.node.as_deref() == Some(node))
                    .map(move |t| (j, t))
            })
    }
}
