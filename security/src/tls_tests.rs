//! Real servers on 127.0.0.1:0 and real clients: each TLS mismatch and the
//! exact line [`explain`]/[`diagnose`] gives for it.

use super::*;
use crate::ca::{self, Ca};
use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::raft_client::RaftClient;
use gpuctl_proto::v1::raft_server::{Raft, RaftServer};
use tonic::{Request, Response, Status};

/// A peer service that answers `Step`, and says whether the caller
/// presented a certificate.
struct Echo;

#[tonic::async_trait]
impl Raft for Echo {
    async fn step(&self, req: Request<pb::RaftBatch>) -> Result<Response<pb::RaftAck>, Status> {
        if req.peer_certs().is_some_and(|c| !c.is_empty()) {
            Ok(Response::new(pb::RaftAck {}))
        } else {
            Err(Status::permission_denied("no client certificate"))
        }
    }
    async fn forward(
        &self,
        _req: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }
    type StepStreamStream = tokio_stream::Empty<Result<pb::RaftAck, Status>>;
    async fn step_stream(
        &self,
        _req: Request<tonic::Streaming<pb::RaftBatch>>,
    ) -> Result<Response<Self::StepStreamStream>, Status> {
        Err(Status::unimplemented("not here"))
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    files: ca::DevFiles,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let files = ca::ensure_dev(dir.path()).unwrap();
    Fixture { dir, files }
}

impl Fixture {
    fn server_tls(&self) -> Tls {
        self.files.tls_files().load().unwrap()
    }
    /// Trusts the dev CA, presents no certificate.
    fn ca_only(&self) -> Tls {
        TlsFiles {
            ca: Some(self.files.ca.clone()),
            ..TlsFiles::default()
        }
        .load()
        .unwrap()
    }
    /// A client that trusts another CA; returns the file's path too.
    fn other_ca(&self) -> (Tls, PathBuf) {
        let other = Ca::new("another CA").unwrap();
        let p = self.dir.path().join("other-ca.pem");
        ca::write_ca_cert(&other, &p).unwrap();
        let t = TlsFiles {
            ca: Some(p.clone()),
            ..TlsFiles::default()
        }
        .load()
        .unwrap();
        (t, p)
    }
}

/// Serve the peer service on 127.0.0.1:0, with TLS when given.
async fn serve(tls: Option<ServerTlsConfig>) -> (String, tokio::sync::oneshot::Sender<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut b = tonic::transport::Server::builder();
    if let Some(t) = tls {
        b = b.tls_config(t).unwrap();
    }
    let router = b.add_service(RaftServer::new(Echo));
    let incoming = tonic::transport::server::TcpIncoming::from(l);
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await;
    });
    (addr, tx)
}

/// Connect and call `Step`: Ok, or the error (transport or status).
async fn call(ep: Endpoint) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let ep = ep.connect_timeout(Duration::from_secs(3));
    let ch = tokio::time::timeout(Duration::from_secs(5), ep.connect())
        .await
        .map_err(|_| "connect timed out")??;
    let mut c = RaftClient::new(ch);
    tokio::time::timeout(
        Duration::from_secs(5),
        c.step(pb::RaftBatch {
            from: 1,
            messages: vec![],
        }),
    )
    .await
    .map_err(|_| "call timed out")??;
    Ok(())
}

async fn explained(
    url: &str,
    e: Box<dyn std::error::Error + Send + Sync>,
    ca: Option<&Path>,
) -> String {
    let e: &(dyn std::error::Error + 'static) = &*e;
    diagnose(e, url, ca)
        .await
        .unwrap_or_else(|| panic!("no explanation for {e:?}"))
}

#[tokio::test]
async fn mutual_tls_with_the_right_ca_works_and_the_server_sees_the_client_certificate() {
    let f = fixture();
    let tls = f.server_tls();
    let (addr, _stop) = serve(Some(tls.server_config(ClientAuth::Optional).unwrap())).await;
    call(endpoint(&addr, Some(&tls)).unwrap()).await.unwrap();
    // Without a client certificate the connection works, and the service
    // can tell (PERMISSION_DENIED from Echo).
    let e = call(endpoint(&addr, Some(&f.ca_only())).unwrap())
        .await
        .unwrap_err();
    let s = e.downcast_ref::<Status>().expect("a status");
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
}

#[tokio::test]
async fn a_plaintext_client_is_told_the_server_speaks_tls() {
    let f = fixture();
    let (addr, _stop) = serve(Some(
        f.server_tls().server_config(ClientAuth::Optional).unwrap(),
    ))
    .await;
    let url = format!("http://{addr}");
    let e = call(endpoint(&url, None).unwrap()).await.unwrap_err();
    assert_eq!(
        explained(&url, e, None).await,
        format!("the server at {addr} speaks TLS: a plaintext client cannot talk to it; drop --insecure and give --ca")
    );
    assert_eq!(speaks_tls(&addr, Duration::from_secs(2)).await, Some(true));
}

#[tokio::test]
async fn a_tls_client_is_told_the_server_does_not_speak_tls() {
    let f = fixture();
    let (addr, _stop) = serve(None).await;
    assert_eq!(speaks_tls(&addr, Duration::from_secs(2)).await, Some(false));
    let url = url(&addr, true);
    let e = call(endpoint(&url, Some(&f.ca_only())).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        explained(&url, e, f.ca_only().ca_path()).await,
        format!("the server at {addr} does not speak TLS (started with --insecure?): connect with --insecure")
    );
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_told_unknown_issuer() {
    let f = fixture();
    let (addr, _stop) = serve(Some(
        f.server_tls().server_config(ClientAuth::Optional).unwrap(),
    ))
    .await;
    let (other, path) = f.other_ca();
    let url = url(&addr, true);
    let e = call(endpoint(&url, Some(&other)).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        explained(&url, e, Some(&path)).await,
        format!(
            "the server's certificate is not signed by the CA in {} (unknown issuer)",
            path.display()
        )
    );
}

#[tokio::test]
async fn a_certificate_for_another_host_is_named() {
    let f = fixture();
    // A CA whose only leaf names another host.
    let other = Ca::new("gpuctl dev CA").unwrap();
    let leaf = other.issue(&["db.example"]).unwrap();
    let (cert, key, ca_path) = (
        f.dir.path().join("wrong.pem"),
        f.dir.path().join("wrong-key.pem"),
        f.dir.path().join("wrong-ca.pem"),
    );
    ca::write_leaf(&leaf, &cert, &key).unwrap();
    ca::write_ca_cert(&other, &ca_path).unwrap();
    let server = TlsFiles {
        cert: Some(cert),
        key: Some(key),
        ca: Some(ca_path.clone()),
    }
    .load()
    .unwrap();
    let (addr, _stop) = serve(Some(server.server_config(ClientAuth::Optional).unwrap())).await;
    let client = TlsFiles {
        ca: Some(ca_path.clone()),
        ..TlsFiles::default()
    }
    .load()
    .unwrap();
    let url = url(&addr, true);
    let e = call(endpoint(&url, Some(&client)).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        explained(&url, e, Some(&ca_path)).await,
        "the server's certificate is not valid for 127.0.0.1"
    );
}

#[tokio::test]
async fn a_server_that_requires_a_client_certificate_says_so() {
    let f = fixture();
    let (addr, _stop) = serve(Some(
        f.server_tls().server_config(ClientAuth::Required).unwrap(),
    ))
    .await;
    let url = url(&addr, true);
    let e = call(endpoint(&url, Some(&f.ca_only())).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        explained(&url, e, None).await,
        "the server requires a client certificate"
    );
    // With the cluster certificate it works.
    call(endpoint(&url, Some(&f.server_tls())).unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn https_without_a_ca_is_refused_before_connecting() {
    let e = endpoint_for_url("https://127.0.0.1:1", None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "an https:// server needs the CA that signed its certificate: give --ca FILE (or `ca` in the context)"
    );
    assert_eq!(url("127.0.0.1:7000", true), "https://127.0.0.1:7000");
    assert_eq!(url("https://h:1", false), "http://h:1");
    assert_eq!(host_of("https://[::1]:7000/x"), "::1");
    assert_eq!(host_of("localhost:7000"), "localhost");
}

#[test]
fn flags_need_all_three_files_or_insecure() {
    let none = TlsArgs::default();
    assert_eq!(
        none.load().unwrap_err().to_string(),
        "no TLS configured: give --tls-cert FILE --tls-key FILE --tls-ca FILE, or --insecure to run plaintext"
    );
    let some = TlsArgs {
        tls_cert: Some("c.pem".into()),
        ..TlsArgs::default()
    };
    assert_eq!(
        some.load().unwrap_err().to_string(),
        "--tls-cert, --tls-key and --tls-ca go together: give all three"
    );
    let both = TlsArgs {
        insecure: true,
        ..some
    };
    assert!(both
        .load()
        .unwrap_err()
        .to_string()
        .starts_with("--insecure cannot be combined"));
    let insecure = TlsArgs {
        insecure: true,
        ..TlsArgs::default()
    };
    assert!(insecure.load().unwrap().is_none());
}

/// An HTTP server on `accept_http`: answers every request with "ok".
async fn https_server(acceptor: tokio_rustls::TlsAcceptor, limit: Duration) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((s, _)) = l.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = accept_http(&acceptor, s, limit).await {
                    let mut buf = [0u8; 1024];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_http_acceptor_serves_tls_answers_plaintext_with_400_and_times_out_silence() {
    let f = fixture();
    let acceptor = f.server_tls().acceptor(None).unwrap();
    let addr = https_server(acceptor, Duration::from_millis(300)).await;
    // TLS with the dev CA.
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates({
        let mut r = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&f.files.ca).unwrap() {
            r.add(c.unwrap()).unwrap();
        }
        r
    })
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = String::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut got))
        .await
        .unwrap()
        .ok();
    assert!(
        got.starts_with("HTTP/1.1 200 OK") && got.ends_with("ok"),
        "{got}"
    );
    // Plaintext HTTP: a 400 that says what to do, then the end.
    let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = String::new();
    tokio::time::timeout(Duration::from_secs(5), plain.read_to_string(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
    assert!(
        got.ends_with("\r\n\r\nthis port speaks HTTPS: use https:// (and the cluster's CA)\n"),
        "{got}"
    );
    // A client that says nothing is dropped after the handshake limit.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the server closes a silent connection")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn errors_that_are_not_about_tls_get_no_explanation() {
    let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
    assert_eq!(explain(&refused, "https://127.0.0.1:1", None), None);
    // Nothing listens: no probe answer, no explanation.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let url = format!("http://{addr}");
    let e = call(endpoint(&url, None).unwrap()).await.unwrap_err();
    let e: &(dyn std::error::Error + 'static) = &*e;
    assert_eq!(diagnose(e, &url, None).await, None);
    assert_eq!(speaks_tls(&addr, Duration::from_secs(2)).await, None);
}
