//! PostgreSQL: the users area (local console users, console sessions).

use casefile_proto::time::Timestamp;
use sqlx::AssertSqlSafe;

use super::rows::{self, SESSION_COLUMNS, USER_COLUMNS, json};
use super::{PgStore, is_unique_violation};
use crate::*;

#[async_trait::async_trait]
impl UserStore for PgStore {
    async fn create_user(&self, u: &UserRecord) -> Result<()> {
        let sql = format!("INSERT INTO console_users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(u.id)
            .bind(u.tenant_id.as_str())
            .bind(&u.name)
            .bind(&u.password_hash)
            .bind(u.created_at)
            .bind(u.password_changed_at)
            .bind(u.disabled_at)
            .bind(i64::from(u.failed_logins))
            .bind(u.last_failed_at)
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
        let sql = format!("SELECT {USER_COLUMNS} FROM console_users WHERE tenant_id = $1 AND lower(name) = lower($2)");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn users(&self, tenant: &TenantId) -> Result<Vec<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM console_users WHERE tenant_id = $1 ORDER BY lower(name)");
        let found = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).fetch_all(&self.pool).await?;
        found.iter().map(rows::user).collect()
    }

    async fn change_user(&self, tenant: &TenantId, name: &str, change: &UserChange) -> Result<Option<UserRecord>> {
        let mut tx = self.write().await?;
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM console_users WHERE tenant_id = $1 AND lower(name) = lower($2) FOR UPDATE"
        );
        let Some(row) =
            sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).bind(name).fetch_optional(&mut *tx).await?
        else {
            return Ok(None);
        };
        let mut user = rows::user(&row)?;
        let ends_sessions = user.apply(change);
        sqlx::query(
            "UPDATE console_users SET password_hash = $1, password_changed_at = $2, disabled_at = $3, \
             failed_logins = $4, last_failed_at = $5 WHERE id = $6",
        )
        .bind(&user.password_hash)
        .bind(user.password_changed_at)
        .bind(user.disabled_at)
        .bind(i64::from(user.failed_logins))
        .bind(user.last_failed_at)
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
        if ends_sessions {
            sqlx::query("DELETE FROM console_sessions WHERE local_user = $1").bind(user.id).execute(&mut *tx).await?;
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
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM console_users WHERE tenant_id = $1 AND lower(name) = lower($2) FOR UPDATE"
        );
        let Some(row) =
            sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).bind(name).fetch_optional(&mut *tx).await?
        else {
            return Ok(None);
        };
        let mut user = rows::user(&row)?;
        if let Some(wait) = sign_in_wait(user.failed_logins, user.last_failed_at, at, backoff.free, backoff.max) {
            return Ok(Some((user, Some(wait))));
        }
        user.failed_logins = user.failed_logins.saturating_add(1);
        user.last_failed_at = Some(at);
        sqlx::query("UPDATE console_users SET failed_logins = $1, last_failed_at = $2 WHERE id = $3")
            .bind(i64::from(user.failed_logins))
            .bind(user.last_failed_at)
            .bind(user.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some((user, None)))
    }

    async fn create_session(&self, s: &SessionRecord) -> Result<()> {
        let sql = format!("INSERT INTO console_sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
        sqlx::query(AssertSqlSafe(sql))
            .bind(&s.id_hash)
            .bind(s.tenant_id.as_str())
            .bind(s.local_user)
            .bind(json(&s.identity)?)
            .bind(&s.csrf)
            .bind(s.created_at)
            .bind(s.last_seen)
            .bind(s.expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM console_sessions WHERE id_hash = $1");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(id_hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(rows::session).transpose()
    }

    async fn touch_session(&self, id_hash: &str, at: Timestamp) -> Result<()> {
        sqlx::query("UPDATE console_sessions SET last_seen = greatest(last_seen, $1) WHERE id_hash = $2")
            .bind(at)
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1").bind(id_hash).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_ended_sessions(&self, now: Timestamp, idle_since: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen < $2")
            .bind(now)
            .bind(idle_since)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
