//! `casefile machines`.

use std::io::Write;

use serde_json::Value;

use super::ListArgs;
use super::api::Session;
use super::output;

pub async fn machines(args: ListArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut session = Session::open()?;
    let machines = session.list("machines", "machines", args.filter.as_deref(), args.top, args.page_size).await?;
    if args.json {
        return Ok(output::json(out, &Value::Array(machines))?);
    }
    let rows: Vec<Vec<String>> = machines
        .iter()
        .map(|m| {
            let os = match output::field(m, "osVersion").as_str() {
                "-" => output::field(m, "osPlatform"),
                version => format!("{} {version}", output::field(m, "osPlatform")),
            };
            vec![
                output::field(m, "id"),
                output::field(m, "computerDnsName"),
                output::field(m, "healthStatus"),
                output::time(m, "lastSeen"),
                os,
            ]
        })
        .collect();
    output::table(out, &["ID", "NAME", "HEALTH", "LAST SEEN (UTC)", "OS"], &rows)?;
    Ok(())
}
