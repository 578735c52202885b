//! Cron expressions as Argo reads them (robfig/cron's standard parser):
//! five fields, minute hour day-of-month month day-of-week, each `*`, `?`,
//! a number or name, a range `a-b`, a step `*/n` or `a-b/n`, or a list of
//! those; `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
//! `@midnight` and `@hourly`, and `@every DURATION` (Go's duration units,
//! whole numbers: `@every 1h30m`; runs that long after the last scheduled
//! time, or after the CronWorkflow was created; under a second counts as
//! one, as robfig's). When both day fields are restricted, a day
//! matching either runs (as cron). Times are found in a time zone's wall
//! clock: a time skipped when clocks move forward does not run, one
//! repeated when they move back runs twice (Argo's documented behaviour).

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// One parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// The day-of-month field was `*` or `?`.
    any_day: bool,
    /// The day-of-week field was `*` or `?`.
    any_weekday: bool,
    /// `@every`: seconds between runs (the fields above are unused).
    every_s: Option<i64>,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    /// Parse one expression; the error says which field is wrong and why.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let e = expr.trim();
        let e = match e {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with("@every") => {
                let d = other["@every".len()..].trim();
                let every_s = go_duration_s(d).map_err(|why| format!("{other:?}: {why}"))?;
                return Ok(Schedule {
                    minutes: 0,
                    hours: 0,
                    days: 0,
                    months: 0,
                    weekdays: 0,
                    any_day: false,
                    any_weekday: false,
                    every_s: Some(every_s),
                });
            }
            other if other.starts_with('@') => {
                return Err(format!(
                    "{other:?} is not supported (use five fields, or @yearly, @monthly, @weekly, @daily, @hourly or @every DURATION)"
                ))
            }
            other => other,
        };
        let fields: Vec<&str> = e.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "{expr:?} has {} fields; expected 5: minute hour day-of-month month day-of-week",
                fields.len()
            ));
        }
        let minutes = field(fields[0], "minute", 0, 59, &[])?;
        let hours = field(fields[1], "hour", 0, 23, &[])?;
        let days = field(fields[2], "day-of-month", 1, 31, &[])?;
        let months = field(fields[3], "month", 1, 12, &MONTHS)?;
        // 7 is Sunday too.
        let mut weekdays = field(fields[4], "day-of-week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        let star = |f: &str| f.starts_with('*') || f.starts_with('?');
        Ok(Schedule {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: (weekdays & 0x7f) as u8,
            any_day: star(fields[2]),
            any_weekday: star(fields[4]),
            every_s: None,
        })
    }

    fn day_matches(&self, day: i8, weekday: i8) -> bool {
        let d = self.days & (1 << day) != 0;
        let w = self.weekdays & (1 << weekday) != 0;
        if self.any_day || self.any_weekday {
            d && w
        } else {
            d || w
        }
    }
}

/// A Go duration as `@every` takes it (Argo's schema: whole numbers with
/// units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`, e.g. `1h30m`), in whole
/// seconds, at least one (robfig rounds shorter delays up to a second and
/// drops fractions of one).
fn go_duration_s(text: &str) -> Result<i64, String> {
    const UNITS: [(&str, u128); 7] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    let bad = || format!("{text:?} is not a duration such as 30s, 15m or 1h30m");
    if text.is_empty() {
        return Err(bad());
    }
    let mut rest = text;
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        // The longest unit that matches (`ms` before `m`).
        let (unit, mult) = UNITS
            .iter()
            .filter(|(u, _)| rest.starts_with(u))
            .max_by_key(|(u, _)| u.len())
            .ok_or_else(bad)?;
        rest = &rest[unit.len()..];
        total_ns = total_ns.saturating_add(n.saturating_mul(*mult));
    }
    let s = (total_ns / 1_000_000_000).min(i64::MAX as u128) as i64;
    Ok(s.max(1))
}

/// One field as a bit set of the values it allows.
fn field(text: &str, name: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let l = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == l) {
            return Ok(i as u32 + if lo == 1 { 1 } else { 0 });
        }
        let v: u32 = s
            .parse()
            .map_err(|_| format!("{name} field: {s:?} is not a number"))?;
        if v < lo || v > hi {
            return Err(format!(
                "{name} field: {v} is out of range {lo}-{}",
                hi.min(if name == "day-of-week" { 6 } else { hi })
            ));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let n: u32 = s.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("{name} field: step {s:?} must be a whole number above 0")
                })?;
                (r, n)
            }
            None => (part, 1),
        };
        let (a, b) = if range == "*" || range == "?" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // `5/15` runs from 5 to the end, as robfig.
            (v, if step > 1 { hi } else { v })
        };
        if a > b {
            return Err(format!("{name} field: range {range:?} runs backwards"));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

/// The schedules of a CronWorkflow in its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    pub schedules: Vec<Schedule>,
    pub tz: TimeZone,
}

/// The most steps taken looking for a time that matches (enough for about
/// 5 years of day and hour steps:
/// `0 0 29 2 1` runs only when 29 February is a Monday).
const MAX_ROUNDS: u32 = 5 * 366 * 24;

impl CronSchedule {
    /// Parse `exprs` in time zone `tz` (an IANA name; empty: UTC).
    pub fn new(exprs: &[String], tz: &str) -> Result<CronSchedule, String> {
        CronSchedule::in_zone(exprs, time_zone(tz)?)
    }

    /// Parse `exprs` in time zone `tz`.
    pub fn in_zone(exprs: &[String], tz: TimeZone) -> Result<CronSchedule, String> {
        let schedules = exprs
            .iter()
            .map(|e| Schedule::parse(e))
            .collect::<Result<_, _>>()?;
        Ok(CronSchedule { schedules, tz })
    }

    /// The `@every` delays, in seconds.
    fn every(&self) -> impl Iterator<Item = i64> + '_ {
        self.schedules.iter().filter_map(|s| s.every_s)
    }

    /// The first time, in Unix seconds, after `after_s` at which a schedule
    /// runs; `None` when none does in the next years.
    pub fn next_after(&self, after_s: i64) -> Option<i64> {
        let every = self.every().map(|d| after_s.saturating_add(d)).min();
        let cron = self.next_cron_after(after_s);
        match (every, cron) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `next_after` for the five-field schedules alone.
    fn next_cron_after(&self, after_s: i64) -> Option<i64> {
        if self.schedules.iter().all(|s| s.every_s.is_some()) {
            return None;
        }
        let mut t = (after_s.div_euclid(60) + 1) * 60;
        // Each round either finds a time or moves on by at least a minute;
        // day and month jumps keep the rounds few.
        for _ in 0..MAX_ROUNDS {
            let z = Timestamp::from_second(t).ok()?.to_zoned(self.tz.clone());
            match self.step(&z) {
                None => return Some(t),
                Some(next) => t = next,
            }
        }
        None
    }

    /// `None` when `z` is a time to run; else the next time to look at.
    fn step(&self, z: &Zoned) -> Option<i64> {
        let t = z.timestamp().as_second();
        let month = z.month();
        let day = z.day();
        let weekday = z.weekday().to_sunday_zero_offset();
        let (hour, minute) = (z.hour(), z.minute());
        let start_of = |d: jiff::civil::Date| {
            d.to_zoned(self.tz.clone())
                .map(|z| z.timestamp().as_second())
                .unwrap_or(t + 60)
                .max(t + 60)
        };
        if !self.schedules.iter().any(|s| s.months & (1 << month) != 0) {
            let next = z.date().last_of_month().tomorrow().ok()?;
            return Some(start_of(next));
        }
        let day_ok = |s: &&Schedule| s.months & (1 << month) != 0 && s.day_matches(day, weekday);
        if !self.schedules.iter().any(|s| day_ok(&s)) {
            return Some(start_of(z.date().tomorrow().ok()?));
        }
        let hour_ok = |s: &&Schedule| day_ok(s) && s.hours & (1 << hour) != 0;
        if !self.schedules.iter().any(|s| hour_ok(&s)) {
            return Some(t + i64::from(60 - minute) * 60);
        }
        if self
            .schedules
            .iter()
            .any(|s| hour_ok(&s) && s.minutes & (1 << minute) != 0)
        {
            return None;
        }
        Some(t + 60)
    }

    /// The latest time in `(after_s, now_s]` at which a schedule runs
    /// (`@every D`: the last of `after_s + k·D`).
    pub fn latest_between(&self, after_s: i64, now_s: i64) -> Option<i64> {
        let every = self
            .every()
            .filter(|d| now_s.saturating_sub(after_s) >= *d)
            .map(|d| after_s + (now_s - after_s) / d * d)
            .max();
        let cron = self.latest_cron_between(after_s, now_s);
        match (every, cron) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn latest_cron_between(&self, after_s: i64, now_s: i64) -> Option<i64> {
        if self.schedules.iter().all(|s| s.every_s.is_some()) {
            return None;
        }
        // Search back from now in widening windows, so that a long-missed
        // schedule costs no more than a recent one.
        for window in [3_600, 86_400, 32 * 86_400, 366 * 86_400, i64::MAX] {
            let from = after_s.max(now_s.saturating_sub(window));
            let mut last = None;
            let mut t = from;
            while let Some(n) = self.next_cron_after(t).filter(|n| *n <= now_s) {
                last = Some(n);
                t = n;
            }
            if last.is_some() || from == after_s {
                return last;
            }
        }
        None
    }
}

/// An IANA time zone by name; empty is UTC.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    if name.is_empty() {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|_| {
        format!("unknown time zone {name:?}: use an IANA name such as America/Los_Angeles or UTC")
    })
}

/// Unix seconds as RFC 3339 in UTC (`2026-12-03T16:00:00Z`).
pub fn rfc3339(t_s: i64) -> String {
    Timestamp::from_second(t_s)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
