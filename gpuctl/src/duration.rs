//! Durations written the humantime way: `60s`, `2m`, `500ms`, `1h30m`, `90`
//! (plain seconds).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration as the user wrote it, kept for messages ("timed out after 60s").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HumanDuration {
    pub duration: Duration,
    pub text: String,
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(HumanDuration {
            duration: parse_duration(s)?,
            text: s.trim().to_string(),
        })
    }
}

/// Parse `60s`, `2m`, `500ms`, `1h30m`, `1.5s`, `2 days`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 60s, 2m, 500ms, 1h30m)");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = rest[num_end..].trim_start();
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let secs_per_unit = match unit {
            "ns" | "nsec" => 1e-9,
            "us" | "usec" | "µs" => 1e-6,
            "ms" | "msec" | "msecs" => 1e-3,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            _ => return Err(bad()),
        };
        let part = Duration::try_from_secs_f64(n * secs_per_unit).map_err(|_| bad())?;
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

/// `500ms`, `2s`, `1.5s`: a delay as the restart message shows it.
pub fn format_delay(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("2 days").unwrap(),
            Duration::from_secs(172_800)
        );
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_nonsense() {
        for s in ["", "s", "10x", "-5s", "1..2s", "ten seconds", "5s!"] {
            assert!(parse_duration(s).is_err(), "{s:?} should be rejected");
        }
        let e = parse_duration("10x").unwrap_err();
        assert!(e.contains("60s"), "{e}");
    }

    #[test]
    fn keeps_the_text() {
        let d: HumanDuration = "60s".parse().unwrap();
        assert_eq!(d.to_string(), "60s");
        assert_eq!(d.duration, Duration::from_secs(60));
    }

    #[test]
    fn delays_read_well() {
        assert_eq!(format_delay(Duration::from_millis(500)), "500ms");
        assert_eq!(format_delay(Duration::from_secs(2)), "2s");
        assert_eq!(format_delay(Duration::from_millis(1500)), "1.5s");
    }
}
