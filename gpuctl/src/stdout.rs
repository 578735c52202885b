//! Writing to stdout: every command prints through here, flushed at once,
//! so that its lines and streamed logs come out in order.

use std::io::Write;

use crate::error::{Error, Result};

/// Write to stdout now (flushed), so output interleaves with streamed logs.
pub fn out(s: &str) -> Result<()> {
    out_bytes(s.as_bytes())
}

/// Write bytes (a log chunk as it came) to stdout now, flushed.
pub fn out_bytes(b: &[u8]) -> Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(b)
        .and_then(|_| o.flush())
        .map_err(|e| Error::io("cannot write to stdout", e))
}
