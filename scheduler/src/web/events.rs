//! `GET /api/events`: server-sent events driven by the state's changes. The
//! stream follows the applied version (bumped once per applied batch) and
//! sends one `change` event per batch it sees, with the applied index and
//! the nodes the batch changed (the state's per-node change log, as the
//! node watch streams read it; `null` when the state was replaced and
//! anything may have changed). Batches that come faster than
//! [`MIN_GAP`] are merged into one event. The page re-reads only the view it
//! shows. The session is checked again before every event: a revoked
//! token ends the stream with an `unauthorized` event.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

use super::{stopped, Body, Session};
use crate::api::Api;
use crate::state::ChangeCursor;

/// The shortest time between two events of one stream.
const MIN_GAP: Duration = Duration::from_millis(250);
/// A comment line this often keeps proxies from closing an idle stream.
const KEEPALIVE: Duration = Duration::from_secs(20);

/// One event in the `text/event-stream` format.
pub fn event(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The event stream for `who`.
pub fn stream(api: Api, who: Session) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(feed(api, who, tx));
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut r = Response::new(body.boxed());
    *r.status_mut() = StatusCode::OK;
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

/// Until the browser goes away, the replica stops or the session ends.
async fn feed(api: Api, who: Session, tx: mpsc::Sender<Result<Frame<Bytes>, Infallible>>) {
    let shared = api.raft.shared.clone();
    let mut version = shared.version.subscribe();
    let mut stop = api.stop.clone();
    let mut cursor: Option<ChangeCursor> = None;
    let mut first = true;
    loop {
        let (applied, nodes) = {
            let st = shared.read();
            let log = st.node_changes();
            let nodes: Option<Vec<String>> = cursor
                .and_then(|c| log.since(c))
                .map(|it| it.map(str::to_string).collect());
            cursor = Some(log.cursor());
            (*version.borrow_and_update(), nodes)
        };
        let ev = if first {
            first = false;
            event(
                "hello",
                &serde_json::json!({ "applied": applied, "user": who.user }),
            )
        } else {
            match who.recheck(&api).await {
                Ok(_) => event(
                    "change",
                    &serde_json::json!({ "applied": applied, "nodes": nodes }),
                ),
                Err(e) => {
                    let _ = tx
                        .send(Ok(Frame::data(event(
                            "unauthorized",
                            &serde_json::json!({ "error": e }),
                        ))))
                        .await;
                    return;
                }
            }
        };
        if tx.send(Ok(Frame::data(ev))).await.is_err() {
            return;
        }
        // Wait for the next batch, sending keep-alives meanwhile.
        loop {
            tokio::select! {
                r = version.changed() => if r.is_err() { return } else { break },
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if tx.send(Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n")))).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
        tokio::time::sleep(MIN_GAP).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_in_the_event_stream_format() {
        let e = event(
            "change",
            &serde_json::json!({"applied": 7, "nodes": ["n1"]}),
        );
        assert_eq!(
            &e[..],
            b"event: change\ndata: {\"applied\":7,\"nodes\":[\"n1\"]}\n\n"
        );
    }
}
