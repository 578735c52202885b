//! The gpuctl side: a control plane of `gpu-scheduler` replicas (release
//! binaries, one data dir each, plaintext on loopback, no auth), and the
//! write a user makes: `Control.Apply` of a Secret, through the command
//! line's own client (`gpuctl::client`), which starts at the leader and
//! fails over between replicas on UNAVAILABLE as `gpuctl apply` does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gpuctl_proto::v1 as pb;

use super::load::Writer;
use super::procs::{free_ports, wait_until, Children};

/// How long the replicas get to elect a leader and write their ready files.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// `gpu-scheduler`'s arguments for replica `id` of a plaintext, no-auth
/// cluster whose replicas are `peers` (`1=127.0.0.1:P1,2=...`).
pub fn scheduler_args(id: u64, root: &Path, port: u16, peers: &str) -> Vec<String> {
    vec![
        "--id".into(),
        id.to_string(),
        "--data-dir".into(),
        root.join(format!("scheduler-{id}")).display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
        "--ready-file".into(),
        ready_file(root, id).display().to_string(),
        "--no-auth".into(),
        "--insecure".into(),
        "--peers".into(),
        peers.to_string(),
    ]
}

fn ready_file(root: &Path, id: u64) -> PathBuf {
    root.join(format!("scheduler-{id}.ready.json"))
}

/// A running control plane.
pub struct ControlPlane {
    children: Children,
    /// gRPC URL of replica `i + 1`.
    urls: Vec<String>,
}

impl ControlPlane {
    /// Start `replicas` replicas of `bin` under `root` and wait until every
    /// one has found the leader.
    pub fn start(bin: &Path, root: &Path, replicas: u64) -> anyhow::Result<ControlPlane> {
        std::fs::create_dir_all(root)?;
        let ports = free_ports(replicas as usize)?;
        let peers = ports
            .iter()
            .zip(1u64..)
            .map(|(p, id)| format!("{id}=127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Children::default();
        for (id, &port) in (1u64..).zip(&ports) {
            let mut cmd = Command::new(bin);
            cmd.args(scheduler_args(id, root, port, &peers));
            let log = root.join(format!("scheduler-{id}.log"));
            children.spawn(&format!("gpu-scheduler {id}"), cmd, &log)?;
        }
        wait_until(
            &mut children,
            "the gpuctl control plane",
            READY_WITHIN,
            || (1..=replicas).all(|id| ready_file(root, id).exists()),
        )?;
        let urls = ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        Ok(ControlPlane { children, urls })
    }

    /// Every replica's URL, the leader's first (the order the writers try
    /// them in), and the leader's id.
    pub async fn leader_first(&self) -> anyhow::Result<(u64, Vec<String>)> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            for url in &self.urls {
                let Ok(ch) = gpuctl::client::connect_one(url, Duration::from_secs(2)).await else {
                    continue;
                };
                let mut c = pb::control_client::ControlClient::new(ch);
                let Ok(s) = c.cluster_status(pb::ClusterStatusRequest {}).await else {
                    continue;
                };
                let leader = s.into_inner().leader_id;
                if leader >= 1 && leader as usize <= self.urls.len() {
                    let i = leader as usize - 1;
                    let mut order = vec![self.urls[i].clone()];
                    order.extend(
                        self.urls
                            .iter()
                            .enumerate()
                            .filter(|&(j, _)| j != i)
                            .map(|(_, u)| u.clone()),
                    );
                    return Ok((leader, order));
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "no gpuctl replica of {} knows a leader",
                    self.urls.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An error if a replica has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.children.check_running()
    }

    pub fn stop(mut self) {
        self.children.stop();
    }
}

/// One client writing Secrets through `Control.Apply`.
pub struct ApplyWriter {
    conn: gpuctl::client::Conn,
    /// Names are `PREFIX-SEQ`, distinct within a run.
    prefix: String,
    payload: std::sync::Arc<str>,
}

impl ApplyWriter {
    /// A writer with a connection of its own to `urls` (leader first).
    pub fn new(urls: Vec<String>, prefix: &str, payload: std::sync::Arc<str>) -> ApplyWriter {
        ApplyWriter {
            conn: gpuctl::client::Conn::new(urls),
            prefix: prefix.to_string(),
            payload,
        }
    }
}

impl Writer for ApplyWriter {
    async fn write(&mut self, seq: u64) -> anyhow::Result<()> {
        let name = format!("{}-{seq}", self.prefix);
        let req = pb::ApplyRequest {
            object_json: super::secret_document(&name, &self.payload),
            source: "<store-vs-etcd>".into(),
            ..Default::default()
        };
        gpuctl::client::create(&mut self.conn, &req)
            .await
            .map_err(|e| {
                let urls = self.conn.urls().to_vec();
                anyhow::anyhow!("apply secret {name}: {}", e.into_error(None, &urls))
            })
            .context("gpuctl")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_arguments() {
        let a = scheduler_args(
            2,
            Path::new("/r"),
            7202,
            "1=127.0.0.1:7201,2=127.0.0.1:7202",
        );
        assert_eq!(
            a.join(" "),
            "--id 2 --data-dir /r/scheduler-2 --listen 127.0.0.1:7202 --metrics-listen 127.0.0.1:0 \
             --ready-file /r/scheduler-2.ready.json --no-auth --insecure \
             --peers 1=127.0.0.1:7201,2=127.0.0.1:7202"
        );
    }
}
