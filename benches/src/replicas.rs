//! What `cluster-scale` reads from the scheduler replicas of a `gpuctl dev`
//! cluster: their entries in `cluster.json`, the size of their data folders
//! on disk, a few of their metrics, and the time a restarted replica takes
//! to catch up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gpuctl_proto::v1 as pb;

use crate::dev::{ControlClient, Dev};

/// One scheduler replica as `gpuctl dev` recorded it in `cluster.json`.
#[derive(Debug, Clone)]
pub struct Replica {
    pub id: u64,
    pub pid: i32,
    /// `host:port` of its metrics server.
    pub metrics: String,
    pub data_dir: PathBuf,
}

/// The replicas in `STATE/cluster.json`.
pub fn replicas(state: &Path) -> anyhow::Result<Vec<Replica>> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(state.join("cluster.json"))?)?;
    v["schedulers"]
        .as_array()
        .context("schedulers in cluster.json")?
        .iter()
        .map(|s| {
            Ok(Replica {
                id: s["id"].as_u64().context("scheduler id")?,
                pid: s["pid"].as_i64().context("scheduler pid")? as i32,
                metrics: s["metrics"].as_str().unwrap_or_default().to_string(),
                data_dir: s["dataDir"].as_str().context("scheduler dataDir")?.into(),
            })
        })
        .collect()
}

/// Bytes of every file under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The `/metrics` text of a process's metrics server at `addr` (`host:port`);
/// over HTTPS checked against the CA file `ca` when one is given (`gpuctl dev`
/// serves every `/metrics` with TLS unless it runs `--insecure`).
pub fn scrape(addr: &str, ca: Option<&Path>) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let tcp = std::net::TcpStream::connect(addr).with_context(|| format!("metrics at {addr}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut body = String::new();
    match ca {
        None => {
            let mut s = tcp;
            s.write_all(request.as_bytes())?;
            s.read_to_string(&mut body)?;
        }
        Some(ca) => {
            let tls = gpuctl_security::tls::TlsFiles {
                cert: None,
                key: None,
                ca: Some(ca.to_path_buf()),
            }
            .load()?;
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .with_context(|| format!("a TLS name for {host}"))?;
            let conn = rustls::ClientConnection::new(Arc::new(tls.rustls_client()?), name)?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(request.as_bytes())?;
            // A server that closes without close_notify ends the body too.
            match s.read_to_string(&mut body) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !body.is_empty() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(body)
}

/// Sum of the samples of metric `name` whose labels contain `label`
/// (e.g. `command="Bind"`; empty for any).
pub fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(k, _)| {
            let metric = k.split('{').next().unwrap_or(k);
            metric == name && k.contains(label)
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

/// Mean of histogram `name` (seconds → ms) over the samples matching
/// `label`, and their count.
pub fn mean_ms(text: &str, name: &str, label: &str) -> (f64, f64) {
    let n = metric(text, &format!("{name}_count"), label);
    let sum = metric(text, &format!("{name}_sum"), label);
    (if n > 0.0 { sum / n * 1e3 } else { f64::NAN }, n)
}

/// The figures of one replica's metrics that show where a write's time
/// goes: mean commit time per command, read barriers, synced appends, and
/// how many proposals share an append.
pub fn raft_profile(text: &str) -> serde_json::Value {
    let cmd = "gpuctl_scheduler_command_duration_seconds";
    let mut out = serde_json::Map::new();
    for c in ["SubmitJob", "Bind", "TaskReport", "RegisterNode"] {
        let (ms, n) = mean_ms(text, cmd, &format!("command=\"{c}\""));
        if n > 0.0 {
            out.insert(format!("{c}_mean_ms"), ms.into());
            out.insert(format!("{c}_count"), n.into());
        }
    }
    for (key, name) in [
        (
            "read_barrier",
            "gpuctl_scheduler_read_barrier_duration_seconds",
        ),
        ("append", "gpuctl_scheduler_raft_append_duration_seconds"),
    ] {
        let (ms, n) = mean_ms(text, name, "");
        out.insert(format!("{key}_mean_ms"), ms.into());
        out.insert(format!("{key}_count"), n.into());
    }
    let b = "gpuctl_scheduler_raft_proposals_per_batch";
    let (n, sum) = (
        metric(text, &format!("{b}_count"), ""),
        metric(text, &format!("{b}_sum"), ""),
    );
    if n > 0.0 {
        out.insert("proposals_per_append".into(), (sum / n).into());
    }
    out.insert(
        "lease_reads".into(),
        metric(text, "gpuctl_scheduler_raft_lease_reads_total", "").into(),
    );
    out.into()
}

/// This replica's view of Raft (its id, leader, commit and applied).
pub async fn status(c: &mut ControlClient) -> anyhow::Result<pb::ClusterStatusResponse> {
    Ok(c.cluster_status(pb::ClusterStatusRequest {})
        .await?
        .into_inner())
}

/// How a stopped and restarted follower caught up.
#[derive(Debug)]
pub struct CatchUp {
    /// Entries committed while it was stopped.
    pub behind: u64,
    /// From SIGKILL to the restarted replica answering (includes `gpuctl
    /// dev`'s restart delay).
    pub kill_to_serving: Duration,
    /// From answering to having applied all it was behind.
    pub serving_to_caught_up: Duration,
}

/// Stop follower `f` (SIGSTOP), run `load` without it, then kill it
/// (SIGKILL) and time its restart by `gpuctl dev` and its catch-up to the
/// commit index reached meanwhile.
pub async fn catch_up<F: std::future::Future<Output = anyhow::Result<()>>>(
    dev: &Dev,
    f: &Replica,
    url: &str,
    load: F,
) -> anyhow::Result<CatchUp> {
    use nix::sys::signal::{kill, Signal};
    let pid = nix::unistd::Pid::from_raw(f.pid);
    let before = status(&mut dev.control_at(url).await?).await?.applied_index;
    kill(pid, Signal::SIGSTOP)?;
    let loaded = load.await;
    // Kill while stopped: the process dies at once and `gpuctl dev`
    // starts it again on the same data folder.
    kill(pid, Signal::SIGKILL)?;
    let killed = Instant::now();
    loaded?;
    let target = status(&mut dev.control().await?).await?.commit_index;
    let deadline = killed + Duration::from_secs(300);
    let mut serving = None;
    loop {
        if Instant::now() > deadline {
            bail!("replica {} not caught up 300 s after its restart", f.id);
        }
        let st = match dev.control_at(url).await {
            Ok(mut c) => status(&mut c).await.ok(),
            Err(_) => None,
        };
        if let Some(st) = st {
            let at = *serving.get_or_insert_with(Instant::now);
            if st.applied_index >= target {
                return Ok(CatchUp {
                    behind: target.saturating_sub(before),
                    kill_to_serving: at - killed,
                    serving_to_caught_up: at.elapsed(),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
