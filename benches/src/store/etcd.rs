//! The etcd side: a static 3-member etcd cluster (Debian's `etcd-server`,
//! one data dir per member, plaintext on loopback, etcd's defaults
//! otherwise: every write fsynced), and a write through etcd's gRPC
//! `KV.Put`, from a minimal client generated from `proto/etcd_kv.proto`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tonic::transport::{Channel, Endpoint};

use super::load::Writer;
use super::procs::{free_ports, Children};

/// etcd's `etcdserverpb` messages and the `KV` and `Maintenance` clients.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("etcdserverpb");
}

/// How long the members get to elect a leader.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long dialling a member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One member's ports on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub struct MemberPorts {
    pub client: u16,
    pub peer: u16,
}

/// `--initial-cluster`: `m1=http://127.0.0.1:PEER1,m2=...`.
pub fn initial_cluster(ports: &[MemberPorts]) -> String {
    ports
        .iter()
        .zip(1..)
        .map(|(p, i)| format!("m{i}=http://127.0.0.1:{}", p.peer))
        .collect::<Vec<_>>()
        .join(",")
}

/// `etcd`'s arguments for member `i` (from 1) of a new static cluster.
pub fn member_args(i: usize, root: &Path, ports: &[MemberPorts]) -> Vec<String> {
    let me = ports[i - 1];
    let client = format!("http://127.0.0.1:{}", me.client);
    let peer = format!("http://127.0.0.1:{}", me.peer);
    vec![
        "--name".into(),
        format!("m{i}"),
        "--data-dir".into(),
        root.join(format!("m{i}")).display().to_string(),
        "--listen-client-urls".into(),
        client.clone(),
        "--advertise-client-urls".into(),
        client,
        "--listen-peer-urls".into(),
        peer.clone(),
        "--initial-advertise-peer-urls".into(),
        peer,
        "--initial-cluster".into(),
        initial_cluster(ports),
        "--initial-cluster-state".into(),
        "new".into(),
        "--initial-cluster-token".into(),
        "gpuctl-store-vs-etcd".into(),
    ]
}

/// A running etcd cluster.
pub struct EtcdCluster {
    children: Children,
    /// Client URL of member `i + 1`.
    urls: Vec<String>,
}

/// What the members agree on once they are up.
#[derive(Debug, Clone)]
pub struct Leader {
    pub url: String,
    /// The member's own version string (`Maintenance.Status`).
    pub version: String,
}

impl EtcdCluster {
    /// Start `members` members of `bin` under `root`.
    pub fn start(bin: &Path, root: &Path, members: usize) -> anyhow::Result<EtcdCluster> {
        std::fs::create_dir_all(root)?;
        let raw = free_ports(members * 2)?;
        let ports: Vec<MemberPorts> = raw
            .chunks(2)
            .map(|c| MemberPorts {
                client: c[0],
                peer: c[1],
            })
            .collect();
        let mut children = Children::default();
        for i in 1..=members {
            let mut cmd = Command::new(bin);
            cmd.args(member_args(i, root, &ports));
            children.spawn(&format!("etcd m{i}"), cmd, &root.join(format!("m{i}.log")))?;
        }
        let urls = ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{}", p.client))
            .collect();
        Ok(EtcdCluster { children, urls })
    }

    /// Wait until every member answers `Status` and names the same leader.
    pub async fn leader(&mut self) -> anyhow::Result<Leader> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            self.children.check_running()?;
            if let Some(l) = self.agreed_leader().await {
                return Ok(l);
            }
            if Instant::now() > deadline {
                bail!(
                    "the etcd members at {} did not agree on a leader within {}s",
                    self.urls.join(", "),
                    READY_WITHIN.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn agreed_leader(&self) -> Option<Leader> {
        let mut leader = None;
        let mut found = None;
        for url in &self.urls {
            let ch = connect(url).await.ok()?;
            let s = pb::maintenance_client::MaintenanceClient::new(ch)
                .status(pb::StatusRequest {})
                .await
                .ok()?
                .into_inner();
            if s.leader == 0 || leader.is_some_and(|l| l != s.leader) {
                return None;
            }
            leader = Some(s.leader);
            if s.header.as_ref().map(|h| h.member_id) == Some(s.leader) {
                found = Some(Leader {
                    url: url.clone(),
                    version: s.version,
                });
            }
        }
        found
    }

    /// An error if a member has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.children.check_running()
    }

    pub fn stop(mut self) {
        self.children.stop();
    }
}

/// A plaintext HTTP/2 connection to `url`.
pub async fn connect(url: &str) -> anyhow::Result<Channel> {
    let ep = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("etcd address {url}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), ep.connect())
        .await
        .map_err(|_| anyhow::anyhow!("connecting to etcd at {url}: timed out"))?
        .with_context(|| format!("connecting to etcd at {url}"))
}

/// One client writing keys through `KV.Put`.
pub struct PutWriter {
    kv: pb::kv_client::KvClient<Channel>,
    /// Keys are `/gpuctl-bench/PREFIX-SEQ`, distinct within a run.
    prefix: String,
    payload: std::sync::Arc<str>,
}

impl PutWriter {
    /// A writer with a connection of its own to the member at `url`.
    pub async fn connect(
        url: &str,
        prefix: &str,
        payload: std::sync::Arc<str>,
    ) -> anyhow::Result<PutWriter> {
        Ok(PutWriter {
            kv: pb::kv_client::KvClient::new(connect(url).await?),
            prefix: prefix.to_string(),
            payload,
        })
    }
}

impl Writer for PutWriter {
    async fn write(&mut self, seq: u64) -> anyhow::Result<()> {
        let name = format!("{}-{seq}", self.prefix);
        // The same document the gpuctl writer applies, stored as the value.
        let value = super::secret_document(&name, &self.payload).into_bytes();
        self.kv
            .put(pb::PutRequest {
                key: format!("/gpuctl-bench/{name}").into_bytes(),
                value,
                ..Default::default()
            })
            .await
            .with_context(|| format!("etcd put {name}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_bootstrap_arguments() {
        let ports = [
            MemberPorts {
                client: 2379,
                peer: 2380,
            },
            MemberPorts {
                client: 3379,
                peer: 3380,
            },
        ];
        assert_eq!(
            initial_cluster(&ports),
            "m1=http://127.0.0.1:2380,m2=http://127.0.0.1:3380"
        );
        let a = member_args(2, Path::new("/e"), &ports).join(" ");
        assert!(a.starts_with("--name m2 --data-dir /e/m2 "), "{a}");
        assert!(a.contains("--listen-client-urls http://127.0.0.1:3379 --advertise-client-urls http://127.0.0.1:3379"), "{a}");
        assert!(a.contains("--listen-peer-urls http://127.0.0.1:3380 --initial-advertise-peer-urls http://127.0.0.1:3380"), "{a}");
        assert!(a.contains("--initial-cluster-state new"), "{a}");
    }
}
