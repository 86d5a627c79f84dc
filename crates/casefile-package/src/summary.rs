//! `CollectionSummaryReport`: the package at a glance, for a person (HTML) and for a
//! spreadsheet (CSV).

use std::fmt::Write as _;

use crate::manifest::Manifest;

/// A self-contained HTML page (no scripts, no external resources): opens in any browser,
/// offline. Every value is escaped: host names and errors come from the host examined.
pub(crate) fn html(m: &Manifest) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>casefile investigation package: {host}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #999;padding:.3em .6em;text-align:left}}\
         .ok{{background:#dfd}}.partial{{background:#ffd}}.failed{{background:#fdd}}\
         .not-applicable{{background:#eee}}</style></head><body>\n\
         <h1>casefile investigation package</h1>\n<table>\n",
        host = escape(&m.host.hostname)
    );
    let mut fact = |name: &str, value: &str| {
        let _ = writeln!(out, "<tr><th>{name}</th><td>{}</td></tr>", escape(value));
    };
    fact("Host", &format!("{} ({}, kernel {}, {})", m.host.hostname, m.host.os, m.host.kernel, m.host.architecture));
    if let Some(id) = &m.host.machine_id {
        fact("Machine id", id);
    }
    if let Some(id) = m.action_id {
        fact("Action id", &id.to_string());
    }
    if let Some(profile) = &m.profile {
        fact("Profile", profile);
    }
    fact("Collected by", &format!("{} {}", m.tool, m.agent_version));
    fact("Started (UTC)", &m.started_utc.to_rfc3339());
    fact("Finished (UTC)", &m.finished_utc.to_rfc3339());
    let _ = writeln!(
        out,
        "</table>\n<h2>Collectors</h2>\n<table>\n\
         <tr><th>Collector</th><th>Folder</th><th>Status</th><th>Files</th><th>ms</th><th>Note</th></tr>"
    );
    for c in &m.collectors {
        let status = c.status.as_str();
        let _ = writeln!(
            out,
            "<tr class=\"{status}\"><td>{}</td><td>{}</td><td>{status}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.name),
            escape(&c.folder),
            c.items,
            c.duration_ms,
            escape(c.error.as_deref().unwrap_or(""))
        );
    }
    let _ = writeln!(
        out,
        "</table>\n<p>Every file's SHA-256 is in <code>manifest.json</code>; <code>manifest.sig</code> signs it. \
         Check with <code>casefile package verify</code>.</p>\n</body></html>"
    );
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn html_escapes_what_the_host_controls() {
        assert_eq!(
            super::escape("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
