//! The gateway's connection to a replica: plain TCP for an `http://` replica,
//! TLS for an `https://` one (the replica's certificate, which its node
//! signed, checked against the cluster CA the gateway trusts).
//!
//! ```text
//! https://host:port ─► TCP connect ─► TLS handshake (SNI: host; chain: replica
//!                      leaf ─► node CA ─► cluster CA) ─► Stream::Tls
//! http://host:port  ─► TCP connect ─► Stream::Plain
//! ```

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How the gateway speaks TLS to replicas: the rustls client configuration
/// (the CA that signs the cluster's certificates) and that CA's file, for
/// messages.
#[derive(Clone)]
pub struct ReplicaTls {
    connector: tokio_rustls::TlsConnector,
    ca: PathBuf,
}

impl std::fmt::Debug for ReplicaTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaTls").field("ca", &self.ca).finish()
    }
}

impl ReplicaTls {
    /// From the gateway's TLS settings (its `--tls-ca`).
    pub fn new(tls: &gpuctl_security::tls::Tls) -> Result<ReplicaTls, String> {
        let cfg = tls.rustls_client().map_err(|e| e.to_string())?;
        Ok(ReplicaTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            ca: tls.ca_path().map(PathBuf::from).unwrap_or_default(),
        })
    }

    /// The TLS handshake on `tcp`, for `name`; a failure says in one line
    /// what was wrong with the replica's certificate.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        name: &ServerName<'static>,
        authority: &str,
    ) -> io::Result<Stream> {
        match self.connector.connect(name.clone(), tcp).await {
            Ok(s) => Ok(Stream::Tls(Box::new(s))),
            Err(e) => {
                let url = format!("https://{authority}");
                let why = gpuctl_security::tls::explain(&e, &url, Some(&self.ca))
                    .map(|line| {
                        line.replace("the server's certificate", "the replica's certificate")
                            .replace(
                                &format!("the server at {authority} does not speak TLS (started with --insecure?): connect with --insecure"),
                                "the replica does not speak TLS: serve HTTPS with $GPUCTL_TLS_CERT and $GPUCTL_TLS_KEY, or set the endpoint's server.tls: false",
                            )
                    })
                    .unwrap_or_else(|| e.to_string());
                Err(io::Error::new(
                    e.kind(),
                    format!("TLS handshake refused: {why}"),
                ))
            }
        }
    }
}

/// The name a replica's certificate must hold: the host of `host:port`.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string()).map_err(|e| format!("{host:?} is not a host name: {e}"))
}

/// One connection to a replica.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether an idle connection can carry a request: nothing arrived on it
    /// since its last response (no end of stream, no stray bytes). For TLS,
    /// one non-blocking read: TLS records that carry no data (session
    /// tickets) are taken in and leave it usable.
    pub fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self {
            Stream::Plain(s) => match s.poll_read_ready(&mut cx) {
                Poll::Pending => true,
                Poll::Ready(Err(_)) => false,
                Poll::Ready(Ok(())) => {
                    let mut probe = [0u8; 1];
                    matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
                }
            },
            Stream::Tls(s) => {
                let mut probe = [0u8; 1];
                let mut rb = ReadBuf::new(&mut probe);
                matches!(
                    Pin::new(s.as_mut()).poll_read(&mut cx, &mut rb),
                    Poll::Pending
                )
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
