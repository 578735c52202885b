//! What every gpuctl process shares:
//!
//! - [`api`]: the object model (Job, Node) users write and read, with strict
//!   parsing and validation that name the file, field path and reason. Pure.
//! - [`manifest`]: documents (YAML files, JSON payloads) to objects of the kind
//!   they name.
//! - [`node`]: the `Node` object (a GPU host and its GPUs).
//! - [`endpoint`]: the `Endpoint` object (a model served by replica tasks).
//! - [`secret`]: the `Secret` object and how tasks refer to it.
//! - [`autoscaler`]: the pure KPA-style replica decision the endpoint controller runs.
//! - [`xid`]: which GPU XID errors take a GPU (or its node) out of service.
//! - [`artifact`]: the artifact store trait and its key and error types, shared
//!   by the pipeline engine and the node daemon's store.

pub mod api;
pub mod artifact;
pub mod autoscaler;
pub mod endpoint;
pub mod field;
pub mod manifest;
pub mod node;
pub mod queue;
pub mod rollout;
pub mod secret;
pub mod secret_ref;
pub mod xid;

/// Milliseconds since the Unix epoch by the wall clock (for timestamps shown
/// to users; never for measuring durations).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `2024-05-01T12:00:00Z` (UTC) for milliseconds since the Unix epoch.
pub fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86400, secs % 86400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
