//! How a gateway is set up: its limits and timeouts, and whom it asks for a
//! replica when an endpoint has none.

use std::time::Duration;

use crate::http;
use crate::replica_stream::ReplicaTls;

/// Asked to bring an endpoint up from zero replicas ([`crate::cluster`] forwards it
/// to the scheduler's endpoint controller); it must not block.
pub trait ScaleUp: Send + Sync + 'static {
    fn scale_up(&self, endpoint: &str);
}

/// For a gateway with static routes: there is no one to ask.
pub struct NoScaleUp;

impl ScaleUp for NoScaleUp {
    fn scale_up(&self, endpoint: &str) {
        tracing::warn!(
            endpoint,
            "endpoint has no replicas and no scheduler to ask for one"
        );
    }
}

impl ScaleUp for tokio::sync::mpsc::UnboundedSender<String> {
    fn scale_up(&self, endpoint: &str) {
        let _ = self.send(endpoint.to_string());
    }
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body forwarded (413 above it).
    pub max_body_bytes: usize,
    /// Requests one endpoint may hold while it has no replica (503 beyond).
    pub queue_capacity: usize,
    /// How long a held request waits for a replica before 503.
    pub cold_start_timeout: Duration,
    /// How long a connection attempt to a replica may take before it counts as failed.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection to a replica is kept.
    pub pool_idle_timeout: Duration,
    /// How long a replica may take to answer a forwarded request (its response head,
    /// and its body when read whole) before 504.
    pub response_timeout: Duration,
    /// How long a client may take to send a request's head (also the longest a
    /// keep-alive connection may sit idle) before it is closed.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body before 408.
    pub body_read_timeout: Duration,
    /// TLS to `https://` replicas (the CA the gateway trusts); None: only
    /// `http://` replicas can be reached.
    pub replica_tls: Option<ReplicaTls>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_body_bytes: 16 << 20,
            queue_capacity: 100,
            cold_start_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(2),
            pool_idle_timeout: Duration::from_secs(90),
            response_timeout: Duration::from_secs(300),
            header_read_timeout: http::HEADER_READ_TIMEOUT,
            body_read_timeout: http::BODY_READ_TIMEOUT,
            replica_tls: None,
        }
    }
}
