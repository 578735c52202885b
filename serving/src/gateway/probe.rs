//! Readiness probes of replicas, on connections of their own.

use bytes::Bytes;

use super::target::parse_base;
use super::Gateway;
use crate::upstream::{self, SendError};

impl Gateway {
    /// Whether the replica at `url` answers `GET PATH` (`/v2/health/ready`,
    /// or `/health` for an OpenAI server) with 2xx,
    /// on a connection of its own (TLS for `https://`); Err says why it
    /// could not be asked (a certificate the gateway does not trust, ...).
    pub async fn probe_ready(&self, url: &str, path: &str) -> Result<bool, String> {
        let base = url.trim_end_matches('/');
        let target = parse_base(base)?;
        let headers = hyper::HeaderMap::new();
        let body = Bytes::new();
        let req = upstream::Request {
            method: &hyper::Method::GET,
            path_and_query: path,
            authority: &target.authority,
            tls: target.tls.as_ref(),
            headers: &headers,
            body: &body,
        };
        match self.client.probe(&req).await {
            Ok(status) => Ok(status.is_success()),
            Err(SendError::Connect(e)) => Err(e.to_string()),
            Err(SendError::Failed(e)) => Err(format!("replica {base} {e}")),
        }
    }
}
