//! Operations: upkeep, backups, the readiness probe and the figures `/metrics` reads.

use casefile_proto::time::Timestamp;

use super::PgStore;
use crate::*;

impl PgStore {
    pub(super) async fn optimize(&self) -> Result<()> {
        // PostgreSQL's autovacuum keeps the planner's statistics; nothing to do here.
        Ok(())
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }

    pub(super) async fn backup_into(&self, _dest: &std::path::Path) -> Result<()> {
        Err(StoreError::Unsupported(
            "casefile backs up only its embedded SQLite database; back up PostgreSQL with its own tools \
             (pg_dump, or continuous archiving), and the package storage beside it",
        ))
    }

    pub(super) async fn probe_write(&self) -> Result<()> {
        // Inserted and deleted in one transaction whose commit must succeed (PostgreSQL
        // writes the commit record even though the data ends unchanged). The key is no
        // valid tenant id, so no tenant can own the row.
        const PROBE: &str = "readiness probe";
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO ungrouped_access (tenant_id, user_groups) VALUES ($1, '[]') ON CONFLICT DO NOTHING")
            .bind(PROBE)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM ungrouped_access WHERE tenant_id = $1").bind(PROBE).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn action_counts(&self) -> Result<Vec<(String, String, u64)>> {
        let found: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT type, status, COUNT(*) FROM machine_actions GROUP BY type, status")
                .fetch_all(&self.pool)
                .await?;
        Ok(found.into_iter().map(|(t, s, n)| (t, s, n.max(0) as u64)).collect())
    }

    pub(super) async fn machines_seen_since(&self, since: Timestamp) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM machines WHERE last_seen >= $1")
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }
}
