//! Connecting to the scheduler and turning gRPC failures into [`Error`]s.

use std::time::Duration;

use gpuctl_proto::v1::control_client::ControlClient;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::error::Error;

/// How long one connection attempt may take before the next address is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub type Client = ControlClient<Channel>;

/// Connect to the first of `urls` that answers. When none does, the error
/// names every address tried and the last cause.
pub async fn connect(urls: &[String], timeout: Duration) -> Result<Client, Error> {
    let mut last_cause = String::from("no address given");
    for url in urls {
        match connect_one(url, timeout).await {
            Ok(ch) => return Ok(ControlClient::new(ch)),
            Err(cause) => last_cause = cause,
        }
    }
    Err(Error::Unreachable {
        addr: urls.join(", "),
        cause: last_cause,
    })
}

async fn connect_one(url: &str, timeout: Duration) -> Result<Channel, String> {
    let ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("invalid address ({e})"))?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    // The connect timeout covers TCP; the outer one also covers the HTTP/2
    // handshake with a peer that accepts and then says nothing.
    match tokio::time::timeout(timeout + Duration::from_secs(1), ep.connect()).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(short_cause(&e)),
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs())),
    }
}

/// The innermost cause of a transport error, phrased briefly:
/// `connection refused`, `timed out after 3s`, ...
pub fn short_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    let mut io_kind = None;
    loop {
        if let Some(io) = cur.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        match cur.source() {
            Some(next) => cur = next,
            None => break,
        }
    }
    use std::io::ErrorKind as K;
    match io_kind {
        Some(K::ConnectionRefused) => "connection refused".into(),
        Some(K::TimedOut) => "timed out".into(),
        Some(K::ConnectionReset) => "connection reset".into(),
        Some(K::AddrNotAvailable) => "address not available".into(),
        _ => {
            let s = cur.to_string();
            let s = s.split(" (os error").next().unwrap_or(&s).trim();
            if s.is_empty() {
                e.to_string()
            } else {
                s.to_lowercase()
            }
        }
    }
}

/// What a named object is, for NOT_FOUND messages.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub kind: &'static str,
    pub name: &'a str,
}

/// A gRPC status as the user should read it.
pub fn status_error(s: tonic::Status, target: Option<Target<'_>>, urls: &[String]) -> Error {
    match s.code() {
        Code::NotFound => match target {
            Some(t) => Error::NotFound {
                kind: t.kind,
                name: t.name.to_string(),
            },
            None => Error::Server(s.message().to_string()),
        },
        // A connection lost or refused after connecting reads like one that
        // never worked.
        Code::Unavailable if std::error::Error::source(&s).is_some() => Error::Unreachable {
            addr: urls.join(", "),
            cause: std::error::Error::source(&s)
                .map(short_cause)
                .unwrap_or_else(|| s.message().to_string()),
        },
        _ => {
            let m = s.message().trim();
            if m.is_empty() {
                Error::Server(format!("the server answered {:?}", s.code()))
            } else {
                Error::Server(m.replace('\n', "; "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unreachable_server_is_one_line_naming_the_address() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let e = connect(std::slice::from_ref(&url), CONNECT_TIMEOUT)
            .await
            .unwrap_err();
        let msg = format!("error: {e}");
        assert_eq!(
            msg,
            format!("error: cannot reach the gpuctl scheduler at {url}: connection refused; start one with \"gpuctl dev\" or set --server / GPUCTL_SERVER")
        );
        assert!(!msg.contains('\n'));
        assert_eq!(e.exit_code(), 1);
    }

    #[tokio::test]
    async fn every_address_is_tried() {
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            })
            .collect();
        let urls: Vec<String> = ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let e = connect(&urls, CONNECT_TIMEOUT).await.unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&urls[0]) && msg.contains(&urls[1]), "{msg}");
    }

    #[test]
    fn statuses_read_well() {
        let t = Some(Target {
            kind: "job",
            name: "x",
        });
        let e = status_error(tonic::Status::not_found("whatever"), t, &[]);
        assert_eq!(e.to_string(), "job \"x\" not found");
        let e = status_error(
            tonic::Status::already_exists("job \"x\" already exists"),
            t,
            &[],
        );
        assert_eq!(e.to_string(), "job \"x\" already exists");
        let e = status_error(tonic::Status::invalid_argument(""), None, &[]);
        assert!(e.to_string().contains("InvalidArgument"), "{e}");
    }
}
