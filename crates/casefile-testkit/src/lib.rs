//! Real external services for tests (issue 11): each is started on a free port in a
//! temporary directory and stopped when its guard drops, so a test never leaves a process
//! behind. A service whose program is missing is skipped with a printed reason, except
//! when `CI` is set: there the missing program is a failure, since `.ci/run` installs it.

pub mod haproxy;
pub mod oidc;
pub mod pg;
pub mod relay;

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

/// Runs the test `name` of the running test binary as a child process, with
/// `CASEFILE_TESTKIT_CHILD` set and a stdin pipe it can wait on, and returns it with the
/// rest of the first line of its output that contains `marker` (libtest writes
/// `test NAME ... ` before the child's own words). For tests of what a killed test process
/// leaves behind.
pub fn child_test(name: &str, marker: &str) -> (KillOnDrop, String) {
    use std::io::BufRead as _;
    let child = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("CASEFILE_TESTKIT_CHILD", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the child test starts");
    let mut child = KillOnDrop(child);
    let mut out = std::io::BufReader::new(child.0.stdout.take().expect("the child's stdout"));
    let mut line = String::new();
    while !line.contains(marker) {
        line.clear();
        assert!(out.read_line(&mut line).expect("the child's output") > 0, "{name} ended without saying {marker}");
    }
    let said = line.split(marker).nth(1).unwrap_or_default().trim().to_owned();
    (child, said)
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
