//! `/metrics` and `/healthz` over HTTP/1.1 (hyper), for Prometheus and for
//! liveness checks. The server takes its listener and shutdown signal from
//! outside, so tests run it on `127.0.0.1:0`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

/// Reports whether the process is healthy, with a short reason when it is not.
pub type HealthCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Serve `/metrics` and `/healthz` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    health: HealthCheck,
    shutdown: impl Future<Output = ()>,
) {
    let registry = Arc::new(registry);
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("metrics listener accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let registry = registry.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                let health = health.clone();
                async move { Ok::<_, Infallible>(handle(&req, &registry, &health)) }
            });
            // Errors here are a client hanging up or sending garbage: nothing to do.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn handle(
    req: &Request<Incoming>,
    registry: &Registry,
    health: &HealthCheck,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let mut buf = Vec::new();
            let encoder = TextEncoder::new();
            match encoder.encode(&registry.gather(), &mut buf) {
                Ok(()) => text(StatusCode::OK, encoder.format_type(), buf),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("encoding metrics: {e}\n"),
                ),
            }
        }
        "/healthz" => match health() {
            Ok(()) => text(StatusCode::OK, "text/plain", "ok\n"),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{why}\n"),
            ),
        },
        other => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no such path {other}: try /metrics or /healthz\n"),
        ),
    }
}
