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
//!  graph.rs   a workflow's DAG as steps in layers (what the page draws)
//!  events.rs  /api/events: one event per applied batch, with the nodes
//!             it changed (the state's per-node change log)
//!  assets/    index.html, login.html, app.js, app.css
//! ```
//!
//! Authentication is the gRPC API's: the same tokens, the same
//! authentication and authorization functions ([`Api::allow`]). An
//! unauthenticated browser gets the login page and nothing else; API calls
//! answer 401.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::api::Api;

mod data;
mod events;
pub mod graph;
mod session;

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

/// What every connection shares.
struct Ui {
    api: Api,
    /// Whether the listener speaks TLS (the session cookie is then `Secure`).
    tls: bool,
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serve the UI on `listener` until `stop`: TLS with `acceptor` when given.
pub fn serve(
    api: Api,
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let ui = Arc::new(Ui {
        api,
        tls: acceptor.is_some(),
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

async fn connection<IO>(ui: Arc<Ui>, io: IO, mut stop: tokio::sync::watch::Receiver<bool>)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let ui = ui.clone();
        async move { Ok::<_, Infallible>(secured(route(&ui, req).await)) }
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
/// from this origin, no framing, no sniffing, no referrer.
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
    set(h, "referrer-policy", "no-referrer");
    set(h, "x-frame-options", "DENY");
    if !h.contains_key(hyper::header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    r
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
        (&Method::GET, "/login") => session::login_page(None, StatusCode::OK),
        (&Method::POST, "/login") => session::login(&ui.api, ui.tls, req).await,
        (&Method::POST, "/logout") => session::logout(ui.tls),
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
        "/api/events" => events::stream(ui.api.clone(), who.clone()),
        p if p.starts_with("/api/") => {
            let query = req.uri().query().unwrap_or("");
            data::answer(&ui.api, who, &p["/api/".len()..], query).await
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such page {path}; the UI lives at /"),
        ),
    }
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
