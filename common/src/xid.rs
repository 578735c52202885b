//! Which GPU XID errors take a GPU out of service, and which take its whole
//! node out: the one table the node daemon (fail the task on the GPU) and the
//! scheduler (mark the GPU unhealthy, cordon the node) both read.
//!
//! Sources: NVIDIA's Xid catalog ("Analyzing Xid Errors with the Xid
//! Catalog", <https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html>,
//! its "Resolution Bucket (Immediate Action)" column: `RESET_GPU`,
//! `RESTART_BM`), and the XIDs that DCGM's health watches and NVIDIA
//! NVSentinel's syslog health monitor treat as fatal (48, 63, 64, 74, 79,
//! 92, 94, 95 and the GSP errors 119, 120). XIDs the catalog files under
//! `RESTART_APP` because the application caused them (13 graphics engine
//! exception, 31 memory page fault, 43 GPU stopped processing, 45 preemptive
//! cleanup) are left out: they follow a buggy job around, the GPU is fine.
//!
//! Two classes:
//!
//! - [`XidAction::ResetGpu`]: the GPU is unusable until it is reset; the task
//!   on it fails and is requeued elsewhere, other GPUs keep working.
//! - [`XidAction::RebootNode`]: the GPU left the PCIe bus (79, `RESTART_BM`
//!   in the catalog): only a reboot of the machine brings it back, so the
//!   node is cordoned at once. An NVLink error (74) is `RESET_GPU` in the
//!   catalog and stays a GPU-level fault.

/// What an XID means for the GPU that reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XidAction {
    /// Out of service until the GPU is reset.
    ResetGpu,
    /// Out of service until the machine reboots: cordon the node.
    RebootNode,
}

/// One fatal XID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FatalXid {
    pub xid: u64,
    /// The catalog's description, as users see it in messages.
    pub name: &'static str,
    pub action: XidAction,
}

use XidAction::{RebootNode, ResetGpu};

/// The fatal XIDs, by number (see the module docs for the sources).
pub const FATAL_XIDS: &[FatalXid] = &[
    FatalXid {
        xid: 48,
        name: "double-bit ECC error",
        action: ResetGpu,
    },
    FatalXid {
        xid: 62,
        name: "internal micro-controller halt",
        action: ResetGpu,
    },
    FatalXid {
        xid: 63,
        name: "ECC page retirement or row remapping event",
        action: ResetGpu,
    },
    FatalXid {
        xid: 64,
        name: "ECC page retirement or row remapping failure",
        action: ResetGpu,
    },
    FatalXid {
        xid: 74,
        name: "NVLink error",
        action: ResetGpu,
    },
    FatalXid {
        xid: 79,
        name: "GPU has fallen off the bus",
        action: RebootNode,
    },
    FatalXid {
        xid: 92,
        name: "high single-bit ECC error rate",
        action: ResetGpu,
    },
    FatalXid {
        xid: 94,
        name: "contained ECC error",
        action: ResetGpu,
    },
    FatalXid {
        xid: 95,
        name: "uncontained ECC error",
        action: ResetGpu,
    },
    FatalXid {
        xid: 119,
        name: "GSP RPC timeout",
        action: ResetGpu,
    },
    FatalXid {
        xid: 120,
        name: "GSP error",
        action: ResetGpu,
    },
];

/// The table's entry for `xid`; `None`: not fatal (0, an application error,
/// or one the catalog does not take the GPU out for).
pub fn fatal(xid: u64) -> Option<&'static FatalXid> {
    FATAL_XIDS.iter().find(|f| f.xid == xid)
}

/// Whether `xid` takes the GPU out of service.
pub fn is_fatal(xid: u64) -> bool {
    fatal(xid).is_some()
}

/// Whether `xid` takes the whole node out (cordon it).
pub fn needs_node_reboot(xid: u64) -> bool {
    fatal(xid).is_some_and(|f| f.action == XidAction::RebootNode)
}

/// `XID 79 (GPU has fallen off the bus)`, or `XID 13` for one not in the table.
pub fn describe(xid: u64) -> String {
    match fatal(xid) {
        Some(f) => format!("XID {} ({})", f.xid, f.name),
        None => format!("XID {xid}"),
    }
}

/// What a task's failure says when GPU `index` (`uuid`) reported `xid`:
/// `GPU 1 (GPU-…) reported XID 79 (GPU has fallen off the bus)`.
pub fn fault_message(index: u32, uuid: &str, xid: u64) -> String {
    format!("GPU {index} ({uuid}) reported {}", describe(xid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_fatal_xids_are_fatal() {
        for xid in [48, 63, 64, 74, 79, 92, 94, 95] {
            assert!(is_fatal(xid), "XID {xid}");
        }
    }

    #[test]
    fn application_errors_and_zero_are_not() {
        for xid in [0, 13, 31, 43, 45, 1000] {
            assert!(!is_fatal(xid), "XID {xid}");
            assert!(!needs_node_reboot(xid), "XID {xid}");
        }
    }

    #[test]
    fn only_falling_off_the_bus_needs_a_reboot() {
        let reboot: Vec<u64> = FATAL_XIDS
            .iter()
            .filter(|f| needs_node_reboot(f.xid))
            .map(|f| f.xid)
            .collect();
        assert_eq!(reboot, vec![79]);
        assert!(!needs_node_reboot(74));
    }

    #[test]
    fn table_is_sorted_without_duplicates() {
        assert!(FATAL_XIDS.windows(2).all(|w| w[0].xid < w[1].xid));
    }

    #[test]
    fn descriptions_name_the_xid() {
        assert_eq!(describe(79), "XID 79 (GPU has fallen off the bus)");
        assert_eq!(describe(13), "XID 13");
    }
}
