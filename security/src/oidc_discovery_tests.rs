use std::collections::HashMap;
use std::sync::Mutex;

use gpuctl_testkit::oidc::IdTokenSigner as Signer;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::oidc::OidcConfig;

/// A local HTTPS issuer: path → (status, body), served with the dev CA's
/// certificate for 127.0.0.1.
struct Idp {
    url: String,
    ca: std::path::PathBuf,
    docs: Arc<Mutex<HashMap<String, (u16, String)>>>,
    _dir: tempfile::TempDir,
}

impl Idp {
    async fn start() -> Idp {
        let dir = tempfile::tempdir().unwrap();
        let files = crate::ca::ensure_dev(dir.path()).unwrap();
        let tls = crate::tls::TlsFiles {
            cert: Some(files.cert.clone()),
            key: Some(files.key.clone()),
            ca: Some(files.ca.clone()),
        }
        .load()
        .unwrap();
        let acceptor = tls.acceptor(None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let docs: Arc<Mutex<HashMap<String, (u16, String)>>> = Arc::default();
        let served = docs.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, docs) = (acceptor.clone(), served.clone());
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    let (code, body) = docs
                        .lock()
                        .unwrap()
                        .get(&path)
                        .cloned()
                        .unwrap_or((404, "not found".into()));
                    let reason = if code == 200 { "OK" } else { "Not Found" };
                    let resp = format!(
                        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Idp {
            url,
            ca: files.ca,
            docs,
            _dir: dir,
        }
    }

    fn serve(&self, path: &str, code: u16, body: String) {
        self.docs.lock().unwrap().insert(path.into(), (code, body));
    }

    /// The discovery document naming `issuer` and the keys at `/keys`.
    fn discovery(&self, issuer: &str, jwks_uri: &str) {
        let doc = json!({"issuer": issuer, "jwks_uri": jwks_uri}).to_string();
        self.serve("/.well-known/openid-configuration", 200, doc);
    }

    fn client(&self) -> Discovery {
        Discovery::new(&self.url, Some(&self.ca)).unwrap()
    }
}

#[tokio::test]
async fn keys_come_from_the_discovery_documents_jwks_uri() {
    let idp = Idp::start().await;
    let signer = Signer::new("k1");
    idp.discovery(&idp.url, &format!("{}/keys", idp.url));
    idp.serve("/keys", 200, Signer::jwks(&[&signer]));
    let keys = idp.client().fetch_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid.as_deref(), Some("k1"));
}

#[tokio::test]
async fn a_wrong_issuer_plain_http_keys_or_an_error_answer_is_refused_by_name() {
    let idp = Idp::start().await;
    let keys_url = format!("{}/keys", idp.url);
    idp.serve("/keys", 200, Signer::jwks(&[&Signer::new("k1")]));

    idp.discovery("https://someone-else.example", &keys_url);
    let e = idp.client().fetch_keys().await.unwrap_err();
    assert!(
        e.contains("names issuer \"https://someone-else.example\", not"),
        "{e}"
    );

    idp.discovery(&idp.url, "http://127.0.0.1:1/keys");
    let e = idp.client().fetch_keys().await.unwrap_err();
    assert!(
        e.contains("jwks_uri \"http://127.0.0.1:1/keys\" is not https://"),
        "{e}"
    );

    idp.discovery(&idp.url, &format!("{}/missing", idp.url));
    let e = idp.client().fetch_keys().await.unwrap_err();
    assert!(e.ends_with("/missing: answered 404 Not Found"), "{e}");

    idp.discovery(&idp.url, &keys_url);
    idp.serve("/keys", 200, "x".repeat(MAX_BYTES + 1));
    let e = idp.client().fetch_keys().await.unwrap_err();
    assert!(e.contains("/keys: reading the answer"), "{e}");

    idp.serve("/keys", 200, "{\"keys\": []}".into());
    let e = idp.client().fetch_keys().await.unwrap_err();
    assert!(
        e.ends_with("/keys: no RSA or EC signing key in \"keys\""),
        "{e}"
    );

    // A server the CA file does not vouch for.
    let other = tempfile::tempdir().unwrap();
    let other_ca = crate::ca::ensure_dev(other.path()).unwrap().ca;
    let e = Discovery::new(&idp.url, Some(&other_ca))
        .unwrap()
        .fetch_keys()
        .await
        .unwrap_err();
    assert!(e.contains(": TLS: "), "{e}");

    let e = Discovery::new("http://idp", Some(&idp.ca)).unwrap_err();
    assert!(e.contains("must start with https://"), "{e}");
    let e = Discovery::new(&idp.url, Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
    assert!(e.starts_with("/nonexistent/ca.pem: "), "{e}");
}

#[tokio::test]
async fn a_token_under_a_rotated_key_is_accepted_once_the_keys_are_fetched_again() {
    let idp = Idp::start().await;
    let (old, new) = (Signer::new("old"), Signer::new("new"));
    idp.discovery(&idp.url, &format!("{}/keys", idp.url));
    idp.serve("/keys", 200, Signer::jwks(&[&old]));
    let cfg = OidcConfig {
        issuer: idp.url.clone(),
        client_id: "gpuctl".into(),
        username_claim: "sub".into(),
        username_prefix: String::new(),
        keys: KeySet::default(),
        required_claims: Vec::new(),
        signing_algs: Vec::new(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let claims = json!({"iss": idp.url, "aud": "gpuctl", "sub": "alice", "exp": now / 1000 + 600});
    let e = cfg.verify(&old.token(&claims), now).unwrap_err();
    assert!(e.contains("not been fetched yet"), "{e}");

    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let pace = Pace {
        refresh: Duration::from_secs(3600),
        min_refetch: Duration::from_millis(20),
    };
    let task = tokio::spawn(keep_fresh(idp.client(), cfg.keys.clone(), pace, stop_rx));
    let accepted = |token: String| {
        let cfg = &cfg;
        async move {
            for _ in 0..250 {
                if cfg.verify(&token, now).is_ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        }
    };
    assert!(accepted(old.token(&claims)).await, "the first keys arrive");

    // The issuer rotates: a token under the new key is refused once, which
    // makes the fetcher go again long before its hourly refresh.
    idp.serve("/keys", 200, Signer::jwks(&[&new]));
    let e = cfg.verify(&new.token(&claims), now).unwrap_err();
    assert!(e.contains("no ES256 key with kid \"new\""), "{e}");
    assert!(
        accepted(new.token(&claims)).await,
        "the rotated keys arrive"
    );
    assert!(
        cfg.verify(&old.token(&claims), now).is_err(),
        "the old key is gone"
    );

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the fetcher stops")
        .unwrap();
}
