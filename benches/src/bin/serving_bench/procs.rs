//! The processes and requests the serving benchmarks share: children killed on
//! drop, their CPU time, free ports, and one request on a fresh connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A child process killed on drop.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        benches::dev::stop_child(
            &mut self.0,
            nix::sys::signal::Signal::SIGTERM,
            Duration::from_secs(10),
        );
    }
}

/// CPU time (user, system) used so far by process `pid` and, recursively, the
/// processes it started (nginx's workers), from /proc; 0 where unreadable.
pub(crate) fn cpu_seconds(pid: u32) -> (f64, f64) {
    let (user, system) = cpu_ticks(pid);
    // Linux reports these in USER_HZ, 100 a second on every common configuration.
    (user as f64 / 100.0, system as f64 / 100.0)
}

/// (user, system) ticks of `pid` and its descendants.
pub(crate) fn cpu_ticks(pid: u32) -> (u64, u64) {
    let own = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or((0, 0), |stat| {
        // The fields after the command name (which may hold spaces) in parentheses;
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after ")".
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        (field(11), field(12))
    });
    let children: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    children
        .into_iter()
        .map(cpu_ticks)
        .fold(own, |(u, s), (cu, cs)| (u + cu, s + cs))
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) async fn wait_listening(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = one_request(addr, "GET", path, Bytes::new()).await {
            if r.0 == 200 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{addr}{path} not answering 200 after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request on a fresh connection: (status, body).
pub(crate) async fn one_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Bytes,
) -> anyhow::Result<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}
