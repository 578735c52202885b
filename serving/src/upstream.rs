//! The gateway's HTTP/1.1 client for its connections to replicas.
//!
//! The gateway's server side is hyper's. The side that talks to replicas is this small
//! client, with httparse (hyper's own parser) reading the responses, because a proxy
//! built on hyper's client spends about twice nginx's CPU per request (its dispatcher
//! task and channels, a body channel per response, a pool behind a lock; see the
//! serving section of `benches/RESULTS.md`), and the gateway is meant to be at least as
//! fast as nginx. It speaks only what a replica needs: one request at a time on a
//! keep-alive connection, bodies framed by `Content-Length`, responses framed by
//! `Content-Length`, chunked transfer coding or the end of the connection.
//!
//! ```text
//! send ─► idle connection of this thread for the replica? ── no ─► connect (timeout)
//!      ─► write head + body in one write
//!      ─► read the head (1xx skipped) ─► framing: none | length | chunked | until close
//!      ─► length ≤ `whole_up_to`: read whole, connection back to this thread's pool
//!         otherwise: a streamed body that owns the connection
//! ```
//!
//! A connection taken from the pool that turns out closed by the replica (it timed out
//! idle just as the request went out: the write fails, or the replica closes without a
//! byte of answer) is replaced by a new connection once. Idle connections live in a
//! pool per thread (the gateway runs one single-threaded runtime per core), so a
//! request and its connection stay on one thread, with no lock.
//!
//! An `https://` replica is reached over TLS ([`crate::replica_stream`]): the
//! handshake is part of connecting (within the connect timeout), and a
//! certificate the gateway does not trust fails the connection with a line
//! that says why.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::replica_stream::{self, ReplicaTls};

/// The longest response head read (status line and headers).
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// The most headers a response head may have.
const MAX_HEADERS: usize = 100;
/// Below this, the head and the body go out in one write (one copy of the body).
const ONE_WRITE_UP_TO: usize = 64 << 10;
/// Idle connections kept per replica and thread.
const MAX_IDLE_PER_REPLICA: usize = 1024;
/// Read buffer of a connection; a response that fits is read in one system call.
const READ_BUFFER: usize = 8 << 10;

/// What identifies a replica's idle connections: the gateway and the replica, both by
/// ids never reused within a process.
pub type PoolKey = (usize, u64);

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened: the request was not sent, and may go elsewhere.
    Connect(io::Error),
    /// The request may have reached the replica, which gave no usable answer; the
    /// message reads after "replica URL ", e.g. "broke off its response: ...".
    Failed(String),
}

/// A request as the gateway forwards it.
pub struct Request<'a> {
    pub method: &'a Method,
    /// Origin form: `/v2/models/m/infer?x=y`.
    pub path_and_query: &'a str,
    /// `host:port`, also sent as `Host`.
    pub authority: &'a str,
    /// For an `https://` replica: the name its certificate must hold.
    pub tls: Option<&'a ServerName<'static>>,
    /// End-to-end headers only: no `Host`, `Content-Length` or hop-by-hop ones.
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
}

/// A response: status, end-to-end headers, and its body.
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: ResponseBody,
}

pub enum ResponseBody {
    /// Read whole: the connection went back to the pool.
    Whole(Bytes),
    /// Still coming: the body owns the connection until it ends.
    Streamed(StreamedBody),
}

struct Conn {
    stream: replica_stream::Stream,
    /// Read buffer: `rbuf[..filled]` holds bytes read and not yet used.
    rbuf: Vec<u8>,
    filled: usize,
    /// The request being written.
    wbuf: Vec<u8>,
    idle_since: Instant,
}

impl Conn {
    fn new(stream: replica_stream::Stream) -> Conn {
        Conn {
            stream,
            rbuf: vec![0; READ_BUFFER],
            filled: 0,
            wbuf: Vec::with_capacity(1024),
            idle_since: Instant::now(),
        }
    }

    /// Whether an idle connection can carry a request: nothing arrived on it since its
    /// last response (no end of stream, no stray bytes), as far as the reactor knows;
    /// when the reactor's readiness is stale, one non-blocking read settles it.
    fn usable(&mut self) -> bool {
        self.stream.usable()
    }

    /// Reads more into `rbuf`, growing it (up to `max`) when full. Ready(Ok(0)) at the
    /// end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<usize>> {
        if self.filled == self.rbuf.len() {
            if self.rbuf.len() >= max {
                return Poll::Ready(Err(invalid(format!(
                    "response head is larger than {max} bytes"
                ))));
            }
            let grown = (self.rbuf.len() * 2).min(max);
            self.rbuf.resize(grown, 0);
        }
        let mut rb = ReadBuf::new(&mut self.rbuf[self.filled..]);
        std::task::ready!(Pin::new(&mut self.stream).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        self.filled += n;
        Poll::Ready(Ok(n))
    }

    async fn fill(&mut self, max: usize) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx, max)).await
    }

    /// Drops the first `n` buffered bytes.
    fn consume(&mut self, n: usize) {
        self.rbuf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }
}

struct Pools {
    idle: HashMap<PoolKey, Vec<Conn>>,
    last_sweep: Instant,
}

thread_local! {
    static POOLS: RefCell<Pools> = RefCell::new(Pools {
        idle: HashMap::new(),
        last_sweep: Instant::now(),
    });
}

/// The client: how long to wait for a connection and to keep one idle, and up to
/// which length responses are read whole.
#[derive(Debug, Clone)]
pub struct Client {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub whole_up_to: u64,
    /// TLS to `https://` replicas; None: the gateway reaches only `http://` ones.
    pub tls: Option<ReplicaTls>,
}

/// How a response's body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

struct Head {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

impl Client {
    /// Sends `req` to `key`'s replica at `req.authority` and reads the response.
    pub async fn send(&self, key: PoolKey, req: &Request<'_>) -> Result<Response, SendError> {
        if let Some(mut c) = self.take(key) {
            match exchange(&mut c, req).await {
                Ok(head) => return self.finish(key, c, req, head).await,
                // Closed while idle, before it could answer: a new connection, once.
                Err(Exchange::Stale) => {}
                Err(Exchange::Failed(e)) => return Err(SendError::Failed(e)),
            }
        }
        let mut c = self.connect(req).await.map_err(SendError::Connect)?;
        match exchange(&mut c, req).await {
            Ok(head) => self.finish(key, c, req, head).await,
            Err(Exchange::Stale) => Err(SendError::Failed(
                "closed the connection without a response".into(),
            )),
            Err(Exchange::Failed(e)) => Err(SendError::Failed(e)),
        }
    }

    /// A new connection to `req`'s replica: TCP, and TLS for an `https://` one,
    /// within the connect timeout.
    async fn connect(&self, req: &Request<'_>) -> io::Result<Conn> {
        let tls = match (req.tls, &self.tls) {
            (None, _) => None,
            (Some(name), Some(t)) => Some((name, t)),
            (Some(_), None) => {
                return Err(io::Error::other(
                    "the replica serves https, and the gateway has no CA to check its certificate: give the gateway --tls-ca",
                ))
            }
        };
        let open = async {
            let tcp = TcpStream::connect(req.authority).await?;
            tcp.set_nodelay(true)?;
            match tls {
                None => Ok(replica_stream::Stream::Plain(tcp)),
                Some((name, t)) => t.handshake(tcp, name, req.authority).await,
            }
        };
        let stream = tokio::time::timeout(self.connect_timeout, open)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no connection within {:.1}s",
                        self.connect_timeout.as_secs_f64()
                    ),
                )
            })??;
        Ok(Conn::new(stream))
    }

    /// Sends `req` on a connection of its own, which is closed afterwards, and
    /// returns the response's status (readiness probes: never pooled).
    pub async fn probe(&self, req: &Request<'_>) -> Result<StatusCode, SendError> {
        let mut c = self.connect(req).await.map_err(SendError::Connect)?;
        match exchange(&mut c, req).await {
            Ok(head) => Ok(head.status),
            Err(Exchange::Stale) => Err(SendError::Failed(
                "closed the connection without a response".into(),
            )),
            Err(Exchange::Failed(e)) => Err(SendError::Failed(e)),
        }
    }

    fn take(&self, key: PoolKey) -> Option<Conn> {
        POOLS.with_borrow_mut(|p| {
            let idle = p.idle.get_mut(&key)?;
            while let Some(mut c) = idle.pop() {
                if c.idle_since.elapsed() < self.idle_timeout && c.usable() {
                    return Some(c);
                }
            }
            None
        })
    }

    fn put(&self, key: PoolKey, mut conn: Conn) {
        let now = Instant::now();
        conn.idle_since = now;
        // An idle connection keeps small buffers, whatever its last request needed.
        if conn.wbuf.capacity() > 4 * READ_BUFFER {
            conn.wbuf = Vec::with_capacity(1024);
        }
        if conn.rbuf.len() > READ_BUFFER {
            conn.rbuf.truncate(READ_BUFFER);
            conn.rbuf.shrink_to_fit();
        }
        POOLS.with_borrow_mut(|p| {
            let idle = p.idle.entry(key).or_default();
            if idle.len() < MAX_IDLE_PER_REPLICA {
                idle.push(conn);
            }
            // Now and then, close what has been idle too long (replicas gone included).
            if now.duration_since(p.last_sweep) >= Duration::from_secs(1) {
                p.last_sweep = now;
                let timeout = self.idle_timeout;
                p.idle.retain(|_, conns| {
                    conns.retain(|c| now.duration_since(c.idle_since) < timeout);
                    !conns.is_empty()
                });
            }
        });
    }

    /// Reads the body whole (and pools the connection) or hands it over to stream.
    async fn finish(
        &self,
        key: PoolKey,
        mut conn: Conn,
        req: &Request<'_>,
        head: Head,
    ) -> Result<Response, SendError> {
        let framing = if *req.method == Method::HEAD {
            Framing::Empty
        } else {
            head.framing
        };
        let body = match framing {
            Framing::Empty => {
                if head.keep_alive && conn.filled == 0 {
                    self.put(key, conn);
                }
                ResponseBody::Whole(Bytes::new())
            }
            Framing::Length(n) if n <= self.whole_up_to => {
                let n = n as usize;
                let bytes = if conn.filled >= n {
                    let b = Bytes::copy_from_slice(&conn.rbuf[..n]);
                    conn.consume(n);
                    b
                } else {
                    let mut body = vec![0u8; n];
                    let mut got = conn.filled;
                    body[..got].copy_from_slice(&conn.rbuf[..got]);
                    conn.filled = 0;
                    while got < n {
                        match conn.stream.read(&mut body[got..]).await {
                            Ok(0) => {
                                return Err(SendError::Failed(format!(
                                    "broke off its response: the connection closed after {got} of {n} body bytes"
                                )))
                            }
                            Ok(k) => got += k,
                            Err(e) => {
                                return Err(SendError::Failed(format!(
                                    "broke off its response: {e} after {got} of {n} body bytes"
                                )))
                            }
                        }
                    }
                    Bytes::from(body)
                };
                // Bytes after the body were never asked for: that connection is spoiled.
                if head.keep_alive && conn.filled == 0 {
                    self.put(key, conn);
                }
                ResponseBody::Whole(bytes)
            }
            framing => ResponseBody::Streamed(StreamedBody::new(conn, framing)),
        };
        Ok(Response {
            status: head.status,
            headers: head.headers,
            body,
        })
    }
}

enum Exchange {
    /// The connection was closed before any byte of a response: it had been closed
    /// while idle.
    Stale,
    Failed(String),
}

/// Writes the request and reads the response head (skipping 1xx), leaving the bytes
/// after the head in `conn.rbuf`.
async fn exchange(conn: &mut Conn, req: &Request<'_>) -> Result<Head, Exchange> {
    write_head(&mut conn.wbuf, req);
    let body = req.body.as_ref();
    let written = if conn.wbuf.len() + body.len() <= ONE_WRITE_UP_TO {
        conn.wbuf.extend_from_slice(body);
        conn.stream.write_all(&conn.wbuf).await
    } else {
        match conn.stream.write_all(&conn.wbuf).await {
            Ok(()) => conn.stream.write_all(body).await,
            Err(e) => Err(e),
        }
    };
    // TLS may hold written bytes back: out they go (nothing to do for TCP).
    let written = match written {
        Ok(()) => conn.stream.flush().await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        return Err(match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Exchange::Stale,
            _ => Exchange::Failed(format!("failed: sending the request: {e}")),
        });
    }
    conn.filled = 0;
    let mut answered = false;
    loop {
        match parse_head(&conn.rbuf[..conn.filled]) {
            Ok(Some((len, head))) => {
                conn.consume(len);
                match head {
                    Some(head) => return Ok(head),
                    None => continue, // 1xx: the real answer follows.
                }
            }
            Ok(None) => {}
            Err(e) => return Err(Exchange::Failed(format!("sent a bad response: {e}"))),
        }
        match conn.fill(MAX_HEAD_BYTES).await {
            Ok(0) if !answered => return Err(Exchange::Stale),
            Ok(0) => return Err(Exchange::Failed("broke off its response head".into())),
            Ok(_) => answered = true,
            // A TLS replica that closed without close_notify reads as UnexpectedEof.
            Err(e)
                if !answered
                    && matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                    ) =>
            {
                return Err(Exchange::Stale)
            }
            Err(e) => {
                return Err(Exchange::Failed(format!(
                    "failed: reading the response: {e}"
                )))
            }
        }
    }
}

/// `METHOD path HTTP/1.1`, `Host`, the headers, `Content-Length`.
fn write_head(out: &mut Vec<u8>, req: &Request<'_>) {
    out.clear();
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(req.authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in req.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = matches!(
        *req.method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    if !req.body.is_empty() || !bodiless {
        use std::io::Write as _;
        // Writing to a Vec cannot fail.
        let _ = write!(out, "content-length: {}\r\n", req.body.len());
    }
    out.extend_from_slice(b"\r\n");
}

/// Parses a response head at the start of `buf`: Ok(None) when more bytes are needed,
/// Ok(Some((length, None))) for a 1xx to skip.
#[allow(clippy::type_complexity)]
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Option<Head>)>, String> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Left uninitialised: the parser writes the headers it finds (no 3 KiB to clear
    // for each response).
    let mut raw = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut raw);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("the response head is not valid HTTP/1.1: {e}")),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| format!("bad status code {code}"))?;
    if status.is_informational() {
        return Ok(Some((len, None)));
    }
    let mut keep_alive = resp.version == Some(1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_coded = false;
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("bad header name {:?}", h.name))?;
        match name.as_str() {
            "content-length" => {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        format!("bad content-length {:?}", String::from_utf8_lossy(h.value))
                    })?;
                if length.is_some_and(|l| l != n) {
                    return Err("two different content-length headers".into());
                }
                length = Some(n);
                continue;
            }
            "transfer-encoding" => {
                transfer_coded = true;
                chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                continue;
            }
            "connection" => {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    }
                }
                continue;
            }
            _ if crate::http::hop_by_hop(&name) => continue,
            _ => {}
        }
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| format!("bad value for header {}", name.as_str()))?;
        headers.append(name, value);
    }
    let framing = if matches!(code, 204 | 304) {
        Framing::Empty
    } else if transfer_coded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    Ok(Some((
        len,
        Some(Head {
            status,
            headers,
            framing,
            keep_alive,
        }),
    )))
}

/// Where a streamed body is in its framing.
#[derive(Debug, Clone, Copy)]
enum Stream {
    /// This many bytes still to come.
    Length(u64),
    UntilClose,
    /// The next thing is a chunk-size line.
    ChunkSize,
    /// This many bytes of the current chunk still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines, up to an empty one (trailers are dropped).
    Trailers,
    Done,
}

/// A response body read from the replica as the client takes it: a long or
/// unknown-length answer (token streams, server-sent events). The connection is
/// closed when it is dropped, ended or not.
pub struct StreamedBody {
    conn: Conn,
    state: Stream,
    /// Bytes of chunk-size and trailer lines read, against a limit.
    meta: usize,
}

/// The most bytes of chunk-size lines and trailers one body may have.
const MAX_CHUNK_META: usize = 64 << 10;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl StreamedBody {
    fn new(conn: Conn, framing: Framing) -> StreamedBody {
        let state = match framing {
            Framing::Empty => Stream::Done,
            Framing::Length(n) => Stream::Length(n),
            Framing::Chunked => Stream::ChunkSize,
            Framing::UntilClose => Stream::UntilClose,
        };
        StreamedBody {
            conn,
            state,
            meta: 0,
        }
    }

    /// The next line (without CRLF) if the buffer holds one; consumed.
    fn line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let buf = &self.conn.rbuf[..self.conn.filled];
        match buf.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                self.meta += i + 2;
                if self.meta > MAX_CHUNK_META {
                    return Err(invalid("chunk headers and trailers over 64 KiB"));
                }
                let line = buf[..i].to_vec();
                self.conn.consume(i + 2);
                Ok(Some(line))
            }
            None if self.meta + buf.len() > MAX_CHUNK_META => {
                Err(invalid("chunk headers and trailers over 64 KiB"))
            }
            None => Ok(None),
        }
    }

    /// Up to `max` buffered bytes as a frame.
    fn take(&mut self, max: u64) -> Bytes {
        let n = (self.conn.filled as u64).min(max) as usize;
        let b = Bytes::copy_from_slice(&self.conn.rbuf[..n]);
        self.conn.consume(n);
        b
    }

    /// One step: Some(frame), None at the end, or an error.
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            // What the buffer already allows.
            match self.state {
                Stream::Done => return Poll::Ready(Ok(None)),
                Stream::Length(0) => {
                    self.state = Stream::Done;
                    return Poll::Ready(Ok(None));
                }
                Stream::Length(n) if self.conn.filled > 0 => {
                    let b = self.take(n);
                    self.state = Stream::Length(n - b.len() as u64);
                    return Poll::Ready(Ok(Some(b)));
                }
                Stream::UntilClose if self.conn.filled > 0 => {
                    return Poll::Ready(Ok(Some(self.take(u64::MAX))))
                }
                Stream::ChunkData(n) if self.conn.filled > 0 => {
                    let b = self.take(n);
                    let left = n - b.len() as u64;
                    self.state = if left == 0 {
                        Stream::ChunkEnd
                    } else {
                        Stream::ChunkData(left)
                    };
                    return Poll::Ready(Ok(Some(b)));
                }
                Stream::ChunkEnd if self.conn.filled >= 2 => {
                    if &self.conn.rbuf[..2] != b"\r\n" {
                        return Poll::Ready(Err(invalid("no CRLF after a chunk")));
                    }
                    self.conn.consume(2);
                    self.state = Stream::ChunkSize;
                    continue;
                }
                Stream::ChunkSize => {
                    if let Some(line) = self.line()? {
                        let digits = line.split(|&b| b == b';').next().unwrap_or(&[]);
                        let size = std::str::from_utf8(digits)
                            .ok()
                            .map(str::trim_ascii)
                            .filter(|d| !d.is_empty() && d.len() <= 16)
                            .and_then(|d| u64::from_str_radix(d, 16).ok())
                            .ok_or_else(|| {
                                invalid(format!(
                                    "bad chunk size line {:?}",
                                    String::from_utf8_lossy(&line)
                                ))
                            })?;
                        self.state = if size == 0 {
                            Stream::Trailers
                        } else {
                            Stream::ChunkData(size)
                        };
                        continue;
                    }
                }
                Stream::Trailers => {
                    if let Some(line) = self.line()? {
                        if line.is_empty() {
                            self.state = Stream::Done;
                        }
                        continue;
                    }
                }
                _ => {}
            }
            // Need more bytes.
            // Only lines can fill the buffer (data is taken as it comes), and `line`
            // stops them at MAX_CHUNK_META, below this bound.
            match std::task::ready!(self.conn.poll_fill(cx, MAX_CHUNK_META + READ_BUFFER)) {
                Ok(0) => {
                    return Poll::Ready(match self.state {
                        Stream::UntilClose => {
                            self.state = Stream::Done;
                            Ok(None)
                        }
                        _ => Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the replica closed the connection before the end of the body",
                        )),
                    })
                }
                Ok(_) => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Body for StreamedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        match std::task::ready!(this.poll_step(cx)) {
            Ok(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => {
                // A broken body ends here; later polls see the end.
                this.state = Stream::Done;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, Stream::Done | Stream::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            Stream::Length(n) => SizeHint::with_exact(n),
            Stream::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    fn head(raw: &str) -> Head {
        match parse_head(raw.as_bytes()) {
            Ok(Some((len, Some(h)))) => {
                assert_eq!(len, raw.len());
                h
            }
            other => panic!(
                "{raw:?}: {:?}",
                other.map(|o| o.map(|(l, h)| (l, h.is_some())))
            ),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\nx-a: b\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(12));
        assert!(h.keep_alive);
        assert_eq!(h.headers.len(), 1, "content-length is not passed on");
        let h = head(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 5\r\n\r\n",
        );
        assert_eq!(h.framing, Framing::Chunked, "chunked wins over a length");
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        let h = head("HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n");
        assert_eq!(h.framing, Framing::Empty);
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n");
        assert!(!h.keep_alive, "HTTP/1.0 closes unless it says keep-alive");
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 3\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive);
    }

    #[test]
    fn informational_heads_are_skipped_and_partial_ones_wait() {
        assert!(matches!(
            parse_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
            Ok(Some((25, None)))
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-le"),
            Ok(None)
        ));
        assert!(matches!(parse_head(b""), Ok(None)));
    }

    #[test]
    fn bad_heads_are_errors_that_say_what() {
        for (raw, says) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
                "bad content-length",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                "two different content-length",
            ),
            ("SMTP ready\r\n\r\n", "not valid HTTP/1.1"),
            ("HTTP/1.1 099 Odd\r\n\r\n", "bad status code 99"),
        ] {
            match parse_head(raw.as_bytes()) {
                Err(e) => assert!(e.contains(says), "{raw:?}: {e}"),
                Ok(_) => panic!("{raw:?} was accepted"),
            }
        }
    }

    #[test]
    fn the_request_head_has_host_headers_and_length() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let body = Bytes::from_static(b"{}");
        let mut out = Vec::new();
        write_head(
            &mut out,
            &Request {
                method: &Method::POST,
                path_and_query: "/v2/models/m/infer?a=b",
                authority: "10.0.0.5:8000",
                tls: None,
                headers: &headers,
                body: &body,
            },
        );
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "POST /v2/models/m/infer?a=b HTTP/1.1\r\nhost: 10.0.0.5:8000\r\n\
             content-type: application/json\r\ncontent-length: 2\r\n\r\n"
        );
        let empty = Bytes::new();
        write_head(
            &mut out,
            &Request {
                method: &Method::GET,
                path_and_query: "/v2/models/m",
                authority: "h:1",
                tls: None,
                headers: &HeaderMap::new(),
                body: &empty,
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /v2/models/m HTTP/1.1\r\nhost: h:1\r\n\r\n",
            "a bodiless GET has no content-length"
        );
    }
    /// What a scripted replica does with a request: answer with these bytes (then
    /// close the connection or keep it), or close without a word.
    enum Act {
        Answer(&'static [u8], bool),
        Hangup,
    }

    /// A replica on a raw socket: `script(connection, request on it, request text)`
    /// says what to do; returns its address, the connections it accepted and the
    /// requests it read.
    async fn replica(
        script: fn(usize, usize, &str) -> Act,
    ) -> (String, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let conns = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c, s) = (conns.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let conn = c.fetch_add(1, Ordering::SeqCst);
                let seen = s.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for nth in 0..100 {
                        // One request: its head, then its Content-Length body.
                        let mut chunk = [0u8; 4096];
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        while buf.len() < head_end + len {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let request = String::from_utf8_lossy(&buf[..head_end + len]).to_string();
                        buf.drain(..head_end + len);
                        seen.lock().unwrap().push(request.clone());
                        match script(conn, nth, &request) {
                            Act::Answer(bytes, close) => {
                                if sock.write_all(bytes).await.is_err() || close {
                                    return;
                                }
                            }
                            Act::Hangup => return,
                        }
                    }
                });
            }
        });
        (addr, conns, seen)
    }

    fn client() -> Client {
        Client {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(90),
            whole_up_to: 1 << 20,
            tls: None,
        }
    }

    static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

    /// Sends `method path` with `body` and returns the response, its body read whole
    /// (streamed ones too), or the error's text.
    async fn call(
        c: &Client,
        key: PoolKey,
        addr: &str,
        method: Method,
        body: &'static str,
    ) -> Result<(u16, HeaderMap, String), String> {
        use http_body_util::BodyExt;
        let mut headers = HeaderMap::new();
        headers.insert("x-request", HeaderValue::from_static("yes"));
        let body = Bytes::from_static(body.as_bytes());
        let resp = c
            .send(
                key,
                &Request {
                    method: &method,
                    path_and_query: "/v2/models/m/infer",
                    authority: addr,
                    tls: None,
                    headers: &headers,
                    body: &body,
                },
            )
            .await
            .map_err(|e| match e {
                SendError::Connect(e) => format!("connect: {e}"),
                SendError::Failed(e) => e,
            })?;
        let bytes = match resp.body {
            ResponseBody::Whole(b) => b,
            ResponseBody::Streamed(s) => s.collect().await.map_err(|e| e.to_string())?.to_bytes(),
        };
        Ok((
            resp.status.as_u16(),
            resp.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        ))
    }

    fn key() -> PoolKey {
        (usize::MAX, NEXT_KEY.fetch_add(1, Ordering::Relaxed))
    }

    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-reply: 1\r\nconnection: keep-alive\r\n\r\nok";

    #[tokio::test]
    async fn keep_alive_connections_are_reused_one_request_at_a_time() {
        let (addr, conns, seen) = replica(|_, _, _| Act::Answer(OK, false)).await;
        let (c, k) = (client(), key());
        for _ in 0..10 {
            let (code, headers, body) = call(&c, k, &addr, Method::POST, "{}").await.unwrap();
            assert_eq!((code, body.as_str()), (200, "ok"));
            assert_eq!(headers.get("x-reply").unwrap(), "1");
            assert!(
                headers.get("connection").is_none(),
                "hop-by-hop headers stay behind"
            );
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        let first = seen.lock().unwrap()[0].clone();
        assert_eq!(
            first,
            format!(
                "POST /v2/models/m/infer HTTP/1.1\r\nhost: {addr}\r\nx-request: yes\r\n\
                 content-length: 2\r\n\r\n{{}}"
            )
        );
        // Another pool key (another replica or gateway) has its own connections.
        call(&c, key(), &addr, Method::POST, "{}").await.unwrap();
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_replica_closed_while_idle_is_replaced() {
        // Every connection carries one request, then the replica closes it without
        // saying so in the response.
        let (addr, conns, _) = replica(|_, _, _| Act::Answer(OK, true)).await;
        let (c, k) = (client(), key());
        for i in 0..5 {
            let r = call(&c, k, &addr, Method::POST, "{}").await;
            assert_eq!(r.map(|r| r.0), Ok(200), "request {i}");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_reused_connection_that_turns_out_closed_is_retried_once_on_a_new_one() {
        // The replica takes the second request of each connection and hangs up
        // without answering: as if its idle timeout struck as the request went out.
        let (addr, conns, seen) = replica(|_, nth, _| match nth {
            0 => Act::Answer(OK, false),
            _ => Act::Hangup,
        })
        .await;
        let (c, k) = (client(), key());
        assert_eq!(call(&c, k, &addr, Method::POST, "{}").await.unwrap().0, 200);
        assert_eq!(call(&c, k, &addr, Method::POST, "{}").await.unwrap().0, 200);
        assert_eq!(conns.load(Ordering::SeqCst), 2);
        assert_eq!(
            seen.lock().unwrap().len(),
            3,
            "sent twice: once on the stale one"
        );
        // A new connection that closes without an answer is an error, not a loop.
        let (addr, conns, _) = replica(|_, _, _| Act::Hangup).await;
        let err = call(&c, key(), &addr, Method::POST, "{}")
            .await
            .unwrap_err();
        assert_eq!(err, "closed the connection without a response");
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let err = call(&client(), key(), &addr, Method::POST, "{}")
            .await
            .unwrap_err();
        assert!(err.starts_with("connect: "), "{err}");
    }

    #[tokio::test]
    async fn bodies_are_framed_by_length_chunks_or_the_end_of_the_connection() {
        let (addr, conns, _) = replica(|_, _, req| {
            if req.contains("/chunked") {
                return Act::Answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                    5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n", false);
            }
            if req.starts_with("HEAD") {
                return Act::Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false);
            }
            if req.starts_with("GET") {
                return Act::Answer(
                    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 3\r\n\r\nabc",
                    false,
                );
            }
            Act::Answer(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", true)
        })
        .await;
        let (c, k) = (client(), key());
        let r = call(&c, k, &addr, Method::HEAD, "").await.unwrap();
        assert_eq!((r.0, r.2.as_str()), (200, ""), "a HEAD answer has no body");
        let r = call(&c, k, &addr, Method::GET, "").await.unwrap();
        assert_eq!((r.0, r.2.as_str()), (201, "abc"), "1xx skipped");
        assert_eq!(conns.load(Ordering::SeqCst), 1, "both on one connection");
        let r = call(&c, k, &addr, Method::POST, "{}").await.unwrap();
        assert_eq!(r.2, "until the end");
        let mut headers = HeaderMap::new();
        headers.insert("x-request", HeaderValue::from_static("yes"));
        let body = Bytes::new();
        let resp = c
            .send(
                k,
                &Request {
                    method: &Method::GET,
                    path_and_query: "/chunked",
                    authority: &addr,
                    tls: None,
                    headers: &headers,
                    body: &body,
                },
            )
            .await
            .ok()
            .unwrap();
        let ResponseBody::Streamed(s) = resp.body else {
            panic!("a chunked answer is streamed");
        };
        use http_body_util::BodyExt;
        let bytes = s.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello world");
    }

    #[tokio::test]
    async fn broken_answers_are_errors_that_say_what_broke() {
        let (addr, _, _) = replica(|_, _, req| {
            Act::Answer(
                if req.contains("x-request") && req.starts_with("POST") {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"
                } else if req.starts_with("GET") {
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"
                } else if req.starts_with("PUT") {
                    b"garbage\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel"
                },
                true,
            )
        })
        .await;
        let c = client();
        let err = call(&c, key(), &addr, Method::POST, "{}")
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "broke off its response: the connection closed after 5 of 10 body bytes"
        );
        let err = call(&c, key(), &addr, Method::GET, "").await.unwrap_err();
        assert!(err.contains("bad chunk size line \"zz\""), "{err}");
        let err = call(&c, key(), &addr, Method::PUT, "").await.unwrap_err();
        assert!(err.starts_with("sent a bad response: "), "{err}");
        let err = call(&c, key(), &addr, Method::DELETE, "")
            .await
            .unwrap_err();
        assert!(err.contains("before the end of the body"), "{err}");
    }
}
