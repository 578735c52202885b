//! Helpers shared by the integration tests: a tiny HTTP client over loopback.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request and returns (status, body as text).
pub async fn send(method: Method, url: &str, body: impl Into<Bytes>) -> (u16, String) {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .expect("request");
    let resp = client().request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub async fn get(url: &str) -> (u16, String) {
    send(Method::GET, url, Bytes::new()).await
}

pub async fn post(url: &str, body: impl Into<Bytes>) -> (u16, String) {
    send(Method::POST, url, body).await
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

pub fn testdata(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// Runs a Python client script from this folder with `arg` (an address), and
/// fails naming `what` with the script's output unless it exits 0 within 60 s.
pub async fn python_client(script: &str, arg: &str, what: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg(&path)
            .arg(arg)
            .output(),
    )
    .await
    .expect("the client finished within 60 s")
    .expect("python3 ran");
    assert!(
        out.status.success(),
        "{script} against the {what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
