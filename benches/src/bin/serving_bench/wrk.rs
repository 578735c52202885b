//! Driving `wrk`: the Lua script that sends the request body, and reading its
//! `--latency` report.

use anyhow::Context;
use bytes::Bytes;

use crate::stats::LoadResult;

/// A wrk script that POSTs `body` as JSON and counts non-2xx answers.
pub(crate) fn wrk_script(body: &Bytes) -> String {
    let body = String::from_utf8_lossy(body)
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!(
        "wrk.method = \"POST\"\nwrk.body = \"{body}\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
    )
}

/// Requests per second, p50 and p99 and errors from wrk's `--latency` report.
pub(crate) fn parse_wrk(out: &str) -> anyhow::Result<LoadResult> {
    let ms = |v: &str| -> Option<f64> {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => return None,
        })
    };
    let field = |label: &str| {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(label))
            .map(|rest| rest.trim().to_string())
    };
    let rps: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{out}"))?;
    let p50 = field("50%")
        .and_then(|v| ms(&v))
        .context("no 50% latency")?;
    let p99 = field("99%")
        .and_then(|v| ms(&v))
        .context("no 99% latency")?;
    let requests: u64 = out
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let errors: u64 = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        + out
            .lines()
            .find_map(|l| l.trim().strip_prefix("Socket errors:"))
            .map(|rest| {
                rest.split(',')
                    .filter_map(|kv| kv.split_whitespace().last()?.parse::<u64>().ok())
                    .sum::<u64>()
            })
            .unwrap_or(0);
    Ok(LoadResult {
        requests,
        errors,
        rps,
        p50_ms: p50,
        p99_ms: p99,
    })
}
