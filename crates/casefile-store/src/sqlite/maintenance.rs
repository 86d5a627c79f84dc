//! SQLite: upkeep, operations and the lifecycle sweeper's queries.

use async_trait::async_trait;
use casefile_proto::time::Timestamp;
use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite};
use uuid::Uuid;

use super::rows::*;
use super::*;

#[async_trait]
impl MaintenanceStore for SqliteStore {
    async fn optimize(&self) -> Result<()> {
        sqlx::query("PRAGMA optimize").execute(&self.pool).await?;
        // Automatic checkpoints are passive; a truncating one now and then returns the
        // WAL's space even after a long burst (it gives up at once if readers need it).
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        // The last connection to close checkpoints the WAL and removes the -wal and -shm
        // files by name: it must be done before anything else takes over the path.
        self.pool.close().await;
    }

    async fn backup_into(&self, dest: &Path) -> Result<()> {
        self.snapshot_into(dest).await
    }

    async fn probe_write(&self) -> Result<()> {
        // Inserted and deleted in one transaction: the commit writes the page, the data
        // ends unchanged. The key is no valid tenant id, so no tenant can own the row.
        const PROBE: &str = "readiness probe";
        let mut tx = self.write().await?;
        sqlx::query("INSERT OR IGNORE INTO ungrouped_access (tenant_id, user_groups) VALUES (?, '[]')")
            .bind(PROBE)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM ungrouped_access WHERE tenant_id = ?").bind(PROBE).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn action_counts(&self) -> Result<Vec<(String, String, u64)>> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT type, status, COUNT(*) FROM machine_actions GROUP BY type, status")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(t, s, n)| (t, s, n.max(0) as u64)).collect())
    }

    async fn machines_seen_since(&self, since: Timestamp) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM machines WHERE last_seen >= ?")
            .bind(micros(since))
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn expired_packages(&self, stored_before: Timestamp, limit: u32) -> Result<Vec<PackageRecord>> {
        let sql = format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE deleted_at IS NULL AND stored_at < ? \
             ORDER BY stored_at LIMIT ?"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(micros(stored_before))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(package_from_row).collect()
    }

    async fn mark_package_deleted(&self, action_id: Uuid, at: Timestamp) -> Result<bool> {
        let done = sqlx::query("UPDATE packages SET deleted_at = ? WHERE action_id = ? AND deleted_at IS NULL")
            .bind(micros(at))
            .bind(action_id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn time_out_pending(&self, created_before: Timestamp, change: &Transition) -> Result<u64> {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_transition_set(&mut q, change);
        q.push(" WHERE status = 'Pending' AND created_at < ").push_bind(micros(created_before));
        Ok(q.build().execute(&self.pool).await?.rows_affected())
    }

    async fn time_out_stalled(
        &self,
        silent_since: Timestamp,
        started_before: Timestamp,
        change: &Transition,
    ) -> Result<u64> {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_transition_set(&mut q, change);
        q.push(" WHERE status = 'InProgress' AND (updated_at < ");
        q.push_bind(micros(started_before));
        q.push(" OR machine_id IN (SELECT id FROM machines WHERE last_seen < ");
        q.push_bind(micros(silent_since));
        q.push("))");
        Ok(q.build().execute(&self.pool).await?.rows_affected())
    }
}
