//! The `gpuctl dev` gateway as the end-to-end tests call it: its address and a
//! TLS client that trusts the dev CA (both from the context), and one HTTPS
//! request on a fresh connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use super::DevCluster;

/// The gateway: its address, and TLS that trusts the dev CA.
#[derive(Clone)]
pub struct Gw {
    pub addr: String,
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Display for Gw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.addr)
    }
}

impl DevCluster {
    /// The gateway's `host:port` and the CA its certificate is checked
    /// against, from the context `gpuctl dev` wrote.
    pub fn gateway(&self) -> Gw {
        let text = std::fs::read_to_string(self.config().join("context.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let url = v["gateway"]
            .as_str()
            .expect("the context names the gateway");
        let addr = url
            .strip_prefix("https://")
            .expect("the gateway speaks https")
            .to_string();
        let ca = std::fs::read(v["ca"].as_str().expect("the context names the CA")).unwrap();
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Gw {
            addr,
            tls: Arc::new(cfg),
        }
    }
}

/// One HTTPS (HTTP/1.1) request on a fresh connection: (status, body).
pub fn https(gw: &Gw, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let addr = &gw.addr;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(gw.tls.clone(), name)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        // A peer that closes without a TLS close_notify, after answering.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
