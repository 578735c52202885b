//! Small HTTP pieces the gateway and the model server share: the accept loop (listener
//! and shutdown from outside, as mini-redis's `run`), JSON responses, and reading a body
//! under a size limit.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderMap, HeaderName};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

/// A request handler: the whole application behind one function.
pub trait Handler: Send + Sync + 'static {
    /// The body of its responses (`Full<Bytes>` for answers made whole).
    type Body: Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static;

    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<Self::Body>> + Send;

    /// How long a client may take to send a request's head: a connection that
    /// has not sent a whole head within it (one byte a second, or nothing at
    /// all, also between keep-alive requests) is closed.
    fn header_read_timeout(&self) -> Duration {
        HEADER_READ_TIMEOUT
    }
}

/// The default [`Handler::header_read_timeout`] (nginx's `client_header_timeout`
/// is 60 s; hyper's own default is 30 s).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time a client may take to send a request's whole body (nginx's
/// `client_body_timeout` is 60 s between two reads; this bounds the whole body).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves HTTP/1.1 on `listener` until `shutdown` resolves. Connections already accepted
/// finish their requests.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, handler, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given: each connection's handshake
/// must finish within [`gpuctl_security::tls::HANDSHAKE_TIMEOUT`], and a
/// plaintext request is answered `400` (use https) and closed.
pub async fn serve_with<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            // A client that sends its request and then shuts down its side
            // (`shutdown(SHUT_WR)`) still gets its answer.
            http.half_close(true)
                .timer(TokioTimer::new())
                .header_read_timeout(handler.header_read_timeout());
            let svc = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler.handle(req).await) }
            });
            // Errors here are a client hanging up or sending garbage: nothing to do.
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                }
                Some(acceptor) => {
                    let limit = gpuctl_security::tls::HANDSHAKE_TIMEOUT;
                    match gpuctl_security::tls::accept_http(&acceptor, stream, limit).await {
                        Ok(s) => {
                            let _ = http.serve_connection(TokioIo::new(s), svc).await;
                        }
                        Err(e) => tracing::debug!("connection dropped: {e}"),
                    }
                }
            }
        });
    }
}

pub fn response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    response(status, "application/json", body)
}

pub fn json_value(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    json(status, serde_json::to_vec(value).unwrap_or_default())
}

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, crate::protocol::error_body(message))
}

/// Prometheus text for `registry`.
pub fn metrics(registry: &Registry) -> Response<Full<Bytes>> {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&registry.gather(), &mut buf) {
        Ok(()) => response(StatusCode::OK, encoder.format_type(), buf),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("encoding metrics: {e}"),
        ),
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body did not arrive within {secs}s")]
    TooSlow { secs: f64 },
    #[error("reading request body: {0}")]
    Read(String),
}

impl BodyError {
    /// The status that answers it: 413, 408 or 400.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The error answer for it.
    pub fn response(&self) -> Response<Full<Bytes>> {
        error(self.status(), &self.to_string())
    }
}

/// Reads the whole body within `timeout`, refusing more than `limit` bytes (up
/// front when `Content-Length` says so, otherwise as soon as the limit is
/// crossed).
pub async fn read_body<B>(
    req: Request<B>,
    limit: usize,
    timeout: Duration,
) -> Result<(hyper::http::request::Parts, Bytes), BodyError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(timeout, read_body_whole(req, limit)).await {
        Ok(r) => r,
        Err(_) => Err(BodyError::TooSlow {
            secs: timeout.as_secs_f64(),
        }),
    }
}

async fn read_body_whole<B>(
    req: Request<B>,
    limit: usize,
) -> Result<(hyper::http::request::Parts, Bytes), BodyError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let (parts, body) = req.into_parts();
    let mut body = std::pin::pin!(body);
    // Most bodies come in one frame: that frame is the body, with no copy.
    let mut first: Option<Bytes> = None;
    let mut more: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers
        };
        // Free for `Bytes`, which is what hyper's bodies carry.
        let data = data.copy_to_bytes(data.remaining());
        total += data.len();
        if total > limit {
            return Err(BodyError::TooLarge { limit });
        }
        match &first {
            None => first = Some(data),
            Some(f) => {
                if more.is_empty() {
                    more.extend_from_slice(f);
                }
                more.extend_from_slice(&data);
            }
        }
    }
    let bytes = match (first, more.is_empty()) {
        (None, _) => Bytes::new(),
        (Some(f), true) => f,
        (Some(_), false) => Bytes::from(more),
    };
    Ok((parts, bytes))
}

/// Headers that belong to one connection, not to the request or response (RFC 9110 §7.6.1),
/// and `content-length`, which each side sets for the body it sends.
pub(crate) fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

/// Removes the headers that belong to one connection (see [`hop_by_hop`]); a scan of
/// the few headers a request has, and removals only when one is there.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(hop_by_hop) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| hop_by_hop(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body that yields these frames, one per poll.
    struct Frames(VecDeque<&'static [u8]>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(
                self.get_mut()
                    .0
                    .pop_front()
                    .map(|b| Ok(hyper::body::Frame::data(Bytes::from_static(b)))),
            )
        }
    }

    async fn read(frames: &[&'static [u8]], limit: usize) -> Result<Bytes, BodyError> {
        let req = Request::new(Frames(frames.iter().copied().collect()));
        read_body(req, limit, BODY_READ_TIMEOUT)
            .await
            .map(|(_, b)| b)
    }

    #[tokio::test]
    async fn bodies_are_read_whole_across_frames_and_under_the_limit() {
        assert_eq!(read(&[], 4).await.unwrap(), "");
        assert_eq!(read(&[b"abcd"], 4).await.unwrap(), "abcd");
        assert_eq!(read(&[b"ab", b"", b"cd"], 4).await.unwrap(), "abcd");
        assert_eq!(read(&[b"", b"abc"], 4).await.unwrap(), "abc");
        assert!(matches!(
            read(&[b"ab", b"cde"], 4).await,
            Err(BodyError::TooLarge { limit: 4 })
        ));
        assert!(matches!(
            read(&[b"abcde"], 4).await,
            Err(BodyError::TooLarge { limit: 4 })
        ));
    }
}
