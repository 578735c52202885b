//! The lease that fences tasks from a node daemon cut off from the
//! scheduler.
//!
//! The daemon writes `<work-dir>/lease` (the time, in ms since the epoch, of
//! the last call the scheduler acknowledged) whenever that time moves.
//! Every supervisor reads it each second. When the last acknowledged call
//! is older than the fence timeout, the scheduler may soon mark the node
//! lost and start the task's work elsewhere, so the supervisor stops its
//! task first: work never runs twice at once. A daemon that restarts and
//! reaches the scheduler again moves the lease on, so its tasks live on.

use std::path::Path;
use std::time::Duration;

/// How often the daemon looks whether the lease should move.
pub const WRITE_EVERY: Duration = Duration::from_millis(250);
/// How often a supervisor reads the lease.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The lease's time, ms since the epoch; `None` when there is none (or it
/// cannot be read).
pub fn read(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Move the lease to `ms` (whole, atomically).
pub fn write(path: &Path, ms: u64) -> std::io::Result<()> {
    super::record::write_atomically(path, format!("{ms}\n").as_bytes())
}

/// Whether a supervisor must stop its task now: the later of the lease and
/// the supervisor's own start is more than `fence` ago. A zero `fence`
/// never fences.
pub fn expired(now_ms: u64, lease_ms: Option<u64>, started_ms: u64, fence: Duration) -> bool {
    if fence.is_zero() {
        return false;
    }
    let last = lease_ms.unwrap_or(0).max(started_ms);
    now_ms.saturating_sub(last) > fence.as_millis() as u64
}

/// The message of a task stopped by its fence.
pub fn fenced_message(fence: Duration) -> String {
    format!(
        "stopped: the node daemon has not reached the scheduler for {} (fenced)",
        crate::supervisor::format_duration(fence)
    )
}

/// The daemon's side: every [`WRITE_EVERY`], write `last_ok()` (the last
/// acknowledged call, 0 for none) to the lease when it moved. Runs until
/// dropped.
pub async fn keep(path: std::path::PathBuf, last_ok: impl Fn() -> u64) {
    let mut written = 0u64;
    let mut warned = false;
    loop {
        let ms = last_ok();
        if ms > written {
            match write(&path, ms) {
                Ok(()) => {
                    written = ms;
                    warned = false;
                }
                Err(e) if !warned => {
                    warned = true;
                    tracing::error!(
                        "cannot write the lease {path:?} ({e}); supervisors will stop their tasks"
                    );
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(WRITE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_after_the_fence_timeout() {
        let fence = Duration::from_secs(8);
        let t = 1_000_000;
        // Fresh lease: no.
        assert!(!expired(t + 8_000, Some(t), 0, fence));
        // Older than the fence: yes.
        assert!(expired(t + 8_001, Some(t), 0, fence));
        // No lease yet: counted from the supervisor's start.
        assert!(!expired(t + 5_000, None, t, fence));
        assert!(expired(t + 9_000, None, t, fence));
        // An old lease does not fence a supervisor that just started.
        assert!(!expired(t + 9_000, Some(t - 60_000), t + 2_000, fence));
        // Zero: never.
        assert!(!expired(u64::MAX, None, 0, Duration::ZERO));
        assert_eq!(
            fenced_message(fence),
            "stopped: the node daemon has not reached the scheduler for 8s (fenced)"
        );
        assert_eq!(
            fenced_message(Duration::from_millis(1500)),
            "stopped: the node daemon has not reached the scheduler for 1.5s (fenced)"
        );
    }

    #[tokio::test]
    async fn the_daemon_moves_the_lease_when_the_scheduler_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lease");
        assert_eq!(read(&path), None);
        let last = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let l = last.clone();
        let keeper = tokio::spawn(keep(path.clone(), move || {
            l.load(std::sync::atomic::Ordering::Relaxed)
        }));
        tokio::time::sleep(WRITE_EVERY * 2).await;
        assert_eq!(read(&path), None, "never acknowledged: no lease");
        last.store(42_000, std::sync::atomic::Ordering::Relaxed);
        let mut seen = None;
        for _ in 0..40 {
            seen = read(&path);
            if seen.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(seen, Some(42_000));
        keeper.abort();
    }
}
