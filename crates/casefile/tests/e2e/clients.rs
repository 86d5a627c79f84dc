//! Real MDE client libraries from PyPI against the real server over HTTPS with its private
//! CA: msal and azure-identity get tokens, and the token lists machines and collects a
//! package from a real agent. The script is `docs/clients/mde_client.py`, the very code
//! the README shows.
//!
//! It needs a Python with `msal` and `azure-identity` (`.ci/run` makes `.ci/.venv` and
//! exports `CASEFILE_TEST_PYTHON`): without them the test is skipped, except in CI (`CI`
//! set), where it fails.

use std::path::PathBuf;
use std::process::Command;

use casefile_proto::action::ActionStatus;
use serde_json::Value;

use crate::identity::cli_app;
use crate::support::*;

fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// A Python that has both libraries, or `None` (skip) outside CI.
fn python() -> Option<PathBuf> {
    let python = std::env::var_os("CASEFILE_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        let venv = workspace().join(".ci/.venv/bin/python");
        if venv.exists() { venv } else { PathBuf::from("python3") }
    });
    let found = Command::new(&python).args(["-c", "import msal, azure.identity"]).output();
    if found.as_ref().is_ok_and(|o| o.status.success()) {
        return Some(python);
    }
    let why = match found {
        Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
        Err(e) => e.to_string(),
    };
    assert!(std::env::var_os("CI").is_none(), "CI must provide msal and azure-identity ({}): {why}", python.display());
    eprintln!("SKIPPED: {} lacks msal or azure-identity ({why}); see .ci/run for the venv", python.display());
    None
}

#[tokio::test]
async fn msal_and_azure_identity_get_tokens_that_list_machines_and_collect() {
    let Some(python) = python() else { return };
    let server = TestServer::start().await;
    assert!(server.base.starts_with("https://"));
    let agent = server.start_agent("python-client").await;
    let (client_id, secret) = cli_app(&server, "default", "Python playbook", &format!("{COLLECT},{READ}"));
    let ca = server.dir.path().join("data/tls/ca.pem");
    let script = workspace().join("docs/clients/mde_client.py");
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .env("CASEFILE_URL", &server.base)
        .env("CASEFILE_TENANT", "default")
        .env("CASEFILE_CLIENT_ID", &client_id)
        .env("CASEFILE_CLIENT_SECRET", &secret)
        .env("CASEFILE_CA", &ca)
        .env("CASEFILE_MACHINE", &agent.identity.machine_id)
        .env("CASEFILE_CASE", "INC-4711")
        // Nothing from the developer's environment decides what is trusted or proxied.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy");
    // Off the runtime's thread: the server and the agent answer the script on it.
    let run = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    for library in ["msal", "azure_identity"] {
        assert_eq!(printed["machines"][library], serde_json::json!([agent.identity.machine_id]), "{library}");
    }
    let action = &printed["action"];
    assert_eq!(action["type"], "CollectInvestigationPackage");
    assert_eq!(action["requestor"], "Python playbook");
    assert_eq!(action["externalId"], "INC-4711");
    let done = server.wait_final(action["id"].as_str().unwrap()).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{:?}", done.troubleshoot_info);
}

/// The README shows the script verbatim, so the two cannot drift.
#[test]
fn the_readme_shows_the_script_that_is_tested() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let script = std::fs::read_to_string(workspace().join("docs/clients/mde_client.py")).unwrap();
    assert!(
        readme.contains(&format!("```python\n{script}```")),
        "README.md must show docs/clients/mde_client.py verbatim"
    );
}
