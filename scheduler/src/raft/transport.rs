//! Raft messages between replicas over tonic. One task per peer drains a
//! queue and sends batches with the `Raft.Step` RPC; a failed send tells
//! Raft the peer is unreachable (it retransmits on its own). Messages are
//! fire-and-forget, so a slow peer never blocks the Raft thread.
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
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

/// Called with a peer id when sending to it failed.
pub type Unreachable = Arc<dyn Fn(u64) + Send + Sync>;

/// A peer's URL and the queue its sender task drains.
type PeerQueue = (String, UnboundedSender<Message>);

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
            tokio::spawn(Self::sender(
                self.me,
                id,
                addr.clone(),
                rx,
                self.unreachable.clone(),
                self.cut_off.clone(),
                self.tls.clone(),
            ));
        }
    }

    async fn sender(
        me: u64,
        id: u64,
        addr: String,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Message>,
        unreachable: Unreachable,
        cut: Arc<AtomicBool>,
        tls: Option<Tls>,
    ) {
        {
            {
                let endpoint = match tls::endpoint(&addr, tls.as_ref()) {
                    Ok(e) => e
                        .connect_timeout(Duration::from_millis(500))
                        .timeout(Duration::from_secs(3))
                        .tcp_nodelay(true),
                    Err(e) => {
                        tracing::error!("peer {id}: bad address {addr:?}: {e}");
                        return;
                    }
                };
                let mut client = RaftClient::new(endpoint.connect_lazy());
                let mut failing = false;
                while let Some(first) = rx.recv().await {
                    let mut batch = vec![first];
                    while batch.len() < 512 {
                        match rx.try_recv() {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                    if cut.load(Ordering::Relaxed) {
                        continue;
                    }
                    let messages = batch
                        .iter()
                        .filter_map(|m| m.write_to_bytes().ok())
                        .collect();
                    match client.step(pb::RaftBatch { from: me, messages }).await {
                        Ok(_) => {
                            if failing {
                                tracing::info!("peer {id} at {addr} reachable again");
                            }
                            failing = false;
                        }
                        Err(e) => {
                            if !failing {
                                let url = tls::url(&addr, tls.is_some());
                                let ca = tls.as_ref().and_then(|t| t.ca_path());
                                let why = std::error::Error::source(&e)
                                    .and_then(|s| tls::explain(s, &url, ca))
                                    .unwrap_or_else(|| e.message().to_string());
                                tracing::warn!("peer {id} at {addr} unreachable: {why}");
                            }
                            failing = true;
                            unreachable(id);
                        }
                    }
                }
            }
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
