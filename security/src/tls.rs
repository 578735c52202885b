//! TLS for every gpuctl listener and client: certificate files loaded once
//! into [`Tls`], which gives tonic's server and client configurations, a
//! `tokio_rustls` acceptor for the HTTP servers, and [`endpoint`] for a
//! tonic channel with the right scheme. [`explain`] and [`diagnose`] turn a
//! failed connection into one line that names the mismatch.
//!
//! Only the `ring` provider of rustls is used.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// How long a TLS handshake may take on the servers' side before the
/// connection is dropped, so a silent client cannot hold one.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The three certificate flags every process takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain this process presents (as a server, and as a
    /// client to the cluster's other processes).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// PEM certificate of the CA that signs the cluster's certificates:
    /// servers are checked against it, and so are client certificates.
    pub ca: Option<PathBuf>,
}

/// `--tls-cert/--tls-key/--tls-ca` or `--insecure`, the same on every
/// server binary.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// PEM certificate this process presents, as server and as client.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate of the cluster's CA (checks servers and client certificates).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Serve and call plaintext, without TLS (must be asked for explicitly).
    #[arg(long)]
    pub insecure: bool,
}

impl TlsArgs {
    /// The loaded certificates, or None with `--insecure`. Without either,
    /// an error that names the flags.
    pub fn load(&self) -> Result<Option<Tls>, TlsError> {
        let any = self.tls_cert.is_some() || self.tls_key.is_some() || self.tls_ca.is_some();
        if self.insecure {
            if any {
                return Err(TlsError::Flags(
                    "--insecure cannot be combined with --tls-cert, --tls-key or --tls-ca".into(),
                ));
            }
            return Ok(None);
        }
        let (Some(cert), Some(key), Some(ca)) = (&self.tls_cert, &self.tls_key, &self.tls_ca)
        else {
            return Err(TlsError::Flags(if any {
                "--tls-cert, --tls-key and --tls-ca go together: give all three".into()
            } else {
                "no TLS configured: give --tls-cert FILE --tls-key FILE --tls-ca FILE, or --insecure to run plaintext".into()
            }));
        };
        TlsFiles {
            cert: Some(cert.clone()),
            key: Some(key.clone()),
            ca: Some(ca.clone()),
        }
        .load()
        .map(Some)
    }
}

/// What can go wrong loading certificates or building a configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Flags(String),
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the {what} {path} {why}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("{0}")]
    Config(String),
}

/// Certificates loaded and checked once; cheap to clone.
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Loaded>,
}

struct Loaded {
    /// Our certificate chain and key, as PEM (tonic) and parsed (rustls).
    identity: Option<(Vec<u8>, Vec<u8>)>,
    chain: Vec<CertificateDer<'static>>,
    key: Option<PrivateKeyDer<'static>>,
    /// The CA certificate's file, PEM and parsed.
    ca: Option<(PathBuf, Vec<u8>, Vec<CertificateDer<'static>>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("identity", &self.inner.identity.is_some())
            .field("ca", &self.ca_path())
            .finish()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// A root store holding `ca`.
pub(crate) fn roots(ca: &[CertificateDer<'static>]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots
            .add(c.clone())
            .map_err(|e| format!("CA certificate: {e}"))?;
    }
    Ok(roots)
}

pub(crate) fn certs(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |why: String| TlsError::Invalid {
        what,
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            "holds no PEM certificate (BEGIN CERTIFICATE)".into(),
        ));
    }
    Ok(certs)
}

impl TlsFiles {
    /// Read and check the files: `cert` and `key` together (our identity),
    /// `ca` (what we trust).
    pub fn load(&self) -> Result<Tls, TlsError> {
        let mut loaded = Loaded {
            identity: None,
            chain: Vec::new(),
            key: None,
            ca: None,
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let cert_pem = read("certificate", cert)?;
                let key_pem = read("private key", key)?;
                loaded.chain = certs("certificate", cert, &cert_pem)?;
                let k = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Invalid {
                    what: "private key",
                    path: key.clone(),
                    why: format!("holds no usable PEM private key: {e}"),
                })?;
                let provider = rustls::crypto::ring::default_provider();
                let signer = provider
                    .key_provider
                    .load_private_key(k.clone_key())
                    .map_err(|e| TlsError::Invalid {
                        what: "private key",
                        path: key.clone(),
                        why: format!("cannot be used: {e}"),
                    })?;
                let ck = rustls::sign::CertifiedKey::new(loaded.chain.clone(), signer);
                if let Err(e) = ck.keys_match() {
                    return Err(TlsError::Invalid {
                        what: "private key",
                        path: key.clone(),
                        why: format!("does not belong to the certificate {}: {e}", cert.display()),
                    });
                }
                loaded.key = Some(k);
                loaded.identity = Some((cert_pem, key_pem));
            }
            (None, None) => {}
            _ => {
                return Err(TlsError::Flags(
                    "a certificate and its private key go together: give both".into(),
                ))
            }
        }
        if let Some(ca) = &self.ca {
            let pem = read("CA certificate", ca)?;
            let parsed = certs("CA certificate", ca, &pem)?;
            loaded.ca = Some((ca.clone(), pem, parsed));
        }
        Ok(Tls {
            inner: Arc::new(loaded),
        })
    }
}

/// Whether a server asks clients for a certificate signed by the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Clients without one are served too; those with one must present a
    /// valid one, and the server sees it (`Request::peer_certs`).
    Optional,
    /// The handshake fails without a valid client certificate.
    Required,
}

impl Tls {
    /// The CA file, for messages.
    pub fn ca_path(&self) -> Option<&Path> {
        self.inner.ca.as_ref().map(|(p, _, _)| p.as_path())
    }

    /// Whether we have a certificate to present.
    pub fn has_identity(&self) -> bool {
        self.inner.identity.is_some()
    }

    fn identity(&self) -> Option<Identity> {
        self.inner
            .identity
            .as_ref()
            .map(|(c, k)| Identity::from_pem(c, k))
    }

    /// tonic's server configuration: our identity, and client certificates
    /// checked against the CA as `auth` says.
    pub fn server_config(&self, auth: ClientAuth) -> Result<ServerTlsConfig, TlsError> {
        let identity = self.identity().ok_or_else(|| {
            TlsError::Config(
                "a TLS server needs a certificate and key (--tls-cert, --tls-key)".into(),
            )
        })?;
        let mut cfg = ServerTlsConfig::new()
            .identity(identity)
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some((_, pem, _)) = &self.inner.ca {
            cfg = cfg
                .client_ca_root(Certificate::from_pem(pem))
                .client_auth_optional(auth == ClientAuth::Optional);
        } else if auth == ClientAuth::Required {
            return Err(TlsError::Config(
                "requiring client certificates needs the CA that signs them (--tls-ca)".into(),
            ));
        }
        Ok(cfg)
    }

    /// tonic's client configuration: trust the CA, present our certificate
    /// when we have one; the name checked is `domain` or else the URL's host.
    pub fn client_config(&self, domain: Option<&str>) -> Result<ClientTlsConfig, TlsError> {
        let (_, pem, _) = self.inner.ca.as_ref().ok_or_else(|| {
            TlsError::Config(
                "no CA to check the server's certificate: give --ca FILE (or --tls-ca)".into(),
            )
        })?;
        let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        if let Some(id) = self.identity() {
            cfg = cfg.identity(id);
        }
        if let Some(d) = domain {
            cfg = cfg.domain_name(d);
        }
        Ok(cfg)
    }

    /// A rustls server configuration for hyper servers (HTTP/1.1 and h2
    /// by ALPN), with client certificates as `auth` says (None: not asked).
    pub fn rustls_server(
        &self,
        auth: Option<ClientAuth>,
    ) -> Result<rustls::ServerConfig, TlsError> {
        let key = self.inner.key.as_ref().ok_or_else(|| {
            TlsError::Config(
                "a TLS server needs a certificate and key (--tls-cert, --tls-key)".into(),
            )
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(format!("TLS versions: {e}")))?;
        let builder = match (auth, &self.inner.ca) {
            (None, _) | (Some(ClientAuth::Optional), None) => builder.with_no_client_auth(),
            (Some(a), Some((_, _, ca))) => {
                let roots = roots(ca).map_err(TlsError::Config)?;
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                let v = if a == ClientAuth::Optional {
                    v.allow_unauthenticated()
                } else {
                    v
                };
                builder.with_client_cert_verifier(
                    v.build()
                        .map_err(|e| TlsError::Config(format!("client certificate check: {e}")))?,
                )
            }
            (Some(ClientAuth::Required), None) => {
                return Err(TlsError::Config(
                    "requiring client certificates needs the CA that signs them (--tls-ca)".into(),
                ))
            }
        };
        let mut cfg = builder
            .with_single_cert(self.inner.chain.clone(), key.clone_key())
            .map_err(|e| TlsError::Config(format!("server certificate: {e}")))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }

    /// A rustls client configuration for HTTP/1.1 over TLS (the gateway's
    /// connections to replicas): servers are checked against the CA (their
    /// chain may pass through a node CA); no client certificate is sent.
    pub fn rustls_client(&self) -> Result<rustls::ClientConfig, TlsError> {
        let (_, _, ca) = self.inner.ca.as_ref().ok_or_else(|| {
            TlsError::Config("no CA to check the replicas' certificates: give --tls-ca FILE".into())
        })?;
        http1_client(roots(ca).map_err(TlsError::Config)?)
            .map_err(|e| TlsError::Config(format!("TLS versions: {e}")))
    }

    /// A `tokio_rustls` acceptor serving HTTP/1.1 with our identity.
    pub fn acceptor(
        &self,
        auth: Option<ClientAuth>,
    ) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(
            self.rustls_server(auth)?,
        )))
    }
}

/// A rustls client configuration for HTTP/1.1 that trusts `roots` and
/// sends no client certificate.
pub fn http1_client(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// `addr` (`host:port` or a URL) with the scheme TLS calls for:
/// `https://` when `tls`, `http://` otherwise.
pub fn url(addr: &str, tls: bool) -> String {
    let rest = addr
        .strip_prefix("https://")
        .or_else(|| addr.strip_prefix("http://"))
        .unwrap_or(addr);
    format!("{}://{rest}", if tls { "https" } else { "http" })
}

/// A tonic endpoint for `addr` (`host:port` or URL), its scheme set by
/// whether `tls` is given, and TLS applied. Used by every in-cluster
/// client (replicas, node daemons, the gateway).
pub fn endpoint(addr: &str, tls: Option<&Tls>) -> Result<Endpoint, TlsError> {
    let u = url(addr, tls.is_some());
    let ep = Endpoint::from_shared(u.clone())
        .map_err(|e| TlsError::Config(format!("invalid address {addr:?}: {e}")))?;
    match tls {
        Some(t) => ep
            .tls_config(t.client_config(None)?)
            .map_err(|e| TlsError::Config(format!("TLS for {u}: {e}"))),
        None => Ok(ep),
    }
}

/// An endpoint for a URL as given: `https://` uses TLS (and needs `tls`
/// with a CA), `http://` or no scheme is plaintext. What the CLI uses.
pub fn endpoint_for_url(url: &str, tls: Option<&Tls>) -> Result<Endpoint, TlsError> {
    if url.starts_with("https://") {
        let t = tls.ok_or_else(|| {
            TlsError::Config(
                "an https:// server needs the CA that signed its certificate: give --ca FILE (or `ca` in the context)".into(),
            )
        })?;
        endpoint(url, Some(t))
    } else {
        endpoint(url, None)
    }
}

/// The host part of a URL or `host:port`, for messages.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// Every message of an error's source chain, outermost first.
fn chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        out.push(format!("{e} {e:?}"));
        cur = e.source();
    }
    out
}

/// One line naming the TLS mismatch behind a failed connection to `url`
/// (`ca`: the CA file the client trusted), or None when the error is not
/// about TLS. Reads the rustls errors in the error's source chain.
pub fn explain(
    err: &(dyn std::error::Error + 'static),
    url: &str,
    ca: Option<&Path>,
) -> Option<String> {
    let all = chain(err).join(" | ");
    let ca = ca.map_or_else(
        || "the given CA file".to_string(),
        |p| p.display().to_string(),
    );
    let server = url
        .split_once("://")
        .map_or(url, |(_, r)| r)
        .trim_end_matches('/');
    if all.contains("InvalidContentType") || all.contains("invalid content type") {
        Some(format!(
            "the server at {server} does not speak TLS (started with --insecure?): connect with --insecure"
        ))
    } else if all.contains("UnknownIssuer") || all.contains("unknown issuer") {
        Some(format!(
            "the server's certificate is not signed by the CA in {ca} (unknown issuer)"
        ))
    } else if all.contains("NotValidForName") || all.contains("not valid for name") {
        Some(format!(
            "the server's certificate is not valid for {}",
            host_of(url)
        ))
    } else if all.contains("CertificateRequired")
        || all.contains("HandshakeFailure") && all.contains("AlertReceived")
    {
        Some("the server requires a client certificate".into())
    } else if all.contains("BadCertificate") || all.contains("UnknownCA") {
        Some(format!(
            "the server refused our client certificate (not signed by its CA; ours trusts {ca})"
        ))
    } else if all.contains("Connecting to HTTPS without TLS enabled") {
        Some(format!(
            "{url} speaks TLS: give the CA that signed its certificate (--ca FILE)"
        ))
    } else {
        None
    }
}

/// [`explain`], and for a plaintext (`http://`) client whose connection
/// failed after it was accepted, a probe: a TLS ClientHello sent to the
/// server; a TLS record in reply says the server speaks TLS. The future
/// borrows nothing, so it can be awaited while the error is gone.
pub fn diagnose(
    err: &(dyn std::error::Error + 'static),
    url: &str,
    ca: Option<&Path>,
) -> impl std::future::Future<Output = Option<String>> + Send + 'static {
    let explained = explain(err, url, ca);
    let all = chain(err).join(" | ");
    let refused = all.contains("ConnectionRefused") || all.contains("Connection refused");
    let addr = url.split_once("://").map_or(url, |(_, r)| r);
    let addr = addr.split('/').next().unwrap_or(addr).to_string();
    let probe = explained.is_none() && !url.starts_with("https://") && !refused;
    async move {
        if explained.is_some() || !probe {
            return explained;
        }
        if speaks_tls(&addr, Duration::from_secs(2)).await == Some(true) {
            Some(format!(
                "the server at {addr} speaks TLS: a plaintext client cannot talk to it; drop --insecure and give --ca"
            ))
        } else {
            None
        }
    }
}

/// Whether the server at `addr` (`host:port`) answers a TLS ClientHello
/// with a TLS record (handshake or alert): Some(true) it speaks TLS,
/// Some(false) it answered something else or closed, None unreachable.
pub async fn speaks_tls(addr: &str, limit: Duration) -> Option<bool> {
    let hello = client_hello(host_of(addr))?;
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(&hello).await.ok()?;
        let mut first = [0u8; 1];
        match s.read(&mut first).await {
            Ok(1) => Some(first[0] == 0x16 || first[0] == 0x15),
            _ => Some(false),
        }
    };
    tokio::time::timeout(limit, probe).await.ok().flatten()
}

/// The bytes of a TLS ClientHello for `host`, made by rustls itself.
fn client_hello(host: &str) -> Option<Vec<u8>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap_or_else(|_| {
        rustls::pki_types::ServerName::try_from("localhost").expect("a valid name")
    });
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).ok()?;
    let mut out = Vec::new();
    conn.write_tls(&mut out).ok()?;
    Some(out)
}

/// Accept one TLS connection for an HTTP server: within
/// [`HANDSHAKE_TIMEOUT`]; a client that speaks plaintext HTTP instead gets
/// a plain `400` that says to use https, and the connection is closed.
pub async fn accept_http(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    limit: Duration,
) -> Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, String> {
    let mut stream = stream;
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(limit, stream.peek(&mut first)).await;
    match peeked {
        Err(_) => return Err("no TLS handshake within the time limit".into()),
        Ok(Err(e)) => return Err(format!("reading the handshake: {e}")),
        Ok(Ok(0)) => return Err("closed before the handshake".into()),
        Ok(Ok(_)) if first[0] != 0x16 => {
            let body = "this port speaks HTTPS: use https:// (and the cluster's CA)\n";
            let reply = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(limit, stream.write_all(reply.as_bytes())).await;
            let _ = stream.shutdown().await;
            return Err("a plaintext request on the HTTPS port (answered 400)".into());
        }
        Ok(Ok(_)) => {}
    }
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Err(_) => Err("no TLS handshake within the time limit".into()),
        Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
        Ok(Ok(s)) => Ok(s),
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
