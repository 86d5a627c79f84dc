//! SQLite: resumable uploads.

use async_trait::async_trait;
use casefile_proto::time::Timestamp;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use super::rows::{from_micros, micros};
use super::*;

const UPLOAD_COLUMNS: &str = "action_id, tenant_id, machine_id, length, sha256, upload_offset, created_at, updated_at";

fn size(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("upload size {v}")))
}

fn db_size(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Query(format!("upload size {v} exceeds the database's range")))
}

fn upload_from_row(row: &SqliteRow) -> Result<UploadRecord> {
    let id: String = row.try_get("action_id")?;
    let tenant: String = row.try_get("tenant_id")?;
    Ok(UploadRecord {
        action_id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        tenant_id: TenantId::parse(&tenant).ok_or_else(|| StoreError::Corrupt(format!("tenant id {tenant}")))?,
        machine_id: row.try_get("machine_id")?,
        length: size(row.try_get("length")?)?,
        sha256: row.try_get("sha256")?,
        offset: size(row.try_get("upload_offset")?)?,
        created_at: from_micros(row.try_get("created_at")?)?,
        updated_at: from_micros(row.try_get("updated_at")?)?,
    })
}

#[async_trait]
impl UploadStore for SqliteStore {
    async fn create_upload(&self, upload: &UploadRecord) -> Result<UploadRecord> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO uploads (action_id, tenant_id, machine_id, length, sha256, upload_offset, created_at, \
             updated_at) SELECT ?, ?, ?, ?, ?, 0, ?, ? WHERE EXISTS (SELECT 1 FROM machine_actions WHERE id = ? \
             AND machine_id = ?) ON CONFLICT (action_id) DO NOTHING",
        )
        .bind(upload.action_id.to_string())
        .bind(upload.tenant_id.as_str())
        .bind(&upload.machine_id)
        .bind(db_size(upload.length)?)
        .bind(&upload.sha256)
        .bind(micros(upload.created_at))
        .bind(micros(upload.created_at))
        .bind(upload.action_id.to_string())
        .bind(&upload.machine_id)
        .execute(&mut *tx)
        .await?;
        let sql = format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE action_id = ? AND machine_id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(upload.action_id.to_string())
            .bind(&upload.machine_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        match row {
            Some(row) => upload_from_row(&row),
            None => Err(StoreError::Query(format!(
                "no action {} of machine {} to upload for",
                upload.action_id, upload.machine_id
            ))),
        }
    }

    async fn upload(&self, machine_id: &str, action_id: Uuid) -> Result<Option<UploadRecord>> {
        let sql = format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE action_id = ? AND machine_id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(action_id.to_string())
            .bind(machine_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(upload_from_row).transpose()
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
        let moved = sqlx::query(
            "UPDATE uploads SET upload_offset = ?, updated_at = ? \
             WHERE action_id = ? AND machine_id = ? AND upload_offset = ? AND length >= ?",
        )
        .bind(db_size(end)?)
        .bind(micros(at))
        .bind(action_id.to_string())
        .bind(machine_id)
        .bind(db_size(chunk.offset)?)
        .bind(db_size(end)?)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("INSERT INTO upload_chunks (action_id, chunk_offset, length, blob_key) VALUES (?, ?, ?, ?)")
            .bind(action_id.to_string())
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
            "SELECT chunk_offset, length, blob_key FROM upload_chunks WHERE action_id = ? ORDER BY chunk_offset",
        )
        .bind(action_id.to_string())
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
        sqlx::query("DELETE FROM upload_chunks WHERE action_id = ?")
            .bind(action_id.to_string())
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query("DELETE FROM uploads WHERE action_id = ?")
            .bind(action_id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(gone.rows_affected() == 1)
    }

    async fn upload_progress(&self, tenant: &TenantId, action_id: Uuid) -> Result<Option<(u64, u64)>> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT upload_offset, length FROM uploads WHERE action_id = ? AND tenant_id = ?")
                .bind(action_id.to_string())
                .bind(tenant.as_str())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(offset, length)| Ok((size(offset)?, size(length)?))).transpose()
    }

    async fn ended_uploads(&self, limit: u32) -> Result<Vec<UploadRecord>> {
        let sql = format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads u WHERE EXISTS (SELECT 1 FROM machine_actions a \
             WHERE a.id = u.action_id AND a.status NOT IN ('Pending', 'InProgress')) ORDER BY updated_at LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(upload_from_row).collect()
    }
}
