//! The HAProxy guard leaves nothing running when the test process ends, however it ends.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use casefile_testkit::haproxy::HaProxy;

/// A CA certificate whose key was thrown away: enough for HAProxy to load `ca-file`.
const CA: &str = include_str!("../testdata/throwaway-ca.pem");

/// Run as a child of the test below: starts HAProxy, says its pid, and waits to be killed
/// (or for its stdin to close, should the parent die first).
#[test]
fn child_holding_haproxy() {
    if std::env::var_os("CASEFILE_TESTKIT_CHILD").is_none() {
        return;
    }
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), CA).unwrap();
    let backend: SocketAddr = ([127, 0, 0, 1], casefile_testkit::free_port()).into();
    let proxy = HaProxy::start(&[backend], ca.path()).unwrap();
    println!("HAPROXY {}", proxy.pid());
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
}

/// `kill -9` of the test process stops its HAProxy (the master, and the worker with it).
#[test]
fn haproxy_goes_with_its_process() {
    if casefile_testkit::haproxy::installed().is_none() {
        return;
    }
    let (mut child, pid) = casefile_testkit::child_test("child_holding_haproxy", "HAPROXY ");
    let master = format!("/proc/{pid}/stat");
    // Running, or a zombie nobody has reaped yet (its parent, the child test, was killed).
    let running = || std::fs::read_to_string(&master).is_ok_and(|stat| !stat.contains(") Z "));
    assert!(running());

    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // Bounded wait for the kernel's signal to be acted on.
    let deadline = Instant::now() + Duration::from_secs(30);
    while running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!running(), "haproxy outlived its test process");
}
