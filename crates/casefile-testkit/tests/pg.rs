//! The PostgreSQL guard: fresh databases per test, and nothing left behind when the test
//! process ends, however it ends.

use std::process::Command;
use std::time::{Duration, Instant};

use casefile_testkit::pg;

#[test]
fn each_test_gets_a_fresh_database() {
    let Some(a) = pg::database() else { return };
    let b = pg::database().unwrap();
    assert_ne!(a.name, b.name);
    let cluster = pg::cluster().unwrap();
    cluster.psql(&format!("SELECT 1 FROM pg_database WHERE datname = '{}'", a.name)).unwrap();
    let name = a.name.clone();
    drop(a);
    let out = Command::new(cluster.bin().join("psql"))
        .args(["-X", "-At", "-h", "127.0.0.1", "-U", pg::SUPERUSER, "-d", "postgres", "-p"])
        .arg(cluster.port().to_string())
        .arg("-c")
        .arg(format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "a dropped guard drops its database");
}

/// Run as a child of the test below: starts the cluster, says where it is, and waits to be
/// killed (or for its stdin to close, should the parent die first).
#[test]
fn child_holding_a_cluster() {
    if std::env::var_os("CASEFILE_TESTKIT_CHILD").is_none() {
        return;
    }
    let cluster = pg::cluster().unwrap();
    let pid = std::fs::read_to_string(cluster.dir().join("data/postmaster.pid")).unwrap();
    println!("CLUSTER {} {}", cluster.dir().display(), pid.lines().next().unwrap());
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
}

/// `kill -9` of the test process stops its postmaster and removes the cluster's directory.
#[test]
fn the_cluster_goes_with_its_process() {
    if pg::cluster().is_none() {
        return;
    }
    let (mut child, line) = casefile_testkit::child_test("child_holding_a_cluster", "CLUSTER ");
    let mut words = line.split_whitespace();
    let dir = std::path::PathBuf::from(words.next().unwrap());
    let postmaster = format!("/proc/{}", words.next().unwrap());
    assert!(dir.exists() && std::path::Path::new(&postmaster).exists());

    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // Bounded wait for the kernel's signal to be acted on (an immediate shutdown).
    let deadline = Instant::now() + Duration::from_secs(30);
    while (dir.exists() || std::path::Path::new(&postmaster).exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!std::path::Path::new(&postmaster).exists(), "the postmaster outlived its test process");
    assert!(!dir.exists(), "{} was left behind", dir.display());
}
