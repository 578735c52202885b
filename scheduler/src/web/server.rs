//! The web UI's listener: connections (TLS or not), routing, and the
//! headers every answer carries.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::endpoint_history::{self, EndpointHistory};
use super::history::{History, EVERY};
use super::session::{login, login_page, logout};
use super::{error, respond, stopped, Body, Session, APP_CSS, APP_JS, INDEX_HTML};
use crate::api::Api;

/// What every connection shares.
struct Ui {
    api: Api,
    /// Whether the listener speaks TLS (the session cookie is then `Secure`).
    tls: bool,
    history: Arc<History>,
    endpoint_history: Arc<EndpointHistory>,
}

/// Serve the UI on `listener` until `stop`: TLS with `acceptor` when given.
pub fn serve(
    api: Api,
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let history = Arc::new(History::default());
    tokio::spawn(sample(api.clone(), history.clone(), stop.clone()));
    let endpoint_history = Arc::new(EndpointHistory::default());
    tokio::spawn(sample_endpoints(
        api.clone(),
        endpoint_history.clone(),
        stop.clone(),
    ));
    let ui = Arc::new(Ui {
        api,
        tls: acceptor.is_some(),
        history,
        endpoint_history,
    });
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = stopped(&mut stop) => return,
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("web UI listener accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let ui = ui.clone();
            let acceptor = acceptor.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => match a.accept(stream).await {
                        Ok(s) => connection(ui, TokioIo::new(s), stop).await,
                        // A browser that does not trust the CA, or a plain
                        // HTTP request to the TLS port.
                        Err(e) => tracing::debug!("web UI TLS handshake failed: {e}"),
                    },
                    None => connection(ui, TokioIo::new(stream), stop).await,
                }
            });
        }
    })
}

/// Until `stop`: a sample of the GPUs allocated every [`EVERY`].
async fn sample(api: Api, history: Arc<History>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut stop) => return,
        }
        let (allocated, total) = {
            let st = api.raft.shared.read();
            (
                st.gpu_milli_allocated() as f64 / 1000.0,
                st.counts().gpus_ready,
            )
        };
        history.record(gpuctl_common::now_ms(), allocated, total);
    }
}

/// Until `stop`: the endpoints' figures every [`endpoint_history::EVERY`].
async fn sample_endpoints(
    api: Api,
    history: Arc<EndpointHistory>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(endpoint_history::EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut stop) => return,
        }
        let now = endpoint_history::figures(&api.raft.shared.read());
        history.record(gpuctl_common::now_ms(), now);
    }
}

async fn connection<IO>(ui: Arc<Ui>, io: IO, mut stop: tokio::sync::watch::Receiver<bool>)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let ui = ui.clone();
        async move {
            let gzip = super::gzip::accepts(req.headers());
            let r = super::gzip::maybe(gzip, route(&ui, req).await).await;
            Ok::<_, Infallible>(secured(r))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(30))
        .serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        // Errors here are a client hanging up or sending garbage.
        _ = conn.as_mut() => {}
        _ = stopped(&mut stop) => conn.as_mut().graceful_shutdown(),
    }
}

/// Headers every answer carries: scripts, styles and connections only
/// from this origin, no framing, no sniffing, no referrer to other sites (same-origin: a form post then carries
/// its Origin, which [`same_origin`] checks).
fn secured(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    let set = |h: &mut hyper::HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, hyper::header::HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    set(h, "x-frame-options", "DENY");
    if !h.contains_key(hyper::header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    r
}

/// A redirect to `to` (303: the browser follows with GET).
fn redirect(to: &str) -> Response<Body> {
    let mut r = respond(StatusCode::SEE_OTHER, "text/plain", "");
    if let Ok(v) = to.parse() {
        r.headers_mut().insert(hyper::header::LOCATION, v);
    }
    r
}

async fn route(ui: &Ui, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/login") => login_page(None, StatusCode::OK),
        (&Method::POST, "/login" | "/logout") if !same_origin(req.headers(), ui.tls) => error(
            StatusCode::FORBIDDEN,
            format!("POST {path} from another site (its Origin header) is refused"),
        ),
        (&Method::POST, "/login") => login(&ui.api, ui.tls, req).await,
        (&Method::POST, "/logout") => logout(ui.tls),
        (&Method::GET, "/static/app.css") => {
            let mut r = respond(StatusCode::OK, "text/css; charset=utf-8", APP_CSS);
            r.headers_mut().insert(
                hyper::header::CACHE_CONTROL,
                hyper::header::HeaderValue::from_static("no-cache"),
            );
            r
        }
        (&Method::GET, "/favicon.ico") => respond(StatusCode::NO_CONTENT, "text/plain", ""),
        _ => {
            let who = match Session::of(&ui.api, req.headers()).await {
                Ok(s) => s,
                Err(e) if path.starts_with("/api/") => return error(StatusCode::UNAUTHORIZED, e),
                Err(_) if method == Method::GET => return redirect("/login"),
                Err(e) => return error(StatusCode::UNAUTHORIZED, e),
            };
            authenticated(ui, &who, &method, &path, &req).await
        }
    }
}

/// Whether a form post comes from this UI's own pages: browsers send
/// `Origin` with every POST, and it must name this scheme and host (no
/// `Origin`, as from scripts and older clients, passes).
fn same_origin(headers: &hyper::HeaderMap, tls: bool) -> bool {
    let Some(origin) = headers.get(hyper::header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let scheme = if tls { "https" } else { "http" };
    origin.to_str().ok() == Some(&format!("{scheme}://{host}"))
}

async fn authenticated(
    ui: &Ui,
    who: &Session,
    method: &Method,
    path: &str,
    req: &Request<Incoming>,
) -> Response<Body> {
    if method != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} {path}: the web UI is read-only; use GET"),
        );
    }
    match path {
        "/" | "/index.html" => respond(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML),
        "/static/app.js" => respond(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS),
        "/api/events" => super::events::stream(ui.api.clone(), who.clone()),
        p if p.starts_with("/api/jobs/") && p.ends_with("/logs/stream") => {
            let name = &p["/api/jobs/".len()..p.len() - "/logs/stream".len()];
            let query = req.uri().query().unwrap_or("");
            super::log_stream::stream(ui.api.clone(), who.clone(), super::url_decode(name), query)
        }
        p if p.starts_with("/api/") => {
            let query = req.uri().query().unwrap_or("");
            super::data::answer(
                &ui.api,
                &ui.history,
                &ui.endpoint_history,
                who,
                &p["/api/".len()..],
                query,
            )
            .await
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such page {path}; the UI lives at /"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_sites_pages_may_post_the_forms() {
        let mut h = hyper::HeaderMap::new();
        h.insert(hyper::header::HOST, "127.0.0.1:7443".parse().unwrap());
        assert!(same_origin(&h, true), "no Origin: a script");
        h.insert(
            hyper::header::ORIGIN,
            "https://127.0.0.1:7443".parse().unwrap(),
        );
        assert!(same_origin(&h, true));
        assert!(!same_origin(&h, false), "the scheme counts");
        h.insert(
            hyper::header::ORIGIN,
            "https://evil.example".parse().unwrap(),
        );
        assert!(!same_origin(&h, true));
    }
}
