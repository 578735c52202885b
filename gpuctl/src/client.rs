//! Connecting to the scheduler and turning gRPC failures into [`Error`]s;
//! [`create`] is the `Apply` that is safe to retry.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use gpuctl_proto::v1::control_client::ControlClient;
use gpuctl_proto::v1::{ApplyRequest, GetRequest, GetResponse};
use gpuctl_security::tls::{self, Tls, TlsFiles};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::error::Error;
pub use crate::error::ListTooLong;

/// How long one connection attempt may take before the next address is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

mod leader_hint;
use leader_hint::{next_replica, LeaderNote, Noting};

pub type Client = ControlClient<InterceptedService<Noting<Channel>, Bearer>>;

/// Puts `authorization: Bearer <token>` on every call (nothing without a
/// token).
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(<token>)"
        } else {
            "Bearer(none)"
        })
    }
}

impl Bearer {
    /// The header for `token` (none for `None` or an empty one); `source`
    /// names where the token came from, for the error when it cannot be a
    /// header.
    pub fn new(token: Option<&str>, source: &str) -> Result<Bearer, Error> {
        let Some(t) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Bearer(None));
        };
        let mut v: MetadataValue<Ascii> = format!("Bearer {t}").parse().map_err(|_| {
            Error::Other(format!(
                "the token from {source} has characters a header cannot carry; copy it again"
            ))
        })?;
        v.set_sensitive(true);
        Ok(Bearer(Some(v)))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Largest reply the CLI reads: listing thousands of nodes or jobs is more
/// than tonic's default of 4 MiB.
const MAX_REPLY_BYTES: usize = 1 << 30;

/// A `Control` client on `ch` that sends `bearer`'s token.
pub fn client_for(ch: Channel, bearer: &Bearer) -> Client {
    noting_client(ch, bearer, LeaderNote::default())
}

/// [`client_for`] that notes in `note` the leader a follower's answers name.
fn noting_client(ch: Channel, bearer: &Bearer, note: LeaderNote) -> Client {
    ControlClient::with_interceptor(Noting::new(ch, note), bearer.clone())
        .max_decoding_message_size(MAX_REPLY_BYTES)
}

/// How this process's connections use TLS: `https://` URLs are checked
/// against the CA (`--ca`, or `ca` in the context); `--insecure` makes
/// every connection plaintext.
#[derive(Clone, Default)]
pub struct Security {
    pub insecure: bool,
    tls: Option<Tls>,
}

impl Security {
    /// Load the CA file (when given); errors name the file.
    pub fn new(ca: Option<&Path>, insecure: bool) -> Result<Security, Error> {
        let tls = match ca {
            Some(p) if !insecure => Some(
                TlsFiles {
                    ca: Some(p.to_path_buf()),
                    ..TlsFiles::default()
                }
                .load()
                .map_err(|e| Error::Usage(format!("--ca: {e}")))?,
            ),
            _ => None,
        };
        Ok(Security { insecure, tls })
    }

    fn ca_path(&self) -> Option<PathBuf> {
        self.tls
            .as_ref()
            .and_then(|t| t.ca_path().map(Path::to_path_buf))
    }

    /// The URL as it is dialled: plaintext with `--insecure`.
    fn effective_url(&self, url: &str) -> String {
        if self.insecure {
            tls::url(url, false)
        } else {
            url.to_string()
        }
    }
}

static SECURITY: RwLock<Option<Security>> = RwLock::new(None);

/// Set how this process's connections use TLS (once, before connecting).
pub fn configure(security: Security) {
    *SECURITY.write().unwrap_or_else(|p| p.into_inner()) = Some(security);
}

/// The CA file this process's connections trust, if any.
pub fn configured_ca() -> Option<PathBuf> {
    security().ca_path()
}

fn security() -> Security {
    SECURITY
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default()
}

/// Connect to the first of `urls` that answers. When none does, the error
/// names every address tried and the last cause.
pub async fn connect(urls: &[String], timeout: Duration) -> Result<Client, Error> {
    let mut last = Dial::Failed(String::from("no address given"));
    for url in urls {
        match dial(url, timeout).await {
            Ok(ch) => return Ok(client_for(ch, &Bearer::default())),
            Err(d) => last = d,
        }
    }
    Err(last.into_error(urls))
}

/// Why dialling an address failed.
#[derive(Debug)]
pub enum Dial {
    /// Refused, timed out, ...: the short cause.
    Failed(String),
    /// A TLS mismatch, in one line ([`tls::explain`]).
    Tls(String),
}

impl Dial {
    fn into_error(self, urls: &[String]) -> Error {
        match self {
            Dial::Failed(cause) => Error::Unreachable {
                addr: urls.join(", "),
                cause,
            },
            Dial::Tls(cause) => Error::Tls {
                addr: urls.join(", "),
                cause,
            },
        }
    }
}

/// The endpoint for one scheduler URL, with TLS as [`configure`]d: the one
/// place the CLI's connections are built.
pub fn endpoint(url: &str, timeout: Duration) -> Result<Endpoint, Dial> {
    let sec = security();
    let url = sec.effective_url(url);
    let ep = tls::endpoint_for_url(&url, sec.tls.as_ref()).map_err(|e| match e {
        tls::TlsError::Config(m) if url.starts_with("https://") => Dial::Tls(m),
        e => Dial::Failed(format!("invalid address ({e})")),
    })?;
    Ok(ep.connect_timeout(timeout).tcp_nodelay(true))
}

/// Dial one address (TCP, TLS, HTTP/2) within `timeout` (plus a second).
pub async fn dial(url: &str, timeout: Duration) -> Result<Channel, Dial> {
    let ep = endpoint(url, timeout)?;
    // The connect timeout covers TCP; the outer one also covers the HTTP/2
    // handshake with a peer that accepts and then says nothing.
    match tokio::time::timeout(timeout + Duration::from_secs(1), ep.connect()).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => {
            let why = diagnose(&e, url);
            drop(e);
            Err(why.await)
        }
        Err(_) => Err(Dial::Failed(format!(
            "timed out after {}s",
            timeout.as_secs()
        ))),
    }
}

/// A transport failure on `url`: the TLS mismatch behind it when there is
/// one (probing the server for a plaintext client), else the short cause.
/// The future borrows nothing from `e`.
pub fn diagnose(
    e: &(dyn std::error::Error + 'static),
    url: &str,
) -> impl std::future::Future<Output = Dial> + Send + 'static {
    let sec = security();
    let url = sec.effective_url(url);
    let short = short_cause(e);
    let why = tls::diagnose(e, &url, sec.ca_path().as_deref());
    async move {
        match why.await {
            Some(m) => Dial::Tls(m),
            None => Dial::Failed(short),
        }
    }
}

pub async fn connect_one(url: &str, timeout: Duration) -> Result<Channel, String> {
    dial(url, timeout).await.map_err(|d| match d {
        Dial::Failed(m) | Dial::Tls(m) => m,
    })
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
            // The server says more than "not found" (where to look instead).
            Some(_) if s.message().contains("not found: ") => {
                Error::Server(s.message().to_string())
            }
            Some(t) => Error::NotFound {
                kind: t.kind,
                name: t.name.to_string(),
            },
            None => Error::Server(s.message().to_string()),
        },
        // A connection lost or refused after connecting reads like one that
        // never worked.
        Code::Unavailable | Code::Unknown if std::error::Error::source(&s).is_some() => {
            let sec = security();
            let url = urls
                .first()
                .map(|u| sec.effective_url(u))
                .unwrap_or_default();
            let src = std::error::Error::source(&s);
            match src.and_then(|e| tls::explain(e, &url, sec.ca_path().as_deref())) {
                Some(cause) => Error::Tls {
                    addr: urls.join(", "),
                    cause,
                },
                None => Error::Unreachable {
                    addr: urls.join(", "),
                    cause: src
                        .map(short_cause)
                        .unwrap_or_else(|| s.message().to_string()),
                },
            }
        }
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

/// How [`Conn::call`] retries: each address at most `per_address` times,
/// no new attempt after `budget` has passed since the first failure, and a
/// pause between rounds over the list that starts at `pause` and doubles up
/// to `max_pause`.
///
/// The defaults ride out a Raft election (a replica answers UNAVAILABLE at
/// once while it knows no leader; an election takes 1.2 to 2.4 s after the
/// leader stops): the pauses add up to 3.75 s before the fifth round.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub per_address: u32,
    pub budget: Duration,
    pub pause: Duration,
    pub max_pause: Duration,
    /// How long dialling one address may take.
    pub connect_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            per_address: 5,
            budget: Duration::from_secs(15),
            pause: Duration::from_millis(250),
            max_pause: Duration::from_secs(2),
            connect_timeout: CONNECT_TIMEOUT,
        }
    }
}

impl RetryPolicy {
    /// The pause after round `round` (from 0).
    pub fn pause_after(&self, round: u32) -> Duration {
        self.pause
            .saturating_mul(1u32 << round.min(16))
            .min(self.max_pause.max(self.pause))
    }
}

/// How many times [`Conn::call`] dials an address that refuses before it
/// gives that address up for the call.
pub const DIAL_TRIES: u32 = 2;

/// Why [`Conn::call`] gave up.
#[derive(Debug)]
pub enum CallError {
    /// A server answered with a status that retrying elsewhere would not
    /// change (NOT_FOUND, INVALID_ARGUMENT, ...), or every retry ended in
    /// UNAVAILABLE from a server (its message says why, e.g. no leader).
    Status(tonic::Status),
    /// No address could be dialled; the cause of the last failure.
    Connect(String),
    /// A TLS mismatch, in one line.
    Tls(String),
}

impl CallError {
    /// The error for the user; `target` names the object for NOT_FOUND.
    pub fn into_error(self, target: Option<Target<'_>>, urls: &[String]) -> Error {
        match self {
            CallError::Status(s) => status_error(s, target, urls),
            CallError::Connect(cause) => Error::Unreachable {
                addr: urls.join(", "),
                cause,
            },
            CallError::Tls(cause) => Error::Tls {
                addr: urls.join(", "),
                cause,
            },
        }
    }
}

/// Whether a failed call may succeed on another replica (or on the same one
/// a moment later): UNAVAILABLE (no leader yet, a follower cut off, the
/// connection refused or reset), or any status that carries a transport
/// error (the connection broke mid-call).
pub fn is_retryable(s: &tonic::Status) -> bool {
    s.code() == Code::Unavailable || std::error::Error::source(s).is_some()
}

/// The order [`Conn::call`] tries addresses in: from `start` round the list,
/// skipping those already tried `per_address` times. Empty when all are spent.
pub fn round_order(n: usize, start: usize, tried: &[u32], per_address: u32) -> Vec<usize> {
    (0..n)
        .map(|k| (start + k) % n)
        .filter(|&i| tried[i] < per_address)
        .collect()
}

/// A set of scheduler replicas that a command talks to: calls go to the
/// replica that answered last, or to the leader that a follower's answer
/// named, and move on to the next address when one is unavailable (see
/// [`Conn::call`]).
pub struct Conn {
    urls: Vec<String>,
    clients: Vec<Option<Client>>,
    current: usize,
    pub policy: RetryPolicy,
    bearer: Bearer,
    leader: LeaderNote,
}

impl Conn {
    pub fn new(urls: Vec<String>) -> Conn {
        Conn::with_policy(urls, RetryPolicy::default())
    }

    pub fn with_policy(urls: Vec<String>, policy: RetryPolicy) -> Conn {
        let clients = urls.iter().map(|_| None).collect();
        Conn {
            urls,
            clients,
            current: 0,
            policy,
            bearer: Bearer::default(),
            leader: LeaderNote::default(),
        }
    }

    /// The token this connection sends.
    pub fn bearer(&self) -> &Bearer {
        &self.bearer
    }

    /// Send `bearer`'s token on every call.
    pub fn with_bearer(mut self, bearer: Bearer) -> Conn {
        self.bearer = bearer;
        self
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The address the next call goes to first: the one that answered last,
    /// or the leader its answer named.
    pub fn current_url(&self) -> &str {
        &self.urls[self.current]
    }

    /// Run one unary call, `f(client)`, failing over between the addresses.
    ///
    /// A call that fails with a retryable status ([`is_retryable`]) or whose
    /// address cannot be dialled is tried on the next address; each address
    /// at most `policy.per_address` times ([`DIAL_TRIES`] if it cannot be
    /// dialled), with `policy.pause` between rounds,
    /// and no attempt starts later than `policy.budget` after the first
    /// failure (so a long `Wait` that succeeds is not cut short). `f` may run
    /// more than once: it must be safe to repeat (see `apply` for creates).
    pub async fn call<T, F, Fut>(&mut self, mut f: F) -> Result<T, CallError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let n = self.urls.len();
        if n == 0 {
            return Err(CallError::Connect("no address given".into()));
        }
        let mut tried = vec![0u32; n];
        // Dial failures per address: a replica that is down (or being
        // restarted) is given up sooner than one that answers UNAVAILABLE.
        let mut refused = vec![0u32; n];
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut last: Option<CallError> = None;
        let start = self.current;
        let mut round = 0;
        loop {
            let order = round_order(n, start, &tried, self.policy.per_address);
            if order.is_empty() {
                break;
            }
            for i in order {
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
                tried[i] += 1;
                let client = match &self.clients[i] {
                    Some(c) => c.clone(),
                    None => match dial(&self.urls[i], self.policy.connect_timeout).await {
                        Ok(ch) => {
                            let c = noting_client(ch, &self.bearer, self.leader.clone());
                            self.clients[i] = Some(c.clone());
                            c
                        }
                        Err(Dial::Tls(cause)) => {
                            // A mismatch that retrying will not change.
                            return Err(CallError::Tls(cause));
                        }
                        Err(Dial::Failed(cause)) => {
                            refused[i] += 1;
                            if refused[i] >= DIAL_TRIES {
                                tried[i] = self.policy.per_address;
                            }
                            deadline.get_or_insert_with(|| {
                                tokio::time::Instant::now() + self.policy.budget
                            });
                            last = Some(CallError::Connect(cause));
                            continue;
                        }
                    },
                };
                self.leader.take();
                let answer = f(client).await;
                let next = next_replica(&self.urls, i, self.leader.take().as_deref());
                match answer {
                    Ok(v) => {
                        self.current = next;
                        return Ok(v);
                    }
                    Err(s) if is_retryable(&s) => {
                        deadline.get_or_insert_with(|| {
                            tokio::time::Instant::now() + self.policy.budget
                        });
                        let why =
                            std::error::Error::source(&s).map(|src| diagnose(src, &self.urls[i]));
                        if let Some(why) = why {
                            // The connection broke: dial afresh next time.
                            self.clients[i] = None;
                            // A TLS mismatch (a plaintext client to a TLS
                            // server fails only here) will not go away.
                            if let Dial::Tls(cause) = why.await {
                                return Err(CallError::Tls(cause));
                            }
                        }
                        last = Some(CallError::Status(s));
                    }
                    Err(s) => {
                        self.current = next;
                        return Err(CallError::Status(s));
                    }
                }
            }
            let Some(d) = deadline else { break };
            let now = tokio::time::Instant::now();
            if now >= d {
                break;
            }
            tokio::time::sleep(self.policy.pause_after(round).min(d - now)).await;
            round += 1;
        }
        Err(last.unwrap_or_else(|| CallError::Connect("no address left to try".into())))
    }
}

/// How a create ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The server stored it on this call.
    Now,
    /// A retry found it already there: an earlier attempt of this same call
    /// was committed, but its answer was lost (say, the leader died after
    /// committing and before replying).
    ByEarlierAttempt,
}

/// `Apply` with failover. Retrying a create is safe: the object's name is
/// its identity, so a create cannot happen twice; if a retried attempt gets
/// ALREADY_EXISTS after this invocation already sent the object once, that
/// earlier attempt is taken to have succeeded and the create is reported as
/// done. (The only other way to see that is someone else creating the same
/// name in the same instant, which a first attempt would have reported.)
pub async fn create(
    conn: &mut Conn,
    req: &ApplyRequest,
) -> std::result::Result<Created, CallError> {
    let mut sent = 0u32;
    conn.call(|mut c| {
        sent += 1;
        let retried = sent > 1;
        let req = req.clone();
        async move {
            match c.apply(req).await {
                Ok(_) => Ok(Created::Now),
                Err(s) if retried && s.code() == tonic::Code::AlreadyExists => {
                    Ok(Created::ByEarlierAttempt)
                }
                Err(s) => Err(s),
            }
        }
    })
    .await
}

/// Jobs per page when a list of jobs is read in pages (kubectl's
/// `--chunk-size` default).
pub const LIST_CHUNK: u32 = 500;

/// Pages one list may take: 50 million jobs.
const MAX_PAGES: usize = 100_000;

/// Every job, read in pages of [`LIST_CHUNK`] as `kubectl get` reads a long
/// list (no single answer grows with the cluster's history, and the server
/// encodes one page per call); `get` answers one page's request. A server
/// that does not page answers the whole list at once, without a continue
/// token.
pub async fn list_jobs<E: From<ListTooLong>>(
    mut get: impl AsyncFnMut(GetRequest) -> std::result::Result<GetResponse, E>,
) -> std::result::Result<Vec<String>, E> {
    let mut out = Vec::new();
    let mut token = String::new();
    // Bounded: each page moves past at least one job.
    for _ in 0..MAX_PAGES {
        let page = get(GetRequest {
            kind: "jobs".into(),
            limit: LIST_CHUNK,
            continue_token: std::mem::take(&mut token),
            ..Default::default()
        })
        .await?;
        out.extend(page.objects_json);
        if page.continue_token.is_empty() {
            return Ok(out);
        }
        token = page.continue_token;
    }
    Err(ListTooLong {
        pages: MAX_PAGES,
        chunk: LIST_CHUNK,
    }
    .into())
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

    use crate::testserver::{closed_url, serve, Fake};
    use gpuctl_proto::v1::{ApplyRequest, GetRequest};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    fn quick() -> RetryPolicy {
        RetryPolicy {
            per_address: 2,
            pause: Duration::from_millis(20),
            max_pause: Duration::from_millis(20),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn pauses_back_off() {
        let p = RetryPolicy::default();
        let total: Duration = (0..p.per_address - 1).map(|r| p.pause_after(r)).sum();
        assert_eq!(total, Duration::from_millis(3750));
        assert_eq!(p.pause_after(10), Duration::from_secs(2));
        assert!(total < p.budget);
    }

    fn get_all() -> GetRequest {
        GetRequest {
            kind: "jobs".into(),
            ..Default::default()
        }
    }

    fn apply_req(name: &str) -> ApplyRequest {
        ApplyRequest {
            object_json: format!(r#"{{"metadata":{{"name":"{name}"}}}}"#),
            source: "<test>".into(),
            ..Default::default()
        }
    }

    #[test]
    fn rounds_start_at_the_last_good_address_and_skip_spent_ones() {
        assert_eq!(round_order(3, 0, &[0, 0, 0], 2), vec![0, 1, 2]);
        assert_eq!(round_order(3, 2, &[0, 0, 0], 2), vec![2, 0, 1]);
        assert_eq!(round_order(3, 1, &[2, 1, 2], 2), vec![1]);
        assert!(round_order(3, 0, &[2, 2, 2], 2).is_empty());
    }

    #[test]
    fn what_is_retried() {
        assert!(is_retryable(&tonic::Status::unavailable("no leader")));
        assert!(!is_retryable(&tonic::Status::not_found("x")));
        assert!(!is_retryable(&tonic::Status::already_exists("x")));
        assert!(!is_retryable(&tonic::Status::invalid_argument("x")));
    }

    #[tokio::test]
    async fn a_dead_address_is_skipped_and_the_good_one_kept() {
        let fake = Arc::new(Fake::default());
        let good = serve(fake.clone()).await;
        let mut conn = Conn::with_policy(vec![closed_url(), good.clone()], quick());
        for _ in 0..3 {
            conn.call(|mut c| async move { c.get(get_all()).await })
                .await
                .unwrap();
        }
        assert_eq!(conn.current_url(), good);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn unavailable_moves_on_to_the_next_replica() {
        let a = Arc::new(Fake::default());
        a.unavailable_first.store(100, Ordering::SeqCst);
        let b = Arc::new(Fake::default());
        let urls = vec![serve(a.clone()).await, serve(b.clone()).await];
        let mut conn = Conn::with_policy(urls.clone(), quick());
        conn.call(|mut c| async move { c.get(get_all()).await })
            .await
            .unwrap();
        assert_eq!(a.calls.load(Ordering::SeqCst), 1);
        assert_eq!(b.calls.load(Ordering::SeqCst), 1);
        assert_eq!(conn.current_url(), urls[1]);
    }

    #[tokio::test]
    async fn a_single_replica_is_retried_through_an_election() {
        let a = Arc::new(Fake::default());
        a.unavailable_first.store(1, Ordering::SeqCst);
        let mut conn = Conn::with_policy(vec![serve(a.clone()).await], quick());
        conn.call(|mut c| async move { c.get(get_all()).await })
            .await
            .unwrap();
        assert_eq!(a.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn other_errors_are_final_and_not_retried() {
        let a = Arc::new(Fake::default());
        let b = Arc::new(Fake::default());
        let urls = vec![serve(a.clone()).await, serve(b.clone()).await];
        let mut conn = Conn::with_policy(urls.clone(), quick());
        let req = GetRequest {
            kind: "jobs".into(),
            name: "nope".into(),
            ..Default::default()
        };
        let e = conn
            .call(|mut c| {
                let req = req.clone();
                async move { c.get(req).await }
            })
            .await
            .unwrap_err();
        let t = Some(Target {
            kind: "job",
            name: "nope",
        });
        assert_eq!(e.into_error(t, &urls).to_string(), "job \"nope\" not found");
        assert_eq!(
            a.calls.load(Ordering::SeqCst) + b.calls.load(Ordering::SeqCst),
            1
        );
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        // Every address refuses: each is tried at most twice, then the error
        // names them all.
        let urls = vec![closed_url(), closed_url(), closed_url()];
        let mut conn = Conn::with_policy(urls.clone(), quick());
        let mut calls = 0;
        let started = std::time::Instant::now();
        let e = conn
            .call(|mut c| {
                calls += 1;
                async move { c.get(get_all()).await }
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 0, "nothing to call: no address could be dialled");
        assert!(started.elapsed() < Duration::from_secs(5));
        let msg = e.into_error(None, &urls).to_string();
        assert!(
            urls.iter().all(|u| msg.contains(u)) && msg.contains("connection refused"),
            "{msg}"
        );

        // Always UNAVAILABLE: per-address limit (2 each), and the server's
        // explanation is what the user sees.
        let a = Arc::new(Fake::default());
        a.unavailable_first.store(100, Ordering::SeqCst);
        let b = Arc::new(Fake::default());
        b.unavailable_first.store(100, Ordering::SeqCst);
        let urls = vec![serve(a.clone()).await, serve(b.clone()).await];
        let mut conn = Conn::with_policy(urls.clone(), quick());
        let e = conn
            .call(|mut c| async move { c.get(get_all()).await })
            .await
            .unwrap_err();
        assert_eq!(a.calls.load(Ordering::SeqCst), 2);
        assert_eq!(b.calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            e.into_error(None, &urls).to_string(),
            "no leader yet; retry"
        );

        // The time budget stops retries even with attempts left.
        let c = Arc::new(Fake::default());
        c.unavailable_first.store(100, Ordering::SeqCst);
        let policy = RetryPolicy {
            per_address: 1000,
            budget: Duration::from_millis(300),
            pause: Duration::from_millis(50),
            max_pause: Duration::from_millis(50),
            connect_timeout: CONNECT_TIMEOUT,
        };
        let mut conn = Conn::with_policy(vec![serve(c.clone()).await], policy);
        let started = std::time::Instant::now();
        conn.call(|mut c| async move { c.get(get_all()).await })
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        let n = c.calls.load(Ordering::SeqCst);
        assert!((2..=10).contains(&n), "{n} calls");
    }

    #[tokio::test]
    async fn a_retried_create_that_finds_its_object_succeeded() {
        // The first attempt is committed but its answer lost (UNAVAILABLE);
        // the retry sees ALREADY_EXISTS and reports the create as done.
        let a = Arc::new(Fake {
            commit_then_fail: true,
            ..Fake::default()
        });
        a.unavailable_first.store(1, Ordering::SeqCst);
        let mut conn = Conn::with_policy(vec![serve(a.clone()).await], quick());
        let r = create(&mut conn, &apply_req("j1")).await.unwrap();
        assert_eq!(r, Created::ByEarlierAttempt);
        assert_eq!(a.calls.load(Ordering::SeqCst), 2);

        // A first attempt that finds the name taken is an error.
        let e = create(&mut conn, &apply_req("j1")).await.unwrap_err();
        assert!(matches!(e, CallError::Status(s) if s.code() == Code::AlreadyExists));
        assert_eq!(
            create(&mut conn, &apply_req("j2")).await.unwrap(),
            Created::Now
        );
    }
}
