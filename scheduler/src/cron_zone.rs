//! The time zone CronWorkflows without `timezone` are scheduled in. Argo
//! uses its controller's local time zone for them; gpuctl uses the
//! scheduler process's: `gpu-scheduler --cron-timezone NAME` when given,
//! else the system's (the `TZ` environment variable, then
//! `/etc/localtime`; UTC when neither names one). The leader's zone
//! decides: each scheduled time it finds is decided once through the
//! replicated log, whichever replica leads later.

use std::sync::OnceLock;

use jiff::tz::TimeZone;

static ZONE: OnceLock<TimeZone> = OnceLock::new();

/// Set the zone from `--cron-timezone` (an IANA name), once, before the
/// server starts; a name jiff does not know is an error naming it.
pub fn set_from_flag(name: &str) -> Result<(), String> {
    let tz =
        gpuctl_pipelines::cron::time_zone(name).map_err(|e| format!("--cron-timezone: {e}"))?;
    let _ = ZONE.set(tz);
    Ok(())
}

/// The zone in force: the flag's, else the system's.
pub fn local() -> TimeZone {
    match ZONE.get() {
        Some(tz) => tz.clone(),
        None => TimeZone::system(),
    }
}
