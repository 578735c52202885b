//! GPU health: every interval, ask the inventory for new faults (the
//! simulated inventory reads its inject file; NVML drains XID events), and
//! for each GPU that newly reports a fatal XID (see [`gpuctl_common::xid`]):
//! tell the reconciler, which fails and stops the tasks on that GPU
//! ([`Event::GpuFault`]), then register again so the scheduler sees the GPU
//! unhealthy even when no task held it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gpuctl_proto::v1::GpuFault;
use tokio::sync::mpsc;

use super::control::{register_until_ok, NodeIdentity};
use super::reconciler::Event;
use super::servers::Servers;
use crate::inventory::GpuInventory;

/// The fatal XID of each GPU that has one: what was already handled.
pub type KnownFaults = BTreeMap<u32, u64>;

/// The faults the inventory reports now (before the first registration,
/// which carries them).
pub fn known_faults(inv: &dyn GpuInventory) -> KnownFaults {
    inv.devices()
        .into_iter()
        .filter(|d| !d.healthy && d.xid != 0)
        .map(|d| (d.index, d.xid))
        .collect()
}

/// The faults in `now` that `known` does not hold yet; `known` is updated.
pub fn new_faults(known: &mut KnownFaults, inv: &dyn GpuInventory) -> Vec<GpuFault> {
    let mut out = Vec::new();
    for d in inv.devices() {
        if d.healthy || d.xid == 0 || known.get(&d.index) == Some(&d.xid) {
            continue;
        }
        known.insert(d.index, d.xid);
        out.push(GpuFault {
            index: d.index,
            uuid: d.uuid,
            xid: d.xid,
        });
    }
    out
}

/// Watch for new GPU faults every `every`, until aborted.
pub async fn gpu_health_loop(
    servers: Arc<Servers>,
    id: NodeIdentity,
    inv: Arc<dyn GpuInventory>,
    events: mpsc::UnboundedSender<Event>,
    mut known: KnownFaults,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let faults = {
            let inv = inv.clone();
            let mut k = known.clone();
            let found = tokio::task::spawn_blocking(move || {
                inv.poll_faults();
                let f = new_faults(&mut k, inv.as_ref());
                (f, k)
            })
            .await;
            match found {
                Ok((f, k)) => {
                    known = k;
                    f
                }
                Err(_) => Vec::new(),
            }
        };
        if faults.is_empty() {
            continue;
        }
        for f in faults {
            tracing::warn!(
                "GPU {} ({}) reported {}: it is out of service",
                f.index,
                f.uuid,
                gpuctl_common::xid::describe(f.xid)
            );
            let _ = events.send(Event::GpuFault(f));
        }
        register_until_ok(&servers, &id, &inv, every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::SimulatedInventory;

    #[test]
    fn each_fatal_fault_is_new_once() {
        let inv = SimulatedInventory::from_specs("n", &["4xA100".into()]).unwrap();
        inv.inject_xid(0, 48).unwrap();
        let mut known = known_faults(&inv);
        assert_eq!(known, BTreeMap::from([(0, 48)]));
        assert!(new_faults(&mut known, &inv).is_empty());
        inv.inject_xid(2, 79).unwrap();
        inv.inject_xid(3, 13).unwrap(); // the application's: not a GPU fault
        let f = new_faults(&mut known, &inv);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].index, f[0].xid), (2, 79));
        assert!(f[0].uuid.starts_with("GPU-"));
        assert!(new_faults(&mut known, &inv).is_empty());
        // A different fatal XID on a known GPU is news again.
        inv.inject_xid(0, 95).unwrap();
        assert_eq!(new_faults(&mut known, &inv).len(), 1);
    }
}
