//! The gateway over HTTPS with the dev CA: keep-alive requests on one TLS
//! connection, and a plaintext request answered with a clear 400.

use std::sync::Arc;
use std::time::Duration;

use gpuctl_security::ca;
use gpuctl_serving::gateway::{self, Gateway, GatewayConfig, NoScaleUp};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_rustls::rustls;

/// Read one HTTP/1.1 response with a content-length: (status line, body).
async fn response<R: tokio::io::AsyncRead + Unpin>(r: &mut BufReader<R>) -> (String, String) {
    let mut status = String::new();
    r.read_line(&mut status).await.unwrap();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.unwrap();
    (
        status.trim_end().to_string(),
        String::from_utf8(body).unwrap(),
    )
}

#[tokio::test]
async fn the_gateway_serves_https_with_keep_alive_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let files = ca::ensure_dev(dir.path()).unwrap();
    let tls = files.tls_files().load().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gw = Gateway::new(GatewayConfig::default(), Arc::new(NoScaleUp));
    gw.set_replicas("b", vec![]);
    gw.set_backoff("b", Some(Duration::from_secs(30)));
    tokio::spawn(gateway::serve_with(
        listener,
        gw,
        Some(tls.acceptor(None).unwrap()),
        std::future::pending(),
    ));

    // A client that trusts the dev CA, as curl --cacert does.
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&files.ca).unwrap();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let cfg = Arc::new(cfg);
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio_rustls::TlsConnector::from(cfg.clone()).connect(
                rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
                tcp,
            ),
        )
        .await
        .unwrap()
        .unwrap()
    };
    // `Connection: close`: answered, then closed (with TLS's close_notify).
    for req in [
        "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "POST /v2/models/b/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
    ] {
        let mut s = connect().await;
        s.write_all(req.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "not closed after {:?}", String::from_utf8_lossy(&got));
    }
    let mut conn = BufReader::new(connect().await);
    // Two requests on the one connection: HTTP/1.1 keep-alive over TLS.
    for _ in 0..2 {
        conn.get_mut()
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), response(&mut conn))
            .await
            .unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, "ok\n");
    }

    // Plaintext HTTP to the HTTPS port: a 400 that says what to do.
    let mut plain = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    plain
        .get_mut()
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), response(&mut plain))
        .await
        .unwrap();
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert_eq!(
        body,
        "this port speaks HTTPS: use https:// (and the cluster's CA)\n"
    );
}
