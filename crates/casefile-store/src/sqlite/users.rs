//! SQLite: the users area (local console users, console sessions).

use async_trait::async_trait;
use sqlx::AssertSqlSafe;

use super::rows::*;
use super::*;
use casefile_proto::time::Timestamp;

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, u: &UserRecord) -> Result<()> {
        let sql = format!("INSERT INTO console_users ({USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(u.id.to_string())
            .bind(u.tenant_id.as_str())
            .bind(&u.name)
            .bind(&u.password_hash)
            .bind(micros(u.created_at))
            .bind(micros(u.password_changed_at))
            .bind(u.disabled_at.map(micros))
            .bind(i64::from(u.failed_logins))
            .bind(u.last_failed_at.map(micros))
            .execute(&self.pool)
            .await;
        match done {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Duplicate(format!("a user named '{}' in tenant '{}'", u.name, u.tenant_id)))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn user_by_name(&self, tenant: &TenantId, name: &str) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM console_users WHERE tenant_id = ? AND name = ? COLLATE NOCASE");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn users(&self, tenant: &TenantId) -> Result<Vec<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM console_users WHERE tenant_id = ? ORDER BY name COLLATE NOCASE");
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).fetch_all(&self.pool).await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn change_user(&self, tenant: &TenantId, name: &str, change: &UserChange) -> Result<Option<UserRecord>> {
        let mut tx = self.write().await?;
        let sql = format!("SELECT {USER_COLUMNS} FROM console_users WHERE tenant_id = ? AND name = ? COLLATE NOCASE");
        let Some(row) =
            sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).bind(name).fetch_optional(&mut *tx).await?
        else {
            return Ok(None);
        };
        let mut user = user_from_row(&row)?;
        let ends_sessions = user.apply(change);
        sqlx::query(
            "UPDATE console_users SET password_hash = ?, password_changed_at = ?, disabled_at = ?, \
             failed_logins = ?, last_failed_at = ? WHERE id = ?",
        )
        .bind(&user.password_hash)
        .bind(micros(user.password_changed_at))
        .bind(user.disabled_at.map(micros))
        .bind(i64::from(user.failed_logins))
        .bind(user.last_failed_at.map(micros))
        .bind(user.id.to_string())
        .execute(&mut *tx)
        .await?;
        if ends_sessions {
            sqlx::query("DELETE FROM console_sessions WHERE local_user = ?")
                .bind(user.id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(user))
    }

    async fn attempt_sign_in(
        &self,
        tenant: &TenantId,
        name: &str,
        at: Timestamp,
        backoff: Backoff,
    ) -> Result<Option<(UserRecord, Option<std::time::Duration>)>> {
        let mut tx = self.write().await?;
        let sql = format!("SELECT {USER_COLUMNS} FROM console_users WHERE tenant_id = ? AND name = ? COLLATE NOCASE");
        let Some(row) =
            sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).bind(name).fetch_optional(&mut *tx).await?
        else {
            return Ok(None);
        };
        let mut user = user_from_row(&row)?;
        if let Some(wait) = sign_in_wait(user.failed_logins, user.last_failed_at, at, backoff.free, backoff.max) {
            return Ok(Some((user, Some(wait))));
        }
        user.failed_logins = user.failed_logins.saturating_add(1);
        user.last_failed_at = Some(at);
        sqlx::query("UPDATE console_users SET failed_logins = ?, last_failed_at = ? WHERE id = ?")
            .bind(i64::from(user.failed_logins))
            .bind(user.last_failed_at.map(micros))
            .bind(user.id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some((user, None)))
    }

    async fn create_session(&self, s: &SessionRecord) -> Result<()> {
        let sql = format!("INSERT INTO console_sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
        let mut tx = self.write().await?;
        sqlx::query(AssertSqlSafe(sql))
            .bind(&s.id_hash)
            .bind(s.tenant_id.as_str())
            .bind(s.local_user.map(|id| id.to_string()))
            .bind(json_text(&s.identity)?)
            .bind(&s.csrf)
            .bind(micros(s.created_at))
            .bind(micros(s.last_seen))
            .bind(micros(s.expires_at))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM console_sessions WHERE id_hash = ?");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(id_hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn touch_session(&self, id_hash: &str, at: Timestamp) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE console_sessions SET last_seen = max(last_seen, ?) WHERE id_hash = ?")
            .bind(micros(at))
            .bind(id_hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        let done =
            sqlx::query("DELETE FROM console_sessions WHERE id_hash = ?").bind(id_hash).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_ended_sessions(&self, now: Timestamp, idle_since: Timestamp) -> Result<u64> {
        let mut tx = self.write().await?;
        let done = sqlx::query("DELETE FROM console_sessions WHERE expires_at <= ? OR last_seen < ?")
            .bind(micros(now))
            .bind(micros(idle_since))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}
