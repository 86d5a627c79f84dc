//! `casefile package verify` and `casefile package import`: checking a package offline,
//! and recording an offline collection on a server.

use std::path::Path;

use anyhow::{Context as _, bail};
use casefile_package::{SignatureCheck, VerifyReport};

/// Verifies `file`, against `public_key` (base64) when given. Prints a report to `out`;
/// `Ok(true)` when the package is authentic.
pub fn verify(file: &Path, public_key: Option<&str>, out: &mut dyn std::io::Write) -> anyhow::Result<bool> {
    let expected = public_key
        .map(|k| casefile_package::signature::parse_public_key(&read_key_text(k)?).map_err(anyhow::Error::msg))
        .transpose()
        .context("--public-key")?;
    let reader = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let report = casefile_package::verify_with(std::io::BufReader::new(reader), expected.as_ref())
        .with_context(|| format!("{} is not a readable casefile package", file.display()))?;
    print_report(file, &report, out)?;
    Ok(report.is_authentic())
}

/// A key given inline (base64) or as a file holding it.
fn read_key_text(arg: &str) -> anyhow::Result<String> {
    let path = Path::new(arg);
    if path.is_file() {
        return Ok(std::fs::read_to_string(path).with_context(|| format!("cannot read {arg}"))?.trim().to_owned());
    }
    Ok(arg.to_owned())
}

fn print_report(file: &Path, report: &VerifyReport, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let m = &report.manifest;
    writeln!(out, "{}", file.display())?;
    writeln!(out, "  host:      {} ({}, {})", m.host.hostname, m.host.os, m.host.architecture)?;
    if let Some(id) = m.action_id {
        writeln!(out, "  action:    {id}")?;
    }
    writeln!(out, "  collected: {} .. {} by {} {}", m.started_utc, m.finished_utc, m.tool, m.agent_version)?;
    writeln!(out, "  files:     {} checked against manifest.json", report.files_checked)?;
    for problem in &report.problems {
        writeln!(out, "  FAILED     {problem}")?;
    }
    writeln!(out, "  signature: {}", report.signature)?;
    let verdict = match (&report.signature, report.is_ok()) {
        (_, false) => "NOT AUTHENTIC: files do not match the manifest",
        (SignatureCheck::Valid { expected: Some(false), .. }, true) => "NOT AUTHENTIC: signed by another key",
        (SignatureCheck::Valid { expected: None, .. }, true) => "INTACT (pass --public-key to check who signed it)",
        (SignatureCheck::Valid { .. }, true) => "AUTHENTIC",
        (_, true) => "NOT AUTHENTIC: no valid signature",
    };
    writeln!(out, "  verdict:   {verdict}")
}

/// Uploads `file` to the server as an offline collection of `machine`.
pub async fn import(
    server: &str,
    token: &str,
    machine: &str,
    file: &Path,
    comment: Option<&str>,
    cacert: Option<&Path>,
) -> anyhow::Result<casefile_proto::MachineAction> {
    let (sha256, size) = std::fs::File::open(file)
        .and_then(casefile_package::hash_reader)
        .with_context(|| format!("cannot read {}", file.display()))?;
    if size == 0 {
        bail!("{} is empty", file.display());
    }
    let client = crate::client::ApiClient::with_ca(server, token, cacert)?;
    client.import(machine, file, size, &sha256, comment).await
}
