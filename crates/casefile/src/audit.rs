//! `casefile audit`: reads the audit trail of the server's data directory, with filters.

use std::io::Write;

use anyhow::Context as _;
use casefile_store::AuditFilter;
use clap::Args;

use crate::settings::ConfigArgs;

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only this tenant's entries (default: every tenant, and entries of no tenant).
    #[arg(long)]
    tenant: Option<String>,
    /// Entries at or after this time (RFC 3339, e.g. 2026-11-27T00:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Entries before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// One event, e.g. collect, cancel, link.issue, package.download, token.issue, access.refused.
    #[arg(long)]
    event: Option<String>,
    /// Who acted: an application, a user's UPN, a machine id.
    #[arg(long)]
    actor: Option<String>,
    /// What it concerned: an action id, a machine id, an application id.
    #[arg(long)]
    target: Option<String>,
    /// Entries after this sequence number.
    #[arg(long)]
    after: Option<i64>,
    /// At most this many entries.
    #[arg(long, default_value_t = 1000)]
    top: u32,
    /// One JSON object per line (as the admin API shows entries) instead of text.
    #[arg(long)]
    json: bool,
}

fn time(name: &str, raw: Option<String>) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    raw.map(|t| {
        chrono::DateTime::parse_from_rfc3339(&t)
            .map(|t| t.with_timezone(&chrono::Utc))
            .with_context(|| format!("--{name} '{t}' is not an RFC 3339 time"))
    })
    .transpose()
}

pub async fn run(args: AuditArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let admin = args.config.admin().await?;
    let filter = AuditFilter {
        tenant_id: args.tenant,
        since: time("since", args.since)?,
        until: time("until", args.until)?,
        event: args.event,
        actor: args.actor,
        target: args.target,
        after_seq: args.after,
        limit: args.top,
    };
    for event in admin.audit(&filter).await? {
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&event)?)?;
        } else {
            writeln!(
                out,
                "{:>6} {} {:<10} {:<18} {} {}:{} -> {} {}",
                event.seq,
                event.at,
                event.tenant_id.as_deref().unwrap_or("-"),
                event.event,
                event.outcome,
                event.actor_kind,
                event.actor,
                event.target.as_deref().unwrap_or("-"),
                event.source_ip.as_deref().unwrap_or(""),
            )?;
        }
    }
    Ok(())
}
