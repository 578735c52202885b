//! What every gpuctl process serves about itself: `/metrics` (Prometheus
//! text) and `/healthz` over HTTP/1.1 (hyper), for Prometheus and for
//! liveness checks.
//!
//! It lives apart from `gpuctl-common` so that the object model stays free of
//! hyper, tokio and prometheus; only the crates that build processes (the
//! scheduler, the node daemon) depend on it.
//!
//! ```text
//!   Prometheus ──GET /metrics──► serve ──► Registry::gather (the caller's metrics)
//!   liveness   ──GET /healthz──► serve ──► HealthCheck (the caller's closure)
//! ```
//!
//! The server takes its listener and shutdown signal from outside, so tests
//! run it on `127.0.0.1:0`. With TLS ([`serve_with`]) it speaks HTTPS with
//! the process's certificate (Prometheus: `scheme: https` and the cluster's
//! CA as `tls_config.ca_file`); a plain HTTP request there gets a `400`
//! that says to use https.

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

/// Registers `gpuctl_build_info{component, version}` = 1 in `registry`, as
/// Prometheus' own `prometheus_build_info`: which version each process runs,
/// for dashboards and for alerts on a cluster running mixed versions.
pub fn register_build_info(registry: &Registry, component: &str) -> prometheus::Result<()> {
    let info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "gpuctl_build_info",
            "Always 1; its labels name the component and its version.",
        ),
        &["component", "version"],
    )?;
    info.with_label_values(&[component, env!("CARGO_PKG_VERSION")])
        .set(1);
    registry.register(Box::new(info))
}

/// Reports whether the process is healthy, with a short reason when it is not.
pub type HealthCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Serve `/metrics` and `/healthz` in plain HTTP until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    health: HealthCheck,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, registry, health, None, shutdown).await
}

/// [`serve`], over TLS (HTTPS) when `tls` is given.
pub async fn serve_with(
    listener: TcpListener,
    registry: Registry,
    health: HealthCheck,
    tls: Option<tokio_rustls::TlsAcceptor>,
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
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                let health = health.clone();
                async move { Ok::<_, Infallible>(handle(&req, &registry, &health)) }
            });
            // Errors here are a client hanging up or sending garbage: nothing to do.
            let http = hyper::server::conn::http1::Builder::new();
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
                        Err(e) => tracing::debug!("metrics connection: {e}"),
                    }
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One request on a fresh connection (HTTP/1.0, so the server closes it):
    /// the status code and the body.
    async fn call(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {path} HTTP/1.0\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let code = head.split(' ').nth(1).and_then(|c| c.parse().ok());
        (code.unwrap_or(0), body.to_string())
    }

    #[tokio::test]
    async fn serves_metrics_and_health_and_refuses_the_rest() {
        let registry = Registry::new();
        register_build_info(&registry, "test").unwrap();
        let c = prometheus::IntCounter::new("gpuctl_test_things_total", "Things.").unwrap();
        registry.register(Box::new(c.clone())).unwrap();
        c.inc();
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        let health: HealthCheck = Arc::new(move || {
            if flag.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("no leader".into())
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, registry, health, async move {
            let _ = stopped.await;
        }));

        let (code, body) = call(addr, "GET", "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("gpuctl_test_things_total 1"), "{body}");
        let info = format!(
            "gpuctl_build_info{{component=\"test\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(body.contains(&info), "{body}");
        assert_eq!(call(addr, "GET", "/healthz").await, (200, "ok\n".into()));
        healthy.store(false, Ordering::Relaxed);
        assert_eq!(
            call(addr, "GET", "/healthz").await,
            (503, "no leader\n".into())
        );
        assert_eq!(call(addr, "GET", "/nope").await.0, 404);
        assert_eq!(call(addr, "POST", "/metrics").await.0, 405);

        let _ = stop.send(());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn serves_https_with_the_process_certificate_and_refuses_plain_http() {
        let dir = tempfile::tempdir().unwrap();
        let files = gpuctl_security::ca::ensure_dev(dir.path()).unwrap();
        let tls = files.tls_files().load().unwrap();
        let registry = Registry::new();
        register_build_info(&registry, "test").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let health: HealthCheck = Arc::new(|| Ok(()));
        let server = tokio::spawn(serve_with(
            listener,
            registry,
            health,
            Some(tls.acceptor(None).unwrap()),
            async move {
                let _ = stopped.await;
            },
        ));
        // Prometheus' side: https, checked against the cluster CA.
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls.rustls_client().unwrap()));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut s = connector.connect(name, tcp).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.0 200"), "{out}");
        assert!(out.contains("gpuctl_build_info"), "{out}");
        // Plain HTTP on the HTTPS port: a 400 that says so.
        let (code, body) = call(addr, "GET", "/metrics").await;
        assert_eq!(code, 400);
        assert_eq!(
            body,
            "this port speaks HTTPS: use https:// (and the cluster's CA)\n"
        );
        let _ = stop.send(());
        server.await.unwrap();
    }
}
