//! `GET /api/jobs/NAME/logs/stream?task=N`: a task's log as server-sent
//! events, followed until the task ends, as `gpuctl logs -f` follows it
//! (`Control.Logs` with `follow`: the scheduler reads the log on the task's
//! node and keeps streaming what the task writes).
//!
//! ```text
//!  event: log    data: "text"            (a JSON string: the next bytes)
//!  event: end    data: {"bytes": N}      (the task ended: the log is whole)
//!  event: error  data: {"error": "..."}  (no log: not placed yet, node gone)
//! ```
//!
//! The session is checked again every [`RECHECK`] while the stream lasts.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::control_server::Control;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::events::event;
use super::{error, param, stopped, Body, Session};
use crate::api::Api;

/// How often a long stream checks that its session still holds.
const RECHECK: Duration = Duration::from_secs(10);

/// The stream for `who` of job `name`'s task in `query` (`task=N`, 0 when
/// absent).
pub fn stream(api: Api, who: Session, name: String, query: &str) -> Response<Body> {
    let task = match param(query, "task").map(|t| t.parse::<u32>()) {
        None => 0,
        Some(Ok(t)) => t,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "task: expected a task index (0, 1, ...)",
            )
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(8);
    tokio::spawn(feed(api, who, name, task, tx));
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut r = Response::new(body.boxed());
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

/// Text of `bytes` after `carry` (an unfinished UTF-8 sequence from the
/// chunk before); what ends in an unfinished sequence is kept in `carry`.
fn text(carry: &mut Vec<u8>, bytes: &[u8]) -> String {
    carry.extend_from_slice(bytes);
    let whole = match std::str::from_utf8(carry) {
        Ok(_) => carry.len(),
        // An incomplete sequence at the end (at most 3 bytes) waits for the
        // next chunk; invalid bytes elsewhere are replaced.
        Err(e) if e.error_len().is_none() && carry.len() - e.valid_up_to() < 4 => e.valid_up_to(),
        Err(_) => carry.len(),
    };
    let rest = carry.split_off(whole);
    let out = String::from_utf8_lossy(carry).into_owned();
    *carry = rest;
    out
}

async fn feed(
    api: Api,
    who: Session,
    job: String,
    task: u32,
    tx: mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
) {
    let send = |b: Bytes| {
        let tx = tx.clone();
        async move { tx.send(Ok(Frame::data(b))).await.is_ok() }
    };
    let mut req = tonic::Request::new(pb::LogsRequest {
        job: job.clone(),
        task_index: task,
        attempt: 0,
        follow: true,
    });
    *req.metadata_mut() = who.metadata();
    let mut logs = match Control::logs(&api, req).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            send(event("error", &json!({ "error": s.message() }))).await;
            return;
        }
    };
    let mut stop = api.stop.clone();
    let mut checked = tokio::time::Instant::now();
    let mut carry = Vec::new();
    let mut bytes = 0usize;
    loop {
        let chunk = tokio::select! {
            c = logs.next() => c,
            _ = stopped(&mut stop) => return,
            _ = tx.closed() => return,
            _ = tokio::time::sleep(RECHECK) => {
                // Nothing written lately: a keep-alive, and the session again.
                if !send(Bytes::from_static(b": keep-alive\n\n")).await {
                    return;
                }
                checked = tokio::time::Instant::now();
                if let Err(e) = who.recheck(&api).await {
                    send(event("unauthorized", &json!({ "error": e }))).await;
                    return;
                }
                continue;
            }
        };
        if checked.elapsed() >= RECHECK {
            checked = tokio::time::Instant::now();
            if let Err(e) = who.recheck(&api).await {
                send(event("unauthorized", &json!({ "error": e }))).await;
                return;
            }
        }
        let ev = match chunk {
            Some(Ok(c)) => {
                bytes += c.data.len();
                let t = text(&mut carry, &c.data);
                if t.is_empty() {
                    continue;
                }
                event("log", &json!(t))
            }
            Some(Err(s)) => {
                send(event("error", &json!({ "error": s.message() }))).await;
                return;
            }
            None => {
                if !carry.is_empty() {
                    let t = String::from_utf8_lossy(&carry).into_owned();
                    send(event("log", &json!(t))).await;
                }
                send(event("end", &json!({ "bytes": bytes }))).await;
                return;
            }
        };
        if !send(ev).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_between_chunks_is_sent_whole() {
        let mut carry = Vec::new();
        let e = "é".as_bytes();
        assert_eq!(text(&mut carry, &[b'a', e[0]]), "a");
        assert_eq!(carry, vec![e[0]]);
        assert_eq!(text(&mut carry, &[e[1], b'b']), "éb");
        assert!(carry.is_empty());
        // Bytes that are no UTF-8 at all are replaced, not held.
        assert_eq!(text(&mut carry, &[0xff, b'c']), "\u{fffd}c");
        assert!(carry.is_empty());
    }
}
