//! SQLite: the identity area (signing keys, applications, enrollment tokens).

use async_trait::async_trait;
use casefile_proto::time::Timestamp;
use sqlx::{AssertSqlSafe, Sqlite};
use uuid::Uuid;

use super::rows::*;
use super::*;

pub(super) type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>;

impl SqliteStore {
    /// Runs `UPDATE applications SET {set} ... RETURNING` on one application of `tenant`;
    /// `bind` adds the values of `set`'s placeholders.
    async fn update_application<'q>(
        &self,
        set: &str,
        tenant: &str,
        client_id: Uuid,
        bind: impl FnOnce(SqliteQuery<'q>) -> SqliteQuery<'q>,
    ) -> Result<Option<ApplicationRecord>> {
        let sql = format!(
            "UPDATE applications SET {set} WHERE client_id = ? AND tenant_id = ? RETURNING {APPLICATION_COLUMNS}"
        );
        let mut tx = self.write().await?;
        let row = bind(sqlx::query(AssertSqlSafe(sql)))
            .bind(client_id.to_string())
            .bind(tenant.to_owned())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(application_from_row).transpose()
    }
}

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn signing_keys(&self, purpose: &str) -> Result<Vec<SigningKeyRecord>> {
        let rows = sqlx::query(
            "SELECT kid, purpose, algorithm, private_key, public_key, created_at, retired_at \
             FROM signing_keys WHERE purpose = ? ORDER BY created_at DESC",
        )
        .bind(purpose)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(signing_key_from_row).collect()
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, purpose, algorithm, private_key, public_key, created_at, retired_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(&key.purpose)
        .bind(&key.algorithm)
        .bind(&key.private_key)
        .bind(&key.public_key)
        .bind(micros(key.created_at))
        .bind(key.retired_at.map(micros))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn retire_signing_key(&self, kid: &str, at: Timestamp) -> Result<bool> {
        let done = sqlx::query("UPDATE signing_keys SET retired_at = ? WHERE kid = ? AND retired_at IS NULL")
            .bind(micros(at))
            .bind(kid)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_application(&self, a: &ApplicationRecord) -> Result<()> {
        let result = sqlx::query(
            "INSERT INTO applications (client_id, tenant_id, name, secret_hash, roles, created_at, \
                 secret_rotated_at, disabled_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(a.client_id.to_string())
        .bind(a.tenant_id.as_str())
        .bind(&a.name)
        .bind(&a.secret_hash)
        .bind(roles_json(&a.roles)?)
        .bind(micros(a.created_at))
        .bind(a.secret_rotated_at.map(micros))
        .bind(a.disabled_at.map(micros))
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Duplicate(format!("an application named '{}' in tenant '{}'", a.name, a.tenant_id)))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn application(&self, tenant: &TenantId, client_id: Uuid) -> Result<Option<ApplicationRecord>> {
        let sql = format!("SELECT {APPLICATION_COLUMNS} FROM applications WHERE client_id = ? AND tenant_id = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(client_id.to_string())
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(application_from_row).transpose()
    }

    async fn application_by_client_id(&self, client_id: Uuid) -> Result<Option<ApplicationRecord>> {
        let sql = format!("SELECT {APPLICATION_COLUMNS} FROM applications WHERE client_id = ?");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(client_id.to_string()).fetch_optional(&self.pool).await?;
        row.as_ref().map(application_from_row).transpose()
    }

    async fn applications(&self, tenant: &TenantId) -> Result<Vec<ApplicationRecord>> {
        let sql =
            format!("SELECT {APPLICATION_COLUMNS} FROM applications WHERE tenant_id = ? ORDER BY name, client_id");
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).fetch_all(&self.pool).await?;
        rows.iter().map(application_from_row).collect()
    }

    async fn update_application_roles(
        &self,
        tenant: &TenantId,
        client_id: Uuid,
        roles: &[String],
    ) -> Result<Option<ApplicationRecord>> {
        let roles = roles_json(roles)?;
        self.update_application("roles = ?", tenant, client_id, |q| q.bind(roles)).await
    }

    async fn set_application_disabled(
        &self,
        tenant: &TenantId,
        client_id: Uuid,
        disabled_at: Option<Timestamp>,
    ) -> Result<Option<ApplicationRecord>> {
        match disabled_at {
            Some(at) => {
                self.update_application("disabled_at = COALESCE(disabled_at, ?)", tenant, client_id, |q| {
                    q.bind(micros(at))
                })
                .await
            }
            None => self.update_application("disabled_at = NULL", tenant, client_id, |q| q).await,
        }
    }

    async fn rotate_application_secret(
        &self,
        tenant: &TenantId,
        client_id: Uuid,
        secret_hash: &str,
        at: Timestamp,
    ) -> Result<Option<ApplicationRecord>> {
        let hash = secret_hash.to_owned();
        self.update_application("secret_hash = ?, secret_rotated_at = ?", tenant, client_id, |q| {
            q.bind(hash).bind(micros(at))
        })
        .await
    }

    async fn insert_enrollment_token(&self, t: &EnrollmentTokenRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, tenant_id, token_hash, created_at, expires_at, revoked_at, \
                 uses_allowed, uses, last_used_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.id.to_string())
        .bind(t.tenant_id.as_str())
        .bind(&t.token_hash)
        .bind(micros(t.created_at))
        .bind(micros(t.expires_at))
        .bind(t.revoked_at.map(micros))
        .bind(i64::from(t.uses_allowed))
        .bind(i64::from(t.uses))
        .bind(t.last_used_at.map(micros))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn enrollment_token_by_hash(&self, hash: &str) -> Result<Option<EnrollmentTokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE token_hash = ?");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn enrollment_tokens(&self, tenant: &TenantId) -> Result<Vec<EnrollmentTokenRecord>> {
        let sql =
            format!("SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE tenant_id = ? ORDER BY created_at DESC, id");
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).fetch_all(&self.pool).await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_enrollment_token(
        &self,
        tenant: &TenantId,
        id: Uuid,
        at: Timestamp,
    ) -> Result<Option<EnrollmentTokenRecord>> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND tenant_id = ?")
            .bind(micros(at))
            .bind(id.to_string())
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE id = ? AND tenant_id = ?");
        let row =
            sqlx::query(AssertSqlSafe(sql)).bind(id.to_string()).bind(tenant.as_str()).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        row.as_ref().map(token_from_row).transpose()
    }
}
