//! Raft messages between replicas over tonic. One task per peer drains a
//! queue and writes batches to one long-lived `Raft.StepStream` stream to
//! that peer, without waiting for an answer between batches (messages are
//! pipelined, in order, as etcd's peer streams do). When a stream fails,
//! Raft is told the peer is unreachable (it retransmits on its own) and the
//! next batch opens a new one; a peer that lacks `StepStream` (an older
//! build) is sent unary `Raft.Step` calls instead. Messages are
//! fire-and-forget, so a slow peer never blocks the Raft thread: when its
//! stream's buffer is full, batches are dropped and the peer reported
//! unreachable.
//!
//! For fault tests, traffic to and from chosen peers can be dropped here
//! ([`Transport::set_cut_off`]), which is how a partition looks to Raft.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::raft_client::RaftClient;
use gpuctl_security::tls::{self, Tls};
use protobuf::Message as _;
use raft::prelude::Message;
use tokio::sync::mpsc::{self, unbounded_channel, UnboundedSender};
use tonic::transport::Channel;

/// Called with a peer id when sending to it failed.
pub type Unreachable = Arc<dyn Fn(u64) + Send + Sync>;

/// A peer's URL and the queue its sender task drains.
type PeerQueue = (String, UnboundedSender<Message>);

/// Batches buffered for one peer's stream before new ones are dropped.
const STREAM_BUFFER: usize = 1024;
/// Most Raft messages in one batch.
const MAX_BATCH: usize = 512;
/// Longest wait for a unary `Step` (the fallback for older peers).
const STEP_TIMEOUT: Duration = Duration::from_secs(3);

/// Outgoing Raft traffic of one replica.
#[derive(Clone)]
pub struct Transport {
    me: u64,
    /// Per peer: its URL and the queue its sender task drains.
    queues: Arc<Mutex<HashMap<u64, PeerQueue>>>,
    /// When set, this replica neither sends nor accepts peer traffic.
    cut_off: Arc<AtomicBool>,
    unreachable: Unreachable,
    /// TLS to the peers (presenting this replica's certificate), or plaintext.
    tls: Option<Tls>,
}

impl Transport {
    /// Start one sender task per peer (other than `me`). Must be called
    /// inside a tokio runtime. `peers` maps replica id → gRPC URL.
    pub fn start(
        me: u64,
        peers: &BTreeMap<u64, String>,
        unreachable: Unreachable,
        tls: Option<Tls>,
    ) -> Transport {
        let t = Transport {
            me,
            queues: Arc::new(Mutex::new(HashMap::new())),
            cut_off: Arc::new(AtomicBool::new(false)),
            unreachable,
            tls,
        };
        t.set_peers(peers);
        t
    }

    /// Follow a membership change: start senders for new peers (or new
    /// addresses) and stop those of removed peers.
    pub fn set_peers(&self, peers: &BTreeMap<u64, String>) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.retain(|id, (addr, _)| peers.get(id) == Some(addr));
        for (&id, addr) in peers.iter().filter(|(id, _)| **id != self.me) {
            if queues.contains_key(&id) {
                continue;
            }
            let (tx, rx) = unbounded_channel::<Message>();
            queues.insert(id, (addr.clone(), tx));
            let endpoint = match tls::endpoint(addr, self.tls.as_ref()) {
                // No per-call timeout: a stream lives as long as the peer
                // answers keep-alive pings.
                Ok(e) => e
                    .connect_timeout(Duration::from_millis(500))
                    .http2_keep_alive_interval(Duration::from_secs(1))
                    .keep_alive_timeout(Duration::from_secs(3))
                    .keep_alive_while_idle(true)
                    .tcp_nodelay(true),
                Err(e) => {
                    tracing::error!("peer {id}: bad address {addr:?}: {e}");
                    continue;
                }
            };
            let peer = Peer {
                me: self.me,
                id,
                addr: addr.clone(),
                client: RaftClient::new(endpoint.connect_lazy()),
                unreachable: self.unreachable.clone(),
                tls: self.tls.clone(),
                failing: Arc::new(AtomicBool::new(false)),
                unary: Arc::new(AtomicBool::new(false)),
                stream: None,
            };
            tokio::spawn(peer.run(rx, self.cut_off.clone()));
        }
    }

    /// Queue a message for its peer (dropped if the peer is unknown).
    pub fn send(&self, m: Message) {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, q)) = queues.get(&m.to) {
            let _ = q.send(m);
        }
    }

    /// Drop (true) or restore (false) all peer traffic of this replica.
    pub fn set_cut_off(&self, cut: bool) {
        self.cut_off.store(cut, Ordering::Relaxed);
    }

    pub fn is_cut_off(&self) -> bool {
        self.cut_off.load(Ordering::Relaxed)
    }
}

/// The sending side of one peer: its client, its open stream if any, and
/// whether it is failing (to log a change of reachability once).
struct Peer {
    me: u64,
    id: u64,
    addr: String,
    client: RaftClient<Channel>,
    unreachable: Unreachable,
    tls: Option<Tls>,
    /// Set while the peer cannot be reached; logged when it changes.
    failing: Arc<AtomicBool>,
    /// The peer answered `StepStream` with UNIMPLEMENTED: use `Step`.
    unary: Arc<AtomicBool>,
    /// The open stream's buffer; its task ends (and closes it) when the
    /// stream does.
    stream: Option<mpsc::Sender<pb::RaftBatch>>,
}

impl Peer {
    /// Drain the queue in batches until the peer is removed.
    async fn run(
        mut self,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Message>,
        cut: Arc<AtomicBool>,
    ) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            if cut.load(Ordering::Relaxed) {
                // A simulated partition: close the stream too, as a real
                // one would break it.
                self.stream = None;
                continue;
            }
            let messages = batch
                .iter()
                .filter_map(|m| m.write_to_bytes().ok())
                .collect();
            self.deliver(pb::RaftBatch {
                from: self.me,
                messages,
            })
            .await;
        }
    }

    async fn deliver(&mut self, batch: pb::RaftBatch) {
        if self.unary.load(Ordering::Relaxed) {
            return self.step(batch).await;
        }
        if self.stream.as_ref().is_none_or(|s| s.is_closed()) {
            // The last stream ended (its task reported why): open another.
            self.stream = Some(self.open());
        }
        let Some(stream) = &self.stream else { return };
        match stream.try_send(batch) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The peer does not keep up: drop, and let Raft probe it.
                tracing::debug!("peer {}: stream buffer full, batch dropped", self.id);
                (self.unreachable)(self.id);
            }
            Err(mpsc::error::TrySendError::Closed(batch)) => {
                // Ended just now; UNIMPLEMENTED sends this batch unary.
                self.stream = None;
                if self.unary.load(Ordering::Relaxed) {
                    self.step(batch).await;
                }
            }
        }
    }

    /// Open a stream to the peer; a task drives it until it ends and then
    /// reports a failure (or switches the peer to unary calls).
    fn open(&self) -> mpsc::Sender<pb::RaftBatch> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let mut client = self.client.clone();
        let (id, addr, failing, unary) = (
            self.id,
            self.addr.clone(),
            self.failing.clone(),
            self.unary.clone(),
        );
        let (unreachable, tls) = (self.unreachable.clone(), self.tls.clone());
        tokio::spawn(async move {
            let ended = async {
                let answer = client
                    .step_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await?;
                if failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("peer {id} at {addr} reachable again");
                }
                let mut answer = answer.into_inner();
                while answer.message().await?.is_some() {}
                Ok::<(), tonic::Status>(())
            }
            .await;
            match ended {
                Ok(()) => {}
                Err(s) if s.code() == tonic::Code::Unimplemented => {
                    tracing::info!(
                        "peer {id} at {addr} has no Raft.StepStream (an older build): sending unary Raft.Step calls"
                    );
                    unary.store(true, Ordering::Relaxed);
                }
                Err(s) => {
                    report_failure(id, &addr, tls.as_ref(), &failing, &s);
                    unreachable(id);
                }
            }
        });
        tx
    }

    /// Send one batch with a unary `Raft.Step` call and wait for its answer.
    async fn step(&mut self, batch: pb::RaftBatch) {
        let r = match tokio::time::timeout(STEP_TIMEOUT, self.client.step(batch)).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {STEP_TIMEOUT:?}"
            ))),
        };
        match r {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("peer {} at {} reachable again", self.id, self.addr);
                }
            }
            Err(s) => {
                report_failure(self.id, &self.addr, self.tls.as_ref(), &self.failing, &s);
                (self.unreachable)(self.id);
            }
        }
    }
}

/// Log that a peer became unreachable (once, until it is reachable again).
fn report_failure(id: u64, addr: &str, tls: Option<&Tls>, failing: &AtomicBool, s: &tonic::Status) {
    if failing.swap(true, Ordering::Relaxed) {
        return;
    }
    let url = tls::url(addr, tls.is_some());
    let ca = tls.and_then(|t| t.ca_path());
    let why = std::error::Error::source(s)
        .and_then(|e| tls::explain(e, &url, ca))
        .unwrap_or_else(|| s.message().to_string());
    tracing::warn!("peer {id} at {addr} unreachable: {why}");
}

/// Parse `1=http://127.0.0.1:7000,2=127.0.0.1:7002` into id → URL.
pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("peer {part:?}: expected ID=ADDRESS, e.g. 2=127.0.0.1:7002"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("peer {part:?}: the id must be a positive number"))?;
        if id == 0 {
            return Err(format!("peer {part:?}: ids start at 1"));
        }
        let addr = addr.trim();
        if addr.is_empty() {
            return Err(format!("peer {part:?}: missing address"));
        }
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        if out.insert(id, url).is_some() {
            return Err(format!("peer id {id} is listed twice"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse_peers;

    #[test]
    fn peers_parse() {
        let p = parse_peers("1=127.0.0.1:7000, 2=http://h:7002").unwrap();
        assert_eq!(p[&1], "http://127.0.0.1:7000");
        assert_eq!(p[&2], "http://h:7002");
        for bad in ["1", "x=h:1", "0=h:1", "1=", "1=a:1,1=b:2"] {
            assert!(parse_peers(bad).is_err(), "{bad}");
        }
    }
}
