//! Writing to stdout: every command prints through here, flushed at once,
//! so that its lines and streamed logs come out in order.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// Write to stdout now (flushed), so output interleaves with streamed logs.
pub fn out(s: &str) -> Result<()> {
    out_bytes(s.as_bytes())
}

/// Whether the last byte written ended a line (or nothing was written).
static AT_LINE_START: AtomicBool = AtomicBool::new(true);

/// End the current line unless the output is at the start of one (logs
/// that stop without a final newline, before a header).
pub fn finish_line() -> Result<()> {
    if AT_LINE_START.load(Ordering::Relaxed) {
        return Ok(());
    }
    out("\n")
}

/// Write bytes (a log chunk as it came) to stdout now, flushed.
pub fn out_bytes(b: &[u8]) -> Result<()> {
    if let Some(last) = b.last() {
        AT_LINE_START.store(*last == b'\n', Ordering::Relaxed);
    }
    let mut o = std::io::stdout().lock();
    o.write_all(b)
        .and_then(|_| o.flush())
        .map_err(|e| Error::io("cannot write to stdout", e))
}
