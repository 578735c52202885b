//! The store-vs-etcd driver's pieces against real servers, with a handful
//! of writes (no figures): a 3-member etcd cluster when `etcd` is installed
//! (`apt-get install etcd-server`), and a 3-replica gpuctl control plane
//! when `gpu-scheduler` has been built into the same target folder
//! (`cargo build -p gpuctl-scheduler`). Each test says so and passes
//! without running when its server is missing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use benches::store::etcd::{pb, EtcdCluster, PutWriter};
use benches::store::gpuctl::{ApplyWriter, ControlPlane};
use benches::store::load::{closed_loop, Stop};

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// `target/<profile>/gpu-scheduler`, next to this test's `deps/` folder.
fn built_scheduler() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("gpu-scheduler");
    p.is_file().then_some(p)
}

fn payload() -> Arc<str> {
    benches::store::payload(1024, 16, 19).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_takes_puts_from_every_client() {
    let Some(bin) = on_path("etcd") else {
        eprintln!("skipped: no etcd on PATH (apt-get install etcd-server)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = EtcdCluster::start(&bin, dir.path(), 3).unwrap();
    let leader = etcd.leader().await.unwrap();
    assert!(leader.version.starts_with("3."), "{leader:?}");
    let mut writers = Vec::new();
    for _ in 0..4 {
        writers.push(
            PutWriter::connect(&leader.url, "t", payload())
                .await
                .unwrap(),
        );
    }
    let (out, _) = closed_loop(writers, Stop::Count(20), Duration::from_secs(10)).await;
    assert_eq!((out.writes, out.errors), (20, 0), "{:?}", out.first_error);
    // A fresh cluster is at revision 1; each put adds one.
    let ch = benches::store::etcd::connect(&leader.url).await.unwrap();
    let r = pb::kv_client::KvClient::new(ch)
        .put(pb::PutRequest {
            key: b"/check".to_vec(),
            value: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.header.unwrap().revision, 22);
    etcd.check_running().unwrap();
    etcd.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpuctl_control_plane_takes_applies_from_every_client() {
    let Some(bin) = built_scheduler() else {
        eprintln!("skipped: gpu-scheduler not built in this target folder (cargo build -p gpuctl-scheduler)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::start(&bin, dir.path(), 3).unwrap();
    let (leader, urls) = cp.leader_first().await.unwrap();
    assert!((1..=3).contains(&leader));
    assert_eq!(urls.len(), 3);
    let writers = (0..4)
        .map(|_| ApplyWriter::new(urls.clone(), "t", payload()))
        .collect();
    let (out, _) = closed_loop(writers, Stop::Count(20), Duration::from_secs(10)).await;
    assert_eq!((out.writes, out.errors), (20, 0), "{:?}", out.first_error);
    // The secrets are there, under the names the writers chose.
    let ch = gpuctl::client::connect_one(&urls[0], Duration::from_secs(3))
        .await
        .unwrap();
    let got = gpuctl_proto::v1::control_client::ControlClient::new(ch)
        .get(gpuctl_proto::v1::GetRequest {
            kind: "secrets".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let text = format!("{got:?}");
    for seq in [0, 7, 19] {
        assert!(
            text.contains(&format!("t-{seq}")),
            "secret t-{seq} missing: {text}"
        );
    }
    cp.check_running().unwrap();
    cp.stop();
}
