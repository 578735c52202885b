//! The scalar forms Argo accepts: fields we recognise but do not implement,
//! fields we ignore, a value written as a string, number or boolean, an
//! integer that may be quoted, and Go-style durations.

use std::fmt;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A field we recognise but do not implement: accepted by the parser so that
/// validation can reject it with a precise reason.
pub type Unsupported = Option<IgnoredAny>;

/// A field accepted for compatibility and ignored.
pub type Ignored = Option<IgnoredAny>;

/// A scalar that Argo lets users write as a string, number or boolean
/// (`value: 3`, `value: "3"`, `value: true`); we keep its text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct AnyString(pub String);

impl AnyString {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AnyString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AnyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(AnyString(s)),
            serde_json::Value::Number(n) => Ok(AnyString(n.to_string())),
            serde_json::Value::Bool(b) => Ok(AnyString(b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected a string, number or boolean, got {other}"
            ))),
        }
    }
}

impl Serialize for AnyString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Kubernetes' `IntOrString`: `limit: 3` or `limit: "3"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrString {
    Int(i64),
    Str(String),
}

impl IntOrString {
    /// The integer, if the text is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            IntOrString::Int(i) => Some(*i),
            IntOrString::Str(s) => s.trim().parse().ok(),
        }
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(IntOrString::Str(s)),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(IntOrString::Int(i)),
                None => Err(serde::de::Error::custom(format!(
                    "expected a whole number, got {n}"
                ))),
            },
            other => Err(serde::de::Error::custom(format!(
                "expected a whole number, got {other}"
            ))),
        }
    }
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(i) => s.serialize_i64(*i),
            IntOrString::Str(v) => s.serialize_str(v),
        }
    }
}

/// Parse a Go-style duration (`"1h30m"`, `"500ms"`, `"2d"`) or a bare number
/// of seconds (`"10"`) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || {
        format!("invalid duration {s:?} (use seconds such as \"30\" or units: \"500ms\", \"30s\", \"2m\", \"1h\", \"1d\")")
    };
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return Err(bad());
        }
        return Ok((secs * 1000.0).round() as u64);
    }
    let mut total = 0.0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            _ => return Err(bad()),
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Ok(total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("10").unwrap(), 10_000);
        assert_eq!(parse_duration_ms("1m30s").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("500ms").unwrap(), 500);
        assert_eq!(parse_duration_ms("2h").unwrap(), 7_200_000);
        assert_eq!(parse_duration_ms("1d").unwrap(), 86_400_000);
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("5x").is_err());
        assert!(parse_duration_ms("-3").is_err());
    }
}
