//! The scheduler replicas this node talks to: one lazily connecting channel
//! each, which one to call now, and whether the last calls got through
//! (what `/healthz` reports).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gpuctl_proto::v1::node_service_client::NodeServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Errors of the agent's set-up (the loops themselves retry forever).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("--server: no scheduler address given")]
    NoServer,
    #[error("--server {url:?}: {reason}")]
    BadServer { url: String, reason: String },
}

/// The scheduler replicas, tried in order: a call that fails as if the
/// replica were down (or not the leader) moves on to the next one.
#[derive(Debug)]
pub struct Servers {
    urls: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
    /// When the scheduler last acknowledged a registration or heartbeat.
    pub contact: Contact,
}

/// Whether this node is in touch with the scheduler, for `/healthz`.
#[derive(Debug, Default)]
pub struct Contact {
    /// ms since the epoch of the last acknowledged call; 0: never.
    last_ok_ms: std::sync::atomic::AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

impl Contact {
    pub fn ok(&self, now_ms: u64) {
        self.last_ok_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn failed(&self, why: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// Healthy when the scheduler acknowledged a call within `within`.
    pub fn check(&self, now_ms: u64, within: Duration) -> Result<(), String> {
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        let error = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        if last == 0 {
            return Err(format!("not registered with the scheduler yet{error}"));
        }
        let quiet = now_ms.saturating_sub(last);
        if quiet > within.as_millis() as u64 {
            return Err(format!(
                "no heartbeat acknowledged by the scheduler for {:.1}s{error}",
                quiet as f64 / 1000.0
            ));
        }
        Ok(())
    }
}

impl Servers {
    /// Lazily connecting channels to each URL (`host:port` or a URL; its
    /// scheme follows `tls`), presenting our certificate when `tls` is set.
    pub fn new(
        urls: &[String],
        tls: Option<&gpuctl_security::tls::Tls>,
    ) -> Result<Servers, AgentError> {
        if urls.is_empty() {
            return Err(AgentError::NoServer);
        }
        let mut channels = Vec::new();
        for url in urls {
            let ep =
                gpuctl_security::tls::endpoint(url, tls).map_err(|e| AgentError::BadServer {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
            let ep = ep
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            channels.push(ep.connect_lazy());
        }
        Ok(Servers {
            urls: urls.to_vec(),
            channels,
            current: AtomicUsize::new(0),
            contact: Contact::default(),
        })
    }

    /// The replica to call now, and its position for [`Servers::failed`].
    pub fn client(&self) -> (usize, NodeServiceClient<Channel>) {
        let i = self.current.load(Ordering::Relaxed) % self.channels.len();
        (i, NodeServiceClient::new(self.channels[i].clone()))
    }

    /// The URL of replica `i`, for messages.
    pub fn url(&self, i: usize) -> &str {
        &self.urls[i]
    }

    /// A call to replica `i` failed: move on if it looks down or not leader.
    pub fn failed(&self, i: usize, status: &Status) {
        let rotate = matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
        );
        if rotate && self.channels.len() > 1 {
            let next = (i + 1) % self.channels.len();
            if self
                .current
                .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                tracing::debug!(
                    "scheduler {} failed ({}); trying {}",
                    self.urls[i],
                    status.code(),
                    self.urls[next]
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_while_the_scheduler_answers() {
        let c = Contact::default();
        let within = Duration::from_secs(10);
        c.failed("Register with http://s:7000: unavailable".into());
        let e = c.check(1_000, within).unwrap_err();
        assert_eq!(
            e,
            "not registered with the scheduler yet (last error: Register with http://s:7000: unavailable)"
        );
        c.ok(5_000);
        assert_eq!(c.check(15_000, within), Ok(()));
        let e = c.check(15_001, within).unwrap_err();
        assert!(
            e.starts_with("no heartbeat acknowledged by the scheduler for 10.0s"),
            "{e}"
        );
    }
}
