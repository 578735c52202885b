//! The web UI: a read-only, live view of the cluster served by every
//! scheduler replica from its own applied state, over the same TLS as its
//! gRPC port (`--ui-listen`). Pages are plain HTML, CSS and JavaScript
//! embedded in the binary; the browser reads a small JSON API and follows
//! the state's changes through server-sent events.
//!
//! ```text
//!  mod.rs     the listener (TLS or not), routing, responses
//!  session.rs who the browser is: the cluster's bearer tokens, kept in an
//!             HttpOnly cookie after the login page
//!  data.rs    the JSON API: cluster, jobs, workflows, endpoints, control plane
//!  history.rs GPUs allocated over the last hour (the Cluster chart)
//!  endpoint_history.rs  each endpoint's requests/s, latency and replicas
//!             over the last hour (the Endpoints charts), sampled from the
//!             applied state
//!  graph.rs   a workflow's DAG as steps in layers (what the page draws)
//!  events.rs  /api/events: one event per applied batch, with the nodes
//!             it changed (the state's per-node change log)
//!  log_stream.rs  /api/jobs/NAME/logs/stream: a task's log as events,
//!             followed until the task ends (`Control.Logs` with follow)
//!  gzip.rs    answers gzipped for browsers that accept it
//!  assets/    index.html, login.html, app.js, app.css
//! ```
//!
//! Authentication is the gRPC API's: the same tokens, the same
//! authentication and authorization functions ([`Api::allow`]). An
//! unauthenticated browser gets the login page and nothing else; API calls
//! answer 401.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{Response, StatusCode};

mod data;
mod endpoint_history;
mod events;
pub mod graph;
mod gzip;
mod history;
mod log_stream;
mod server;
mod session;

pub use server::serve;
pub use session::Session;

/// A response body: whole, or streamed (server-sent events).
pub type Body = BoxBody<Bytes, Infallible>;

const INDEX_HTML: &str = include_str!("assets/index.html");
const LOGIN_HTML: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Bytes of the page's assets as served (uncompressed): the HTML shell,
/// the script and the style sheet.
pub fn asset_bytes() -> usize {
    INDEX_HTML.len() + APP_JS.len() + APP_CSS.len()
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A whole response.
pub fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A JSON answer.
pub fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    respond(status, "application/json", v.to_string())
}

/// A JSON error: `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// `%XX` and `+` decoded (form and query values); invalid escapes are kept.
pub fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// The value of `key` in a query or form body (`a=1&b=2`), decoded.
pub fn param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (url_decode(k) == key).then(|| url_decode(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            param("a=1&token=x%2By+z", "token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(param("a=1", "b"), None);
        assert_eq!(param("phase=", "phase").as_deref(), Some(""));
        assert_eq!(url_decode("100%"), "100%");
        assert_eq!(url_decode("%zz%41"), "%zzA");
    }
}
