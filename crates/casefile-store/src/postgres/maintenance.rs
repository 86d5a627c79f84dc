//! Operations: upkeep, backups, the readiness probe and the figures `/metrics` reads.

use casefile_proto::time::Timestamp;

use sqlx::{AssertSqlSafe, Postgres, QueryBuilder};
use uuid::Uuid;

use super::PgStore;
use super::actions::push_transition_set;
use super::rows::{self, PACKAGE_COLUMNS};
use crate::*;

#[async_trait::async_trait]
impl MaintenanceStore for PgStore {
    async fn optimize(&self) -> Result<()> {
        // PostgreSQL's autovacuum keeps the planner's statistics; nothing to do here.
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn backup_into(&self, _dest: &std::path::Path) -> Result<()> {
        Err(StoreError::Unsupported(
            "casefile backs up only its embedded SQLite database; back up PostgreSQL with its own tools \
             (pg_dump, or continuous archiving), and the package storage beside it",
        ))
    }

    async fn probe_write(&self) -> Result<()> {
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

    async fn action_counts(&self) -> Result<Vec<(String, String, u64)>> {
        let found: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT type, status, COUNT(*) FROM machine_actions GROUP BY type, status")
                .fetch_all(&self.pool)
                .await?;
        Ok(found.into_iter().map(|(t, s, n)| (t, s, n.max(0) as u64)).collect())
    }

    async fn machines_seen_since(&self, since: Timestamp) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM machines WHERE last_seen >= $1")
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }
    async fn expired_packages(&self, stored_before: Timestamp, limit: u32) -> Result<Vec<PackageRecord>> {
        let sql = format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE deleted_at IS NULL AND stored_at < $1 \
             ORDER BY stored_at LIMIT $2"
        );
        let found =
            sqlx::query(AssertSqlSafe(sql)).bind(stored_before).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        found.iter().map(rows::package).collect()
    }

    async fn mark_package_deleted(&self, action_id: Uuid, at: Timestamp) -> Result<bool> {
        let done = sqlx::query("UPDATE packages SET deleted_at = $1 WHERE action_id = $2 AND deleted_at IS NULL")
            .bind(at)
            .bind(action_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn time_out_pending(&self, created_before: Timestamp, change: &Transition) -> Result<u64> {
        let mut q = QueryBuilder::<Postgres>::new("");
        push_transition_set(&mut q, change);
        q.push(" WHERE status = 'Pending' AND created_at < ").push_bind(created_before);
        Ok(q.build().execute(&self.pool).await?.rows_affected())
    }

    async fn time_out_stalled(
        &self,
        silent_since: Timestamp,
        started_before: Timestamp,
        change: &Transition,
    ) -> Result<u64> {
        let mut q = QueryBuilder::<Postgres>::new("");
        push_transition_set(&mut q, change);
        q.push(" WHERE status = 'InProgress' AND (updated_at < ");
        q.push_bind(started_before);
        q.push(" OR machine_id IN (SELECT id FROM machines WHERE last_seen < ");
        q.push_bind(silent_since);
        q.push("))");
        Ok(q.build().execute(&self.pool).await?.rows_affected())
    }
}
