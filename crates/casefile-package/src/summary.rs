//! `CollectionSummaryReport`: the package at a glance, for a person (text) and for a
//! spreadsheet (CSV).

use std::fmt::Write as _;

use crate::manifest::Manifest;

pub(crate) fn text(m: &Manifest) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "casefile investigation package");
    let _ = writeln!(out, "==============================");
    let _ = writeln!(
        out,
        "Host:          {} ({}, kernel {}, {})",
        m.host.hostname, m.host.os, m.host.kernel, m.host.architecture
    );
    if let Some(id) = &m.host.machine_id {
        let _ = writeln!(out, "Machine id:    {id}");
    }
    if let Some(id) = m.action_id {
        let _ = writeln!(out, "Action id:     {id}");
    }
    let _ = writeln!(out, "Collected by:  {} {}", m.tool, m.agent_version);
    let _ = writeln!(out, "Started:       {}", m.started_utc.to_rfc3339());
    let _ = writeln!(out, "Finished:      {}", m.finished_utc.to_rfc3339());
    let _ = writeln!(out);
    let _ = writeln!(out, "{:<16} {:<28} {:<15} {:>6} {:>10}  note", "collector", "folder", "status", "files", "ms");
    for c in &m.collectors {
        let _ = writeln!(
            out,
            "{:<16} {:<28} {:<15} {:>6} {:>10}  {}",
            c.name,
            c.folder,
            c.status.as_str(),
            c.items,
            c.duration_ms,
            c.error.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Every file's SHA-256 is in manifest.json.");
    out
}

pub(crate) fn csv(m: &Manifest) -> std::io::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["collector", "folder", "status", "files", "duration_ms", "error"])?;
    for c in &m.collectors {
        w.write_record([
            c.name.as_str(),
            c.folder.as_str(),
            c.status.as_str(),
            &c.items.to_string(),
            &c.duration_ms.to_string(),
            c.error.as_deref().unwrap_or(""),
        ])?;
    }
    let bytes = w.into_inner().map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
