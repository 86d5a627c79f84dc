//! The audit trail (append-only; the schema's triggers refuse changes and removals).

use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::PgStore;
use super::rows::{self, AUDIT_COLUMNS};
use crate::*;

/// The advisory lock that orders audit entries ("casefile" "audit" in ASCII, folded).
const AUDIT_ORDER_LOCK: i64 = 0x6361_7365_6175_6469;

/// Appends an audit entry on `conn` (inside the caller's transaction, when it has one).
pub(super) async fn insert_audit(conn: &mut PgConnection, e: &AuditEntry) -> Result<i64> {
    // `seq` is drawn at insert, not at commit: two writers could make 42 visible before 41,
    // and a reader paging `after` 42 would never see 41. Audited transactions take this lock
    // for the rest of their life (the audit insert is their last locking statement), so
    // sequence numbers become visible in order, on every replica.
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(AUDIT_ORDER_LOCK).execute(&mut *conn).await?;
    // Bound as text and cast: `json` keeps what `jsonb` would refuse (`\u0000`).
    let detail = e.detail.as_ref().map(|d| d.to_string());
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO audit_log (at, tenant_id, actor_kind, actor, event, target, outcome, http_status, \
             source_ip, correlation_id, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::json) \
         RETURNING seq",
    )
    .bind(e.at)
    .bind(&e.tenant_id)
    .bind(&e.actor_kind)
    .bind(&e.actor)
    .bind(&e.event)
    .bind(&e.target)
    .bind(&e.outcome)
    .bind(e.http_status.map(i32::from))
    .bind(&e.source_ip)
    .bind(&e.correlation_id)
    .bind(detail)
    .fetch_one(conn)
    .await?;
    Ok(seq)
}

/// Writes `audit` (when given) on the same connection as the change it records.
pub(super) async fn insert_audit_opt(conn: &mut PgConnection, audit: Option<&AuditEntry>) -> Result<()> {
    if let Some(entry) = audit {
        insert_audit(conn, entry).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl AuditStore for PgStore {
    async fn append_audit(&self, e: &AuditEntry) -> Result<i64> {
        // In a transaction so a failed commit is the caller's error (see `write`).
        let mut tx = self.write().await?;
        let seq = insert_audit(&mut tx, e).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let mut q = QueryBuilder::<Postgres>::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE TRUE"));
        if let Some(t) = &f.tenant_id {
            q.push(" AND tenant_id = ").push_bind(t.clone());
        }
        if let Some(t) = f.since {
            q.push(" AND at >= ").push_bind(t);
        }
        if let Some(t) = f.until {
            q.push(" AND at < ").push_bind(t);
        }
        if let Some(v) = &f.event {
            q.push(" AND event = ").push_bind(v.clone());
        }
        if let Some(v) = &f.actor {
            q.push(" AND lower(actor) = lower(").push_bind(v.clone()).push(")");
        }
        if let Some(v) = &f.target {
            q.push(" AND target = ").push_bind(v.clone());
        }
        if let Some(seq) = f.after_seq {
            q.push(" AND seq > ").push_bind(seq);
        }
        q.push(" ORDER BY seq LIMIT ").push_bind(i64::from(f.limit));
        let found = q.build().fetch_all(&self.pool).await?;
        found.iter().map(rows::audit).collect()
    }
}
