//! `casefile collect`: ask for a package, optionally follow the action until it is final
//! and download the package.

use std::io::Write;
use std::time::Duration;

use casefile_proto::action::ActionStatus;
use serde_json::{Value, json};

use super::api::{ApiError, Session};
use super::{CollectArgs, download, output, progress};

/// How often `--wait` asks for the action's status (the API's quota is 100 calls a minute).
const POLL_EVERY: Duration = Duration::from_secs(2);
/// Failed polls in a row (an unreachable server, a quota reached) before `--wait` gives up.
const POLL_FAILURES: u32 = 10;

pub async fn collect(args: CollectArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut session = Session::open()?;
    let created = session
        .post_json(
            "collect",
            &["machines", &args.machine, "collectInvestigationPackage"],
            &match &args.profile {
                Some(profile) => json!({ "Comment": args.comment, "Profile": profile }),
                None => json!({ "Comment": args.comment }),
            },
        )
        .await?;
    // The id names a file (--download): only a GUID is taken.
    let id = uuid::Uuid::parse_str(&output::field(&created, "id"))
        .map_err(|_| ApiError::Invalid("the server answered an action without a GUID id".into()))?
        .to_string();
    if !args.wait && args.download.is_none() {
        if args.json {
            return Ok(output::json(out, &created)?);
        }
        writeln!(
            out,
            "action {id}: {} on {} ({}); `casefile download {id}` once it has Succeeded",
            output::field(&created, "status"),
            output::field(&created, "computerDnsName"),
            output::field(&created, "machineId"),
        )?;
        return Ok(());
    }
    let done = wait_final(&mut session, &id, &created).await?;
    let status = status_of(&done);
    if status != Some(ActionStatus::Succeeded) {
        if args.json {
            output::json(out, &done)?;
        }
        let why = match output::field(&done, "troubleshootInfo").as_str() {
            "-" => String::new(),
            info => format!(": {info}"),
        };
        return Err(ApiError::Invalid(format!("action {id} ended {}{why}", output::field(&done, "status"))).into());
    }
    let Some(dir) = args.download else {
        if args.json {
            return Ok(output::json(out, &done)?);
        }
        writeln!(out, "action {id}: Succeeded; `casefile download {id}` saves the package")?;
        return Ok(());
    };
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
    let saved = download::save(&mut session, &id, &dir.join(format!("{id}.zip"))).await?;
    if args.json {
        return Ok(output::json(out, &json!({ "action": done, "download": saved.to_json() }))?);
    }
    writeln!(out, "action {id}: Succeeded")?;
    saved.print(out)?;
    Ok(())
}

fn transient(e: &ApiError) -> bool {
    matches!(e, ApiError::Unreachable { .. } | ApiError::Mde { status: 429 | 500..=599, .. })
}

fn status_of(action: &Value) -> Option<ActionStatus> {
    serde_json::from_value(action["status"].clone()).ok()
}

/// Polls the action until its status is final, showing it on a spinner.
/// What a running collection reports (`casefileProgress`), e.g. ` (uploading: 40%, …)`.
fn stage(action: &Value) -> String {
    serde_json::from_value::<casefile_proto::action::Progress>(action["casefileProgress"].clone())
        .map(|progress| format!(" ({progress})"))
        .unwrap_or_default()
}

async fn wait_final(session: &mut Session, id: &str, created: &Value) -> Result<Value, ApiError> {
    let machine = output::field(created, "computerDnsName");
    let spinner = progress::spinner(format!("{id} on {machine}: {}", output::field(created, "status")));
    let mut action = created.clone();
    let mut failures = 0;
    loop {
        if status_of(&action).is_some_and(|s| s.is_final()) {
            spinner.finish_and_clear();
            return Ok(action);
        }
        tokio::time::sleep(POLL_EVERY).await;
        match session.get_json("action", &["machineactions", id]).await {
            Ok(now) => {
                action = now;
                failures = 0;
                spinner.set_message(format!(
                    "{id} on {machine}: {}{}",
                    output::field(&action, "status"),
                    stage(&action)
                ));
            }
            // The action goes on without us: a blip or a quota is waited out.
            Err(e) if transient(&e) && failures + 1 < POLL_FAILURES => {
                failures += 1;
                spinner.set_message(format!("{id} on {machine}: {} (retrying: {e})", output::field(&action, "status")));
            }
            Err(e) => {
                spinner.finish_and_clear();
                return Err(e);
            }
        }
    }
}
