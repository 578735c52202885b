//! The scheduler replicas this node talks to: one lazily connecting channel
//! each, which one to call now, and whether the last calls got through
//! (what `/healthz` reports). Every call carries this node's credential
//! ([`authorized`]); a refused one is replaced by joining again
//! ([`Servers::failed`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gpuctl_proto::v1::node_service_client::NodeServiceClient;
use gpuctl_proto::v1::JoinRequest;
use gpuctl_proto::LEADER_HEADER;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::credentials::{Bearer, Credentials, Refusal};
use super::retry::{brief, Backoff, Quiet};

/// A `NodeService` client whose calls carry the node's credential.
pub type NodeClient = NodeServiceClient<InterceptedService<Channel, Bearer>>;

/// One call: the replica it goes to and the credential it carries, for
/// [`Servers::failed`] and [`Servers::accepted`].
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// The replica's position in the list.
    pub index: usize,
    credential: u64,
}

/// The client of `channel` whose every call carries `authorization: Bearer
/// <credential>` (nothing without a credential).
fn authorized(channel: Channel, credential: Option<AsciiMetadataValue>) -> NodeClient {
    NodeServiceClient::with_interceptor(channel, Bearer(credential))
}

/// Errors of the agent's set-up (the loops themselves retry forever).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("--server: no scheduler address given")]
    NoServer,
    #[error("--server {url:?}: {reason}")]
    BadServer { url: String, reason: String },
}

/// The scheduler replicas, tried in order: a call that fails as if the
/// replica were down (or not the leader) moves on to the next one.
#[derive(Debug)]
pub struct Servers {
    /// The CA the scheduler is checked against, for messages.
    ca: Option<std::path::PathBuf>,
    urls: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
    /// When the scheduler last acknowledged a registration or heartbeat.
    pub contact: Contact,
    /// This node's name (what `Join` asks a credential for).
    node: String,
    credentials: Credentials,
    /// One join at a time, and re-joins paced.
    joining: tokio::sync::Mutex<Rejoins>,
}

/// How re-joins after refusals are paced and logged: a join token the
/// scheduler refuses is not tried again on every refused call.
#[derive(Debug, Default)]
struct Rejoins {
    backoff: RejoinBackoff,
    not_before: Option<tokio::time::Instant>,
    quiet: Quiet,
}

/// Capped doubling delay between failed re-joins: 1 s to 1 min.
#[derive(Debug)]
struct RejoinBackoff(Duration);

impl Default for RejoinBackoff {
    fn default() -> Self {
        RejoinBackoff(Duration::from_secs(1))
    }
}

impl RejoinBackoff {
    fn next_delay(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(60));
        d
    }
}

/// Whether this node is in touch with the scheduler, for `/healthz`.
#[derive(Debug, Default)]
pub struct Contact {
    /// ms since the epoch of the last acknowledged call; 0: never.
    last_ok_ms: std::sync::atomic::AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
    /// The heartbeat interval the scheduler asked for last, in ms (0: none yet).
    interval_ms: std::sync::atomic::AtomicU64,
}

impl Contact {
    pub fn ok(&self, now_ms: u64) {
        self.last_ok_ms.store(now_ms, Ordering::Relaxed);
    }

    /// ms since the epoch of the last acknowledged call; 0: never.
    pub fn last_ok_ms(&self) -> u64 {
        self.last_ok_ms.load(Ordering::Relaxed)
    }

    pub fn failed(&self, why: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// Record the heartbeat interval in force (a large fleet is asked for a
    /// longer one than configured).
    pub fn set_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.interval_ms.store(ms, Ordering::Relaxed);
    }

    /// Healthy when the scheduler acknowledged a call within `within`, or
    /// within five of the heartbeat intervals in force if that is longer.
    pub fn check(&self, now_ms: u64, within: Duration) -> Result<(), String> {
        let within =
            within.max(Duration::from_millis(self.interval_ms.load(Ordering::Relaxed)) * 5);
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        let error = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        if last == 0 {
            return Err(format!("not registered with the scheduler yet{error}"));
        }
        let quiet = now_ms.saturating_sub(last);
        if quiet > within.as_millis() as u64 {
            return Err(format!(
                "no heartbeat acknowledged by the scheduler for {:.1}s{error}",
                quiet as f64 / 1000.0
            ));
        }
        Ok(())
    }
}

impl Servers {
    /// Lazily connecting channels to each URL (`host:port` or a URL; its
    /// scheme follows `tls`), presenting our certificate when `tls` is set.
    pub fn new(
        urls: &[String],
        tls: Option<&gpuctl_security::tls::Tls>,
    ) -> Result<Servers, AgentError> {
        if urls.is_empty() {
            return Err(AgentError::NoServer);
        }
        let mut channels = Vec::new();
        for url in urls {
            let ep =
                gpuctl_security::tls::endpoint(url, tls).map_err(|e| AgentError::BadServer {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
            let ep = ep
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            channels.push(ep.connect_lazy());
        }
        Ok(Servers {
            ca: tls.and_then(|t| t.ca_path().map(std::path::Path::to_path_buf)),
            urls: urls.to_vec(),
            channels,
            current: AtomicUsize::new(0),
            contact: Contact::default(),
            node: String::new(),
            credentials: Credentials::none(),
            joining: tokio::sync::Mutex::default(),
        })
    }

    /// The same replicas over the same (lazily connecting) channels, for
    /// another node of this process (hollow nodes share connections), with
    /// its own contact record and no credentials yet.
    pub fn sharing(&self) -> Servers {
        Servers {
            ca: self.ca.clone(),
            urls: self.urls.clone(),
            channels: self.channels.clone(),
            current: AtomicUsize::new(self.current.load(Ordering::Relaxed)),
            contact: Contact::default(),
            node: String::new(),
            credentials: Credentials::none(),
            joining: tokio::sync::Mutex::default(),
        }
    }

    /// Calls of node `node` carry `credentials` (without: no token).
    pub fn with_credentials(mut self, node: &str, credentials: Credentials) -> Servers {
        self.node = node.to_string();
        self.credentials = credentials;
        self
    }

    /// The replica to call now, with this node's credential.
    pub fn client(&self) -> (Call, NodeClient) {
        let index = self.current.load(Ordering::Relaxed) % self.channels.len();
        let (credential, header) = self.credentials.snapshot();
        let call = Call { index, credential };
        (call, authorized(self.channels[index].clone(), header))
    }

    /// The scheduler answered `call`: its credential works. A following
    /// replica names the leader in its answer ([`LEADER_HEADER`]); when the
    /// leader is one of ours, the next calls go to it (writes sent to a
    /// follower cost a forwarding hop).
    pub fn accepted(&self, call: &Call, answer: &tonic::metadata::MetadataMap) {
        self.credentials.confirm(call.credential);
        let Some(leader) = answer.get(LEADER_HEADER).and_then(|v| v.to_str().ok()) else {
            return;
        };
        if let Some(next) = self
            .urls
            .iter()
            .position(|u| gpuctl_proto::same_replica(u, leader))
        {
            if next != call.index && self.move_from(call.index, next) {
                tracing::debug!(
                    "scheduler {} follows; calling the leader {} from now on",
                    self.urls[call.index],
                    self.urls[next]
                );
            }
        }
    }

    /// Call replica `next` from now on, unless another call already moved
    /// away from `from`; whether this moved it.
    fn move_from(&self, from: usize, next: usize) -> bool {
        self.current
            .compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// The URL of replica `i`, for messages.
    pub fn url(&self, i: usize) -> &str {
        &self.urls[i]
    }

    /// Why a call to replica `index` failed, in one line: a TLS mismatch said
    /// as such (plaintext against TLS, an unknown CA, ...), else the status.
    pub fn why(&self, index: usize, status: &Status) -> String {
        std::error::Error::source(status)
            .and_then(|e| gpuctl_security::tls::explain(e, self.url(index), self.ca.as_deref()))
            .unwrap_or_else(|| brief(status))
    }

    /// `call` failed: move on to the next replica if this one looks down
    /// or not leader; if the scheduler refused the credential, join again
    /// (once, with the join token) or log why not. The caller retries.
    pub async fn failed(&self, call: &Call, status: &Status) {
        self.rotate(call.index, status);
        if status.code() == Code::Unauthenticated
            && self.credentials.refused(call.credential, &brief(status)) == Refusal::Rejoin
        {
            self.rejoin(call.credential, status).await;
        }
    }

    fn rotate(&self, i: usize, status: &Status) {
        let rotate = matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
        );
        if rotate && self.channels.len() > 1 {
            let next = (i + 1) % self.channels.len();
            if self.move_from(i, next) {
                tracing::debug!(
                    "scheduler {} failed ({}); trying {}",
                    self.urls[i],
                    status.code(),
                    self.urls[next]
                );
            }
        }
    }
}

/// Whether `ours` (as given to `--server`: `host:port` or a URL) and the
/// leader's URL as the replicas name it are the same address.
impl Servers {
    /// Before the first call: with a join token and no credential yet,
    /// trade the join token for one (retried with backoff until the
    /// scheduler answers) and save it.
    pub async fn join_until_ok(&self) {
        if !self.credentials.must_join() {
            return;
        }
        let mut backoff = Backoff::default();
        let mut quiet = Quiet::default();
        loop {
            match self.join().await {
                Ok(()) => {
                    quiet.ok("Join");
                    return;
                }
                Err(why) => {
                    self.contact.failed(why.clone());
                    quiet.failed("Join", why);
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// The credential of generation `refused` was refused: join again, once
    /// (concurrent refusals of the same credential make one join; after a
    /// failed join, the next waits 1 s, doubling to 1 min).
    async fn rejoin(&self, refused: u64, status: &Status) {
        let mut pace = self.joining.lock().await;
        if self.credentials.snapshot().0 != refused {
            return;
        }
        let now = tokio::time::Instant::now();
        if pace.not_before.is_some_and(|t| now < t) {
            return;
        }
        if pace.not_before.is_none() {
            tracing::warn!(
                "the scheduler refused this node's credential in {} ({}); joining again with \
                 the join token in {}",
                self.credentials.token_file(),
                brief(status),
                self.credentials.join_token_file(),
            );
        }
        match self.join_as(true).await {
            Ok(()) => {
                pace.quiet.ok("Join");
                *pace = Rejoins::default();
                tracing::info!(
                    "node {} joined again; its new credential is in {}",
                    self.node,
                    self.credentials.token_file()
                );
            }
            Err(why) => {
                pace.quiet.failed("Join", why);
                pace.not_before = Some(now + pace.backoff.next_delay());
            }
        }
    }

    async fn join(&self) -> Result<(), String> {
        let _one = self.joining.lock().await;
        if !self.credentials.must_join() {
            return Ok(());
        }
        self.join_as(false).await?;
        tracing::info!(
            "node {} joined the cluster; its credential is in {}",
            self.node,
            self.credentials.token_file()
        );
        Ok(())
    }

    /// One `Join` with the join token; the credential it returns is saved
    /// and used from now on.
    async fn join_as(&self, after_refusal: bool) -> Result<(), String> {
        let Some(join) = self.credentials.join_header() else {
            return Err("no join token (--join-token-file)".into());
        };
        let index = self.current.load(Ordering::Relaxed) % self.channels.len();
        let mut client = NodeServiceClient::new(self.channels[index].clone());
        let mut request = Request::new(JoinRequest {
            node: self.node.clone(),
        });
        request.metadata_mut().insert("authorization", join.clone());
        let token = match client.join(request).await {
            Ok(resp) => resp.into_inner().token,
            Err(s) => {
                self.rotate(index, &s);
                let url = &self.urls[index];
                return Err(match s.code() {
                    Code::Unauthenticated | Code::PermissionDenied => format!(
                        "Join with {url}: the scheduler refused the join token in {}: {}",
                        self.credentials.join_token_file(),
                        brief(&s)
                    ),
                    _ => format!("Join with {url}: {}", brief(&s)),
                });
            }
        };
        self.credentials
            .replace(&token, after_refusal)
            .map_err(|e| format!("Join with {}: {e}", self.urls[index]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_while_the_scheduler_answers() {
        let c = Contact::default();
        let within = Duration::from_secs(10);
        c.failed("Register with http://s:7000: unavailable".into());
        let e = c.check(1_000, within).unwrap_err();
        assert_eq!(
            e,
            "not registered with the scheduler yet (last error: Register with http://s:7000: unavailable)"
        );
        c.ok(5_000);
        assert_eq!(c.check(15_000, within), Ok(()));
        let e = c.check(15_001, within).unwrap_err();
        assert!(
            e.starts_with("no heartbeat acknowledged by the scheduler for 10.0s"),
            "{e}"
        );
    }

    fn hint(url: &str) -> tonic::metadata::MetadataMap {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert(LEADER_HEADER, url.parse().unwrap());
        md
    }

    #[tokio::test]
    async fn calls_move_to_the_leader_a_follower_names() {
        let urls: Vec<String> = ["10.0.0.1:7000", "http://10.0.0.2:7000", "10.0.0.3:7000"]
            .map(String::from)
            .to_vec();
        let s = Servers::new(&urls, None).unwrap();
        let (call, _) = s.client();
        assert_eq!(call.index, 0);
        // An answer without the header (the leader's own) changes nothing.
        s.accepted(&call, &tonic::metadata::MetadataMap::new());
        assert_eq!(s.client().0.index, 0);
        // A leader this node does not know by that address is ignored.
        s.accepted(&call, &hint("http://10.9.9.9:7000"));
        assert_eq!(s.client().0.index, 0);
        // Replica 1 follows and names replica 3 (scheme and a trailing
        // slash aside, the same address as given to --server).
        s.accepted(&call, &hint("http://10.0.0.3:7000/"));
        let (call, _) = s.client();
        assert_eq!(call.index, 2);
        // A late answer of the call made before the move does not move it
        // back or elsewhere.
        s.accepted(
            &Call {
                index: 0,
                credential: 0,
            },
            &hint("http://10.0.0.2:7000"),
        );
        assert_eq!(s.client().0.index, 2);
        // The leader changed: its successor is named by the old one.
        s.accepted(&call, &hint("http://10.0.0.2:7000"));
        assert_eq!(s.client().0.index, 1);
    }

    #[test]
    fn a_longer_interval_from_the_scheduler_allows_a_longer_silence() {
        let c = Contact::default();
        let within = Duration::from_secs(10);
        c.ok(5_000);
        // A large fleet told to beat every 10 s: five intervals of silence.
        c.set_interval(Duration::from_secs(10));
        assert_eq!(c.check(55_000, within), Ok(()));
        let e = c.check(55_001, within).unwrap_err();
        assert!(
            e.starts_with("no heartbeat acknowledged by the scheduler for 50.0s"),
            "{e}"
        );
    }
}
