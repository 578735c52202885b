//! This replica's id and gRPC clients for the other replicas, following
//! membership changes; used to forward writes, heartbeats and load reports
//! to the leader.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use gpuctl_proto::v1::node_service_client::NodeServiceClient;
use gpuctl_proto::v1::raft_client::RaftClient;
use gpuctl_security::tls::{self, Tls};
use tonic::transport::Channel;

use crate::raft::Transport;

/// This replica's id and clients for the other replicas; follows
/// membership changes.
pub struct Peers {
    pub me: u64,
    clients: Mutex<PeerClients>,
    pub transport: Option<Transport>,
    /// TLS to the other replicas and to node daemons, or plaintext.
    tls: Option<Tls>,
}

#[derive(Default)]
struct PeerClients {
    channels: HashMap<u64, Channel>,
}

impl Peers {
    /// Clients for every peer in `addrs` (id → URL) other than `me`; lazy
    /// connections, so a peer that is down does not delay start-up.
    pub fn new(
        me: u64,
        addrs: &BTreeMap<u64, String>,
        transport: Option<Transport>,
        tls: Option<Tls>,
    ) -> Result<Peers, String> {
        let p = Peers {
            me,
            clients: Mutex::new(PeerClients::default()),
            transport,
            tls,
        };
        p.set(addrs)?;
        Ok(p)
    }

    /// Replace the set of replicas (after a membership change).
    pub fn set(&self, addrs: &BTreeMap<u64, String>) -> Result<(), String> {
        let mut channels = HashMap::new();
        for (&id, url) in addrs.iter().filter(|(id, _)| **id != self.me) {
            let ch = tls::endpoint(url, self.tls.as_ref())
                .map_err(|e| format!("peer {id}: {e}"))?
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(15))
                .tcp_nodelay(true)
                .connect_lazy();
            channels.insert(id, ch);
        }
        let mut c = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        c.channels = channels;
        if let Some(t) = &self.transport {
            t.set_peers(addrs);
        }
        Ok(())
    }

    fn channel(&self, id: u64) -> Option<Channel> {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .channels
            .get(&id)
            .cloned()
    }

    pub fn raft_client(&self, id: u64) -> Option<RaftClient<Channel>> {
        self.channel(id).map(RaftClient::new)
    }

    pub fn node_client(&self, id: u64) -> Option<NodeServiceClient<Channel>> {
        self.channel(id).map(NodeServiceClient::new)
    }

    pub fn control_client(
        &self,
        id: u64,
    ) -> Option<gpuctl_proto::v1::control_client::ControlClient<Channel>> {
        self.channel(id)
            .map(gpuctl_proto::v1::control_client::ControlClient::new)
    }

    /// `addr` (`host:port` or URL) with the scheme this cluster speaks
    /// (`https://` with TLS).
    pub fn url(&self, addr: &str) -> String {
        tls::url(addr, self.tls.is_some())
    }

    /// Connect to a node daemon's agent (`agent_endpoint`), with TLS when
    /// this replica has it; the agent requires our client certificate.
    pub async fn connect_agent(&self, url: &str) -> Result<Channel, String> {
        let ep = tls::endpoint(url, self.tls.as_ref())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(3));
        let u = tls::url(url, self.tls.is_some());
        match ep.connect().await {
            Ok(ch) => Ok(ch),
            Err(e) => {
                let ca = self.tls.as_ref().and_then(|t| t.ca_path());
                let plain = e.to_string();
                let why = tls::diagnose(&e, &u, ca);
                drop(e);
                Err(why.await.unwrap_or(plain))
            }
        }
    }

    pub fn is_cut_off(&self) -> bool {
        self.transport.as_ref().is_some_and(|t| t.is_cut_off())
    }
}
