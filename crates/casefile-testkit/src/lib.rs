//! Real external services for tests (issue 11): each is started on a free port in a
//! temporary directory and stopped when its guard drops, so a test never leaves a process
//! behind. A service whose program is missing is skipped with a printed reason, except
//! when `CI` is set: there the missing program is a failure, since `.ci/run` installs it.

pub mod haproxy;
pub mod pg;

use std::net::TcpListener;
use std::process::Child;

pub mod s3;

/// A child process killed (and reaped) when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nobody listens on right now (the kernel's pick for port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// Whether a missing service must fail the test (CI) rather than skip it.
pub fn required() -> bool {
    std::env::var_os("CI").is_some()
}

/// Skips (returns `None`) or, in CI, panics, with the reason.
pub fn unavailable<T>(reason: &str) -> Option<T> {
    assert!(!required(), "{reason} (CI must provide it: see .ci/run)");
    eprintln!("skipped: {reason}");
    None
}
