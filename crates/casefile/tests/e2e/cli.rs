//! The command-line contract, on the real binaries.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use casefile_proto::ActionStatus;
use serde_json::Value;

use crate::support::*;

pub fn casefile() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_casefile"));
    if let Some(url) = store_url_of_this_test() {
        command.env("CASEFILE_STORE__URL", url);
    }
    command
}

/// `casefile-agent` is built beside `casefile` by `cargo test --workspace` (its own
/// integration tests make cargo build the binary).
pub fn agent_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_casefile")).with_file_name("casefile-agent");
    assert!(path.exists(), "{} is missing: run the tests with `cargo test --workspace`", path.display());
    path
}

#[test]
fn every_command_has_help_and_bad_flags_give_one_line() {
    for args in [
        &["--help"][..],
        &["server", "--help"],
        &["token", "--help"],
        &["enroll-token", "--help"],
        &["demo", "--help"],
        &["package", "verify", "--help"],
        &["store", "copy", "--help"],
        &["package", "import", "--help"],
        &["app", "create", "--help"],
        &["app", "list", "--help"],
        &["app", "disable", "--help"],
        &["app", "enable", "--help"],
        &["app", "rotate-secret", "--help"],
        &["app", "set-roles", "--help"],
        &["keys", "rotate", "--help"],
        &["keys", "retire", "--help"],
        &["keys", "list", "--help"],
        &["config", "check", "--help"],
        &["migrate", "--help"],
        &["backup", "--help"],
        &["restore", "--help"],
    ] {
        let out = casefile().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
    let out = casefile().args(["server", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[tokio::test]
async fn cli_tokens_work_against_the_server_of_their_data_dir_and_the_agent_binary_collects() {
    let server = TestServer::start().await;
    let data_dir = server.dir.path().join("data");
    let out = casefile()
        .args([
            "token",
            "--roles",
            "Machine.Read.All,Machine.CollectForensics",
            "--requestor",
            "cli-test",
            "--data-dir",
        ])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(server.get("/api/machines", &token).await.status(), 200);

    let out = casefile().args(["enroll-token", "--data-dir"]).arg(&data_dir).output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let enroll = printed.lines().next().unwrap().trim().to_owned();
    // issue 9 (transport): the whole agent command, with the public URL and the CA pin.
    let command = printed.lines().nth(1).unwrap();
    assert!(command.starts_with(&format!("casefile-agent run --server {}", server.base)), "{command}");
    assert!(command.contains(&format!("--ca-sha256 {}", server.ca_pin.as_deref().unwrap())), "{command}");
    assert!(command.contains(&format!("--enroll-token {enroll}")), "{command}");

    let state = server.dir.path().join("agent-process");
    let mut child = Command::new(agent_binary())
        .args(["run", "--server", &server.base, "--enroll-token", &enroll, "--host-id", "cli-process", "--state-dir"])
        .arg(&state)
        .args(server.trust_args())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the agent to say it is online (it logs to stderr).
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    let online = tokio::task::spawn_blocking(move || {
        let found = lines.by_ref().map_while(Result::ok).any(|l| l.contains("agent online"));
        // Keep draining so the agent never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        found
    })
    .await
    .unwrap();
    assert!(online, "the agent process came online");

    let identity: Value = serde_json::from_slice(&std::fs::read(state.join("identity.json")).unwrap()).unwrap();
    let machine = identity["machine_id"].as_str().unwrap();
    let created = server.collect(machine, &token).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["requestor"], "cli-test");
    let done = server.wait_final(created["id"].as_str().unwrap()).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{:?}", done.troubleshoot_info);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `casefile enroll-token | head -n 1` panicked in `println!` once `head` had gone (exit 101
/// and a backtrace). A command now ends quietly, with the status a shell gives a tool that
/// SIGPIPE ended.
#[test]
fn a_command_whose_reader_went_away_ends_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    // The reader is gone before the command writes anything.
    drop(reader);
    let out = casefile()
        .args(["enroll-token", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("casefile:"), "{stderr}");
    // What a shell reports for a tool that SIGPIPE ended (128 + 13).
    assert_eq!(out.status.code(), Some(141), "{:?}: {stderr}", out.status);
}
