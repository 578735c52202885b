//! The issuer's keys fetched as the Kubernetes API server fetches them when
//! no keys file is given: `GET {issuer}/.well-known/openid-configuration`
//! over HTTPS (the server checked against `--oidc-ca-file`, or the system's
//! CAs), whose `issuer` must be the configured URL exactly, then `GET` its
//! `jwks_uri`. [`keep_fresh`] fetches again every [`REFRESH`], and soon
//! after a token names a key the set lacks (the issuer rotated its keys),
//! at most once per [`MIN_REFETCH`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;

use crate::oidc::{parse_jwks, Jwk, KeySet};

/// How often the keys are fetched again.
pub const REFRESH: Duration = Duration::from_secs(300);
/// The least time between two fetches, whatever asks for them.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// How long one document may take to arrive, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest document read.
pub const MAX_BYTES: usize = 1 << 20;

/// Where the system's CAs are, Debian's path and Red Hat's.
const SYSTEM_CAS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// An issuer to fetch keys from.
#[derive(Clone)]
pub struct Discovery {
    issuer: String,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl Discovery {
    /// `issuer` must be an `https://` URL; its server's certificate is
    /// checked against `ca_file`, or the system's CAs when none is given.
    pub fn new(issuer: &str, ca_file: Option<&Path>) -> Result<Discovery, String> {
        if !issuer.starts_with("https://") {
            return Err(format!(
                "the issuer URL {issuer:?} must start with https:// to fetch its keys (or give a keys file)"
            ));
        }
        let path = match ca_file {
            Some(p) => p,
            None => SYSTEM_CAS
                .iter()
                .map(Path::new)
                .find(|p| p.exists())
                .ok_or_else(|| {
                    format!(
                        "no system CA bundle ({}); give the issuer's CA with --oidc-ca-file",
                        SYSTEM_CAS.join(", ")
                    )
                })?,
        };
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let ca = crate::tls::certs("issuer's CA bundle", path, &pem).map_err(|e| e.to_string())?;
        let roots = crate::tls::roots(&ca)?;
        let cfg = crate::tls::http1_client(roots).map_err(|e| format!("TLS versions: {e}"))?;
        Ok(Discovery {
            issuer: issuer.to_string(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
        })
    }

    /// The issuer's signing keys, through its discovery document.
    pub async fn fetch_keys(&self) -> Result<Vec<Jwk>, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let doc: Value = serde_json::from_slice(&self.get(&url).await?)
            .map_err(|e| format!("{url}: not JSON: {e}"))?;
        let issuer = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
        if issuer != self.issuer {
            return Err(format!(
                "{url}: names issuer {issuer:?}, not {:?} (they must be the same string)",
                self.issuer
            ));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{url}: no \"jwks_uri\""))?;
        if !jwks_uri.starts_with("https://") {
            return Err(format!("{url}: jwks_uri {jwks_uri:?} is not https://"));
        }
        let body = self.get(jwks_uri).await?;
        let text = String::from_utf8(body).map_err(|_| format!("{jwks_uri}: not UTF-8"))?;
        parse_jwks(&text).map_err(|e| format!("{jwks_uri}: {e}"))
    }

    /// `GET url` (https), its body if the answer is 200; within [`TIMEOUT`].
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        tokio::time::timeout(TIMEOUT, self.get_now(url))
            .await
            .map_err(|_| format!("{url}: no answer within {TIMEOUT:?}"))?
    }

    async fn get_now(&self, url: &str) -> Result<Vec<u8>, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let host = uri.host().ok_or_else(|| format!("{url}: no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("{url}: cannot connect: {e}"))?;
        let name = ServerName::try_from(host.clone()).map_err(|e| format!("{url}: {e}"))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("{url}: TLS: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let conn = tokio::spawn(conn);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = uri.authority().map_or(host.as_str(), |a| a.as_str());
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("{url}: {e}"))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BYTES)
            .collect()
            .await
            .map_err(|e| format!("{url}: reading the answer: {e}"))?
            .to_bytes();
        conn.abort();
        if !status.is_success() {
            return Err(format!("{url}: answered {status}"));
        }
        Ok(body.to_vec())
    }
}

/// How often [`keep_fresh`] fetches.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Between two fetches when nothing asks for one sooner.
    pub refresh: Duration,
    /// The least time between two fetches.
    pub min_refetch: Duration,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace {
            refresh: REFRESH,
            min_refetch: MIN_REFETCH,
        }
    }
}

/// Fetch `keys` from `issuer` now, then again every `pace.refresh` and soon
/// after a token names a key they lack; until `shutdown` fires. A failed
/// fetch keeps the keys there are and is tried again after
/// `pace.min_refetch`.
pub async fn keep_fresh(
    issuer: Discovery,
    keys: KeySet,
    pace: Pace,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let wait = match issuer.fetch_keys().await {
            Ok(k) => {
                let n = k.len();
                if keys.replace(k) {
                    tracing::info!("OIDC: {n} signing key(s) from {}", issuer.issuer);
                }
                pace.refresh
            }
            Err(e) => {
                tracing::warn!("OIDC: cannot fetch the issuer's keys: {e}");
                pace.min_refetch
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pace.min_refetch) => {}
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(wait.saturating_sub(pace.min_refetch)) => {}
            _ = keys.missed() => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
#[path = "oidc_discovery_tests.rs"]
mod tests;
