//! The air-gapped path on the real binaries: `casefile-agent collect` writes a signed
//! package without any server, `casefile package verify` checks it offline, `casefile
//! package import` records it on the server, which verifies it again; a tampered copy is
//! refused by both.

use std::process::Command;

use casefile_proto::ActionStatus;
use serde_json::Value;

use crate::cli::{agent_binary, casefile};
use crate::support::*;

fn run(command: &mut Command) -> (bool, String) {
    let out = command.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The package with one file's bytes changed (the manifest left as it was).
fn tampered(original: &[u8], victim: &str) -> Vec<u8> {
    let mut entries = casefile_package::corpus::entries_of(original);
    let entry = entries.iter_mut().find(|e| e.name == victim.as_bytes()).unwrap();
    let mut bytes = entry.data.clone();
    bytes.extend_from_slice(b"\nappended by an attacker\n");
    *entry = casefile_package::corpus::RawEntry::file(victim, &bytes);
    casefile_package::corpus::assemble(&entries, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_collect_then_verify_then_import_then_download_verifies() {
    let server = TestServer::start().await;
    let machine = server.seed_machine("airgapped.example").await;
    let dir = server.dir.path();
    let package = dir.join("airgapped.zip");
    let key = dir.join("offline.key");

    let (ok, out) = run(Command::new(agent_binary())
        .args(["collect", "--collector-timeout", "120", "--output"])
        .arg(&package)
        .arg("--key")
        .arg(&key));
    assert!(ok, "{out}");
    let public_key = out.lines().find_map(|l| l.strip_prefix("signed by public key ")).unwrap();
    let public_key = public_key.split_whitespace().next().unwrap().to_owned();

    let (ok, out) = run(casefile().args(["package", "verify", "--public-key", &public_key]).arg(&package));
    assert!(ok, "{out}");
    assert!(out.contains("verdict:   AUTHENTIC"), "{out}");
    let (ok, out) = run(casefile().args(["package", "verify"]).arg(&package));
    assert!(ok && out.contains("INTACT"), "without a key only integrity is proven: {out}");
    let (ok, out) = run(casefile()
        .args(["package", "verify", "--public-key", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="])
        .arg(&package));
    assert!(!ok && out.contains("not the expected key"), "{out}");

    // A tampered copy is named file by file, offline and by the server.
    let bad = dir.join("tampered.zip");
    std::fs::write(&bad, tampered(&std::fs::read(&package).unwrap(), "Users and groups/users.csv")).unwrap();
    let (ok, out) = run(casefile().args(["package", "verify", "--public-key", &public_key]).arg(&bad));
    assert!(!ok, "{out}");
    assert!(out.contains("FAILED     Users and groups/users.csv: altered"), "{out}");

    let token = server.token(&[COLLECT, READ]);
    let import = |file: &std::path::Path| {
        run(casefile()
            .args(["package", "import", "--server", &server.base, "--token", &token, "--machine", "AIRGAPPED.example"])
            .arg("--cacert")
            .arg(server.dir.path().join("data/tls/ca.pem"))
            .args(["--comment", "carried out on a USB stick"])
            .arg(file))
    };
    let (ok, out) = tokio::task::block_in_place(|| import(&bad));
    assert!(!ok, "{out}");
    assert!(out.contains("does not match its manifest") && out.contains("users.csv"), "{out}");

    let (ok, out) = tokio::task::block_in_place(|| import(&package));
    assert!(ok, "{out}");
    let id = out.split_whitespace().nth(3).unwrap().to_owned();
    let action = server.action(&id).await;
    assert_eq!(action.status, ActionStatus::Succeeded);
    assert_eq!(action.machine_id, machine);
    assert_eq!(action.request_source, "PackageImport");
    assert_eq!(action.requestor_comment, "carried out on a USB stick");
    assert!(action.troubleshoot_info.unwrap().contains(&public_key));

    // Downloaded through getPackageUri, it is byte for byte the package collected.
    let link: Value =
        server.get(&format!("/api/machineactions/{id}/getPackageUri"), &token).await.json().await.unwrap();
    let downloaded = server.http.get(link["value"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(&downloaded[..], &std::fs::read(&package).unwrap()[..]);
}

/// `--profile` and `--profile-file`: the profile runs and the manifest names it; a profile
/// that does not exist, a bad file and a built-in name taken by a file are refused with the
/// reason and write nothing.
#[tokio::test]
async fn offline_collections_run_the_profile_they_are_given() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("offline.key");
    let profile = dir.path().join("quick.toml");
    std::fs::write(&profile, "extends = \"standard\"\n[[collector]]\nname = \"logs\"\nmax_log_bytes = 2048\n").unwrap();
    let small = dir.path().join("small.toml");
    std::fs::write(&small, "[[collector]]\nname = \"system\"\n[[collector]]\nname = \"users\"\n").unwrap();
    let package = dir.path().join("small.zip");
    let (ok, out) = run(Command::new(agent_binary())
        .args(["collect", "--output"])
        .arg(&package)
        .arg("--key")
        .arg(&key)
        .arg("--profile-file")
        .arg(&small));
    assert!(ok, "{out}");
    let bytes = std::fs::read(&package).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let manifest: Value = serde_json::from_reader(zip.by_name("manifest.json").unwrap()).unwrap();
    assert_eq!(manifest["profile"], "small");
    let ran: Vec<&str> =
        manifest["collectors"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(ran, ["system", "users"]);

    let refused = [
        (vec!["--profile", "nope"], "no profile is named \"nope\"; the profiles are standard, triage"),
        (vec!["--profile-file", profile.to_str().unwrap(), "--profile", "triage"], "cannot be used with"),
    ];
    for (args, expected) in refused {
        let output = dir.path().join("refused.zip");
        let (ok, out) = run(Command::new(agent_binary()).args(["collect", "--output"]).arg(&output).args(&args));
        assert!(!ok && out.contains(expected), "{args:?}: {out}");
        assert!(!output.exists(), "nothing written for {args:?}");
    }
    for (name, text, expected) in [
        ("bad.toml", "[[collector]]\nname = \"bash -c id\"\n", "names the collector"),
        ("cmd.toml", "[[collector]]\nname = \"logs\"\ncommand = \"id\"\n", "unknown field"),
        ("triage.toml", "extends = \"standard\"\n", "built-in profile's name"),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let output = dir.path().join("refused.zip");
        let (ok, out) = run(Command::new(agent_binary())
            .args(["collect", "--output"])
            .arg(&output)
            .arg("--profile-file")
            .arg(&file));
        assert!(!ok && out.contains(expected), "{name}: {out}");
        assert!(!output.exists(), "nothing written for {name}");
    }
}
