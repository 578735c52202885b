//! gpuctl's replicated store vs etcd, side by side in one run.
//!
//! Starts a 3-replica gpuctl control plane (the release `gpu-scheduler`
//! next to this binary, one data dir each, plaintext, no auth) and a
//! 3-member etcd cluster (`etcd` from Debian's `etcd-server`, one data dir
//! each, plaintext, static `--initial-cluster`), all on loopback. Then, for
//! each client count (default 1, 16, 64) and each round, both systems get
//! the same closed-loop load: every client has its own connection and
//! writes ~1 KiB objects, one at a time, for a fixed time (or count). For
//! gpuctl a write is `Control.Apply` of a Secret (distinct names) through
//! the command line's client, to the leader with failover; for etcd it is
//! `KV.Put` of the same document to the leader. Rounds interleave the two
//! systems (the order alternates) so machine noise hits both. Reports
//! committed writes/s and p50/p99 latency per system and client count.
//!
//! `cargo build --release --bins && target/release/store-vs-etcd
//! [--clients 1,16,64] [--seconds 10 | --writes N] [--rounds 2] [--json]`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use benches::store::etcd::{EtcdCluster, PutWriter};
use benches::store::gpuctl::{ApplyWriter, ControlPlane};
use benches::store::load::{closed_loop, Figures, Outcome, Stop, Writer};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "store-vs-etcd")]
struct Args {
    /// Concurrent clients per level.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64])]
    clients: Vec<usize>,
    /// Length of each measured level, per system and round.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Instead of --seconds: this many writes per level, system and round.
    #[arg(long)]
    writes: Option<u64>,
    /// Unmeasured writing before each level (connections, caches).
    #[arg(long, default_value_t = 1)]
    warmup_seconds: u64,
    /// Interleaved rounds over every level and both systems.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Size of each written document, in bytes.
    #[arg(long, default_value_t = 1024)]
    object_bytes: usize,
    /// The etcd server binary.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// The gpuctl replica binary (default: `gpu-scheduler` next to this one).
    #[arg(long)]
    gpu_scheduler: Option<PathBuf>,
    /// Keep the data dirs and logs (they are kept anyway after a failure).
    #[arg(long)]
    keep: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// A write that has not been answered after this long counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Replicas and members of each system.
const MEMBERS: usize = 3;

impl Args {
    fn check(&self) -> anyhow::Result<()> {
        if self.clients.is_empty() || self.clients.contains(&0) {
            bail!("--clients: give counts of at least 1, e.g. --clients 1,16,64");
        }
        if self.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        if self.writes == Some(0) || (self.writes.is_none() && self.seconds == 0) {
            bail!("--seconds or --writes must be at least 1");
        }
        if !(64..=1 << 20).contains(&self.object_bytes) {
            bail!("--object-bytes must be between 64 and 1048576");
        }
        Ok(())
    }

    fn stop(&self) -> Stop {
        match self.writes {
            Some(n) => Stop::Count(n),
            None => Stop::After(Duration::from_secs(self.seconds)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum System {
    Gpuctl,
    Etcd,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Gpuctl => "gpuctl",
            System::Etcd => "etcd",
        }
    }
}

/// Which system goes first in round `round` at level `level`: alternating,
/// so neither always runs right after the other's heaviest level.
fn order(round: usize, level: usize) -> [System; 2] {
    if (round + level).is_multiple_of(2) {
        [System::Gpuctl, System::Etcd]
    } else {
        [System::Etcd, System::Gpuctl]
    }
}

/// `etcd --version`'s first two lines, e.g. "etcd Version: 3.4.23; Go Version: go1.19.8".
fn etcd_version(bin: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "running {} --version: install etcd (`apt-get install etcd-server`) or pass --etcd PATH",
                bin.display()
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| l.starts_with("etcd Version") || l.starts_with("Go Version"))
        .collect::<Vec<_>>()
        .join("; "))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.check()?;
    let version = etcd_version(&args.etcd)?;
    let scheduler = match &args.gpu_scheduler {
        Some(p) => p.clone(),
        None => benches::dev::sibling("gpu-scheduler")?,
    };
    let root = std::env::temp_dir().join(format!("store-vs-etcd-{}", std::process::id()));
    let mut gpuctl = ControlPlane::start(&scheduler, &root.join("gpuctl"), MEMBERS as u64)?;
    let mut etcd = EtcdCluster::start(&args.etcd, &root.join("etcd"), MEMBERS)?;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(&args, &version, &mut gpuctl, &mut etcd));
    gpuctl.stop();
    etcd.stop();
    match result {
        Ok(()) if !args.keep => {
            let _ = std::fs::remove_dir_all(&root);
            Ok(())
        }
        Ok(()) => {
            eprintln!("kept {}", root.display());
            Ok(())
        }
        Err(e) => {
            eprintln!(
                "kept {} for inspection (logs of every process)",
                root.display()
            );
            Err(e)
        }
    }
}

async fn run(
    args: &Args,
    version: &str,
    gpuctl: &mut ControlPlane,
    etcd: &mut EtcdCluster,
) -> anyhow::Result<()> {
    let (leader_id, gpuctl_urls) = gpuctl.leader_first().await?;
    let etcd_leader = etcd.leader().await?;
    // Names are at most this long: "g-r9-c64-" plus the sequence number.
    let payload: Arc<str> = benches::store::payload(args.object_bytes, 16, 19).into();
    let doc_len = benches::store::secret_document("g-r1-c64-12345678", &payload).len();
    if !args.json {
        println!(
            "gpuctl: {MEMBERS} replicas, leader {leader_id} at {}; etcd: {MEMBERS} members ({version}), leader at {}",
            gpuctl_urls[0], etcd_leader.url
        );
        println!(
            "documents of {doc_len} bytes; {} per level; {} round(s)",
            match args.stop() {
                Stop::After(d) => format!("{} s", d.as_secs()),
                Stop::Count(n) => format!("{n} writes"),
            },
            args.rounds
        );
    }
    let mut totals: std::collections::BTreeMap<(usize, System), Outcome> = Default::default();
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        for (level, &clients) in args.clients.iter().enumerate() {
            for system in order(round, level) {
                gpuctl.check_running()?;
                etcd.check_running()?;
                let prefix = format!("{}-r{round}-c{clients}", &system.name()[..1]);
                let out = match system {
                    System::Gpuctl => {
                        let writers = (0..clients)
                            .map(|_| {
                                ApplyWriter::new(gpuctl_urls.clone(), &prefix, payload.clone())
                            })
                            .collect();
                        measure(args, writers).await
                    }
                    System::Etcd => {
                        let mut writers = Vec::with_capacity(clients);
                        for _ in 0..clients {
                            writers.push(
                                PutWriter::connect(&etcd_leader.url, &prefix, payload.clone())
                                    .await?,
                            );
                        }
                        measure(args, writers).await
                    }
                };
                let f = out.figures();
                if !args.json {
                    println!(
                        "round {round} {:>6} {clients:>3} clients: {:>8.0} writes/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} writes, {} errors)",
                        system.name(),
                        f.writes_per_s,
                        f.p50_ms,
                        f.p99_ms,
                        f.writes,
                        f.errors
                    );
                }
                if let Some(e) = &out.first_error {
                    eprintln!("  first error: {e}");
                }
                if out.writes == 0 {
                    bail!("{} wrote nothing at {clients} clients", system.name());
                }
                runs.push(serde_json::json!({
                    "round": round, "system": system.name(), "clients": clients,
                    "figures": figures_json(&f),
                }));
                totals.entry((clients, system)).or_default().merge(&out);
            }
        }
    }
    if args.json {
        let total: Vec<_> = totals
            .iter()
            .map(|((c, s), o)| {
                serde_json::json!({"system": s.name(), "clients": c, "figures": figures_json(&o.figures())})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "etcd_version": version,
                "document_bytes": doc_len,
                "runs": runs,
                "total": total,
            })
        );
    } else {
        println!("\nAll rounds together:\n");
        print!("{}", table(&args.clients, &totals));
    }
    Ok(())
}

/// Warm up, then measure, with fresh writers (connections) for the level.
async fn measure<W: Writer>(args: &Args, writers: Vec<W>) -> Outcome {
    let warmup = Duration::from_secs(args.warmup_seconds);
    let writers = if warmup.is_zero() {
        writers
    } else {
        closed_loop(writers, Stop::After(warmup), CALL_TIMEOUT)
            .await
            .1
    };
    closed_loop(writers, args.stop(), CALL_TIMEOUT).await.0
}

fn figures_json(f: &Figures) -> serde_json::Value {
    serde_json::json!({
        "writes": f.writes, "errors": f.errors, "writes_per_s": f.writes_per_s,
        "p50_ms": f.p50_ms, "p99_ms": f.p99_ms,
    })
}

/// The Markdown table of RESULTS.md: one row per client count.
fn table(
    clients: &[usize],
    totals: &std::collections::BTreeMap<(usize, System), Outcome>,
) -> String {
    let mut s = String::from(
        "| clients | gpuctl writes/s | p50 | p99 | etcd writes/s | p50 | p99 |\n|---|---|---|---|---|---|---|\n",
    );
    for &c in clients {
        s.push_str(&format!("| {c} |"));
        for system in [System::Gpuctl, System::Etcd] {
            match totals.get(&(c, system)).map(Outcome::figures) {
                Some(f) => s.push_str(&format!(
                    " {:.0} | {:.2} ms | {:.2} ms |",
                    f.writes_per_s, f.p50_ms, f.p99_ms
                )),
                None => s.push_str(" – | – | – |"),
            }
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let a = Args::parse_from(["store-vs-etcd"]);
        assert_eq!(a.clients, vec![1, 16, 64]);
        assert_eq!(a.stop(), Stop::After(Duration::from_secs(10)));
        assert_eq!(a.rounds, 2);
        a.check().unwrap();
        let a = Args::parse_from(["store-vs-etcd", "--clients", "2,8", "--writes", "500"]);
        assert_eq!(a.clients, vec![2, 8]);
        assert_eq!(a.stop(), Stop::Count(500));
        let e = Args::parse_from(["store-vs-etcd", "--clients", "0,4"])
            .check()
            .unwrap_err();
        assert!(e.to_string().starts_with("--clients"), "{e}");
        let e = Args::parse_from(["store-vs-etcd", "--rounds", "0"])
            .check()
            .unwrap_err();
        assert!(e.to_string().starts_with("--rounds"), "{e}");
    }

    #[test]
    fn rounds_alternate_which_system_goes_first() {
        assert_eq!(order(1, 0), [System::Etcd, System::Gpuctl]);
        assert_eq!(order(1, 1), [System::Gpuctl, System::Etcd]);
        assert_eq!(order(2, 0), [System::Gpuctl, System::Etcd]);
    }

    #[test]
    fn the_table_has_a_row_per_level() {
        let mut t = std::collections::BTreeMap::new();
        t.insert(
            (1, System::Gpuctl),
            Outcome {
                writes: 10,
                elapsed: Duration::from_secs(2),
                latencies_ms: vec![1.0; 10],
                ..Default::default()
            },
        );
        let s = table(&[1, 16], &t);
        let lines: Vec<_> = s.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[2], "| 1 | 5 | 1.00 ms | 1.00 ms | – | – | – |");
        assert_eq!(lines[3], "| 16 | – | – | – | – | – | – |");
    }
}
