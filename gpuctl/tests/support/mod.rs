//! Helpers shared by the end-to-end tests that drive the real binaries.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

/// The `gpuctl` binary under test; `gpu-scheduler` and `gpu-node` sit beside it.
pub fn gpuctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gpuctl"))
}

pub fn require_binaries() {
    let dir = gpuctl_bin().parent().unwrap().to_path_buf();
    for b in ["gpu-scheduler", "gpu-node"] {
        assert!(
            dir.join(b).exists(),
            "{b} is not built next to gpuctl in {}; run `cargo build --bins` or `cargo test --workspace`",
            dir.display()
        );
    }
}

/// Poll `f` until it returns Some, for at most `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGINT a `gpuctl dev` child as Ctrl-C would, wait up to `grace`, then
/// SIGKILL it. Returns whether it stopped on its own.
pub fn interrupt(child: &mut Child, grace: Duration) -> bool {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}
