//! PostgreSQL: resumable uploads.

use async_trait::async_trait;
use casefile_proto::time::Timestamp;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::PgStore;
use crate::*;

const UPLOAD_COLUMNS: &str = "action_id, tenant_id, machine_id, length, sha256, upload_offset, created_at, updated_at";

fn size(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("upload size {v}")))
}

fn db_size(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Query(format!("upload size {v} exceeds the database's range")))
}

fn upload(row: &PgRow) -> Result<UploadRecord> {
    let tenant: String = row.try_get("tenant_id")?;
    Ok(UploadRecord {
        action_id: row.try_get("action_id")?,
        tenant_id: TenantId::parse(&tenant).ok_or_else(|| StoreError::Corrupt(format!("tenant id {tenant}")))?,
        machine_id: row.try_get("machine_id")?,
        length: size(row.try_get("length")?)?,
        sha256: row.try_get("sha256")?,
        offset: size(row.try_get("upload_offset")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[async_trait]
impl UploadStore for PgStore {
    async fn create_upload(&self, record: &UploadRecord) -> Result<UploadRecord> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO uploads (action_id, tenant_id, machine_id, length, sha256, upload_offset, created_at, \
             updated_at) SELECT $1, $2, $3, $4, $5, 0, $6, $6 WHERE EXISTS (SELECT 1 FROM machine_actions \
             WHERE id = $1 AND machine_id = $3) ON CONFLICT (action_id) DO NOTHING",
        )
        .bind(record.action_id)
        .bind(record.tenant_id.as_str())
        .bind(&record.machine_id)
        .bind(db_size(record.length)?)
        .bind(&record.sha256)
        .bind(record.created_at)
        .execute(&mut *tx)
        .await?;
        let sql = format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE action_id = $1 AND machine_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(record.action_id)
            .bind(&record.machine_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        match row {
            Some(row) => upload(&row),
            None => Err(StoreError::Query(format!(
                "no action {} of machine {} to upload for",
                record.action_id, record.machine_id
            ))),
        }
    }

    async fn upload(&self, machine_id: &str, action_id: Uuid) -> Result<Option<UploadRecord>> {
        let sql = format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE action_id = $1 AND machine_id = $2");
        let row =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(action_id).bind(machine_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(upload).transpose()
    }

    async fn append_upload_chunk(
        &self,
        machine_id: &str,
        action_id: Uuid,
        chunk: &UploadChunk,
        at: Timestamp,
    ) -> Result<bool> {
        let end = chunk
            .offset
            .checked_add(chunk.length)
            .ok_or_else(|| StoreError::Query(format!("a chunk of {} bytes at {}", chunk.length, chunk.offset)))?;
        let mut tx = self.write().await?;
        // A guarded update: of two racing at the same offset, the second waits for the
        // first's row lock, then finds the offset moved and changes nothing.
        let moved = sqlx::query(
            "UPDATE uploads SET upload_offset = $1, updated_at = $2 \
             WHERE action_id = $3 AND machine_id = $4 AND upload_offset = $5 AND length >= $1",
        )
        .bind(db_size(end)?)
        .bind(at)
        .bind(action_id)
        .bind(machine_id)
        .bind(db_size(chunk.offset)?)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("INSERT INTO upload_chunks (action_id, chunk_offset, length, blob_key) VALUES ($1, $2, $3, $4)")
            .bind(action_id)
            .bind(db_size(chunk.offset)?)
            .bind(db_size(chunk.length)?)
            .bind(&chunk.blob_key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn upload_chunks(&self, action_id: Uuid) -> Result<Vec<UploadChunk>> {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT chunk_offset, length, blob_key FROM upload_chunks WHERE action_id = $1 ORDER BY chunk_offset",
        )
        .bind(action_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(offset, length, blob_key)| {
                Ok(UploadChunk { offset: size(offset)?, length: size(length)?, blob_key })
            })
            .collect()
    }

    async fn delete_upload(&self, action_id: Uuid) -> Result<bool> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM upload_chunks WHERE action_id = $1").bind(action_id).execute(&mut *tx).await?;
        let gone = sqlx::query("DELETE FROM uploads WHERE action_id = $1").bind(action_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(gone.rows_affected() == 1)
    }

    async fn upload_progress(&self, tenant: &TenantId, action_id: Uuid) -> Result<Option<(u64, u64)>> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT upload_offset, length FROM uploads WHERE action_id = $1 AND tenant_id = $2")
                .bind(action_id)
                .bind(tenant.as_str())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(offset, length)| Ok((size(offset)?, size(length)?))).transpose()
    }

    async fn ended_uploads(&self, limit: u32) -> Result<Vec<UploadRecord>> {
        let sql = format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads u WHERE EXISTS (SELECT 1 FROM machine_actions a \
             WHERE a.id = u.action_id AND a.status NOT IN ('Pending', 'InProgress')) ORDER BY updated_at LIMIT $1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(upload).collect()
    }
}
