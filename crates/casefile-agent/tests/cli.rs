//! The agent binary's command-line contract. (This file also makes `cargo test
//! --workspace` build `casefile-agent`, which the end-to-end suite runs as a process.)

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_casefile-agent"))
}

#[test]
fn help_works_and_a_bad_flag_is_one_line() {
    assert!(agent().args(["run", "--help"]).output().unwrap().status.success());
    let out = agent().args(["run", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1);
}

#[test]
fn an_unreachable_server_is_one_clear_line() {
    let state = tempfile::tempdir().unwrap();
    // Bind then drop a listener: nothing listens on that port afterwards.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = agent()
        .args(["run", "--server", &format!("http://127.0.0.1:{port}"), "--enroll-token", "cfe_x", "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot reach the server"), "{stderr}");
}
