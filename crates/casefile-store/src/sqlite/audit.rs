//! SQLite: the audit area.

use async_trait::async_trait;
use sqlx::{QueryBuilder, Sqlite};

use super::rows::*;
use super::*;

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, e: &AuditEntry) -> Result<i64> {
        let mut conn = self.pool.acquire().await?;
        insert_audit(&mut conn, e).await
    }

    async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT seq, at, tenant_id, actor_kind, actor, event, target, outcome, http_status, source_ip, \
             correlation_id, detail FROM audit_log WHERE 1 = 1",
        );
        if let Some(t) = &f.tenant_id {
            q.push(" AND tenant_id = ").push_bind(t.clone());
        }
        if let Some(t) = f.since {
            q.push(" AND at >= ").push_bind(micros(t));
        }
        if let Some(t) = f.until {
            q.push(" AND at < ").push_bind(micros(t));
        }
        if let Some(v) = &f.event {
            q.push(" AND event = ").push_bind(v.clone());
        }
        if let Some(v) = &f.actor {
            q.push(" AND actor = ").push_bind(v.clone()).push(" COLLATE NOCASE");
        }
        if let Some(v) = &f.target {
            q.push(" AND target = ").push_bind(v.clone());
        }
        if let Some(seq) = f.after_seq {
            q.push(" AND seq > ").push_bind(seq);
        }
        q.push(" ORDER BY seq LIMIT ").push_bind(i64::from(f.limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(audit_from_row).collect()
    }
}
