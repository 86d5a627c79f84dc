//! `casefile actions` and `casefile cancel`.

use std::io::Write;

use serde_json::{Value, json};

use super::api::Session;
use super::{CancelArgs, ListArgs, output};

pub async fn actions(args: ListArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut session = Session::open()?;
    let actions =
        session.list("machine actions", "machineactions", args.filter.as_deref(), args.top, args.page_size).await?;
    if args.json {
        return Ok(output::json(out, &Value::Array(actions))?);
    }
    let rows: Vec<Vec<String>> = actions.iter().map(row).collect();
    output::table(out, &["ID", "TYPE", "STATUS", "MACHINE", "CREATED (UTC)", "REQUESTOR", "COMMENT"], &rows)?;
    Ok(())
}

fn row(action: &Value) -> Vec<String> {
    let machine = match output::field(action, "computerDnsName").as_str() {
        "-" => output::field(action, "machineId"),
        name => name.to_owned(),
    };
    vec![
        output::field(action, "id"),
        output::field(action, "type"),
        output::field(action, "status"),
        machine,
        output::time(action, "creationDateTimeUtc"),
        output::field(action, "requestor"),
        output::field(action, "requestorComment"),
    ]
}

pub async fn cancel(args: CancelArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut session = Session::open()?;
    let action = session
        .post_json("cancel", &["machineactions", &args.action, "cancel"], &json!({ "Comment": args.comment }))
        .await?;
    if args.json {
        return Ok(output::json(out, &action)?);
    }
    writeln!(
        out,
        "action {} ({} on {}): {}",
        output::field(&action, "id"),
        output::field(&action, "type"),
        output::field(&action, "computerDnsName"),
        output::field(&action, "status")
    )?;
    Ok(())
}
