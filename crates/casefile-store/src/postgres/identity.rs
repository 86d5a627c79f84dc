//! Identities: signing keys, applications, enrollment tokens, enrollment and machine
//! identity resets.

use casefile_proto::time::Timestamp;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::rows::{self, APPLICATION_COLUMNS, SIGNING_KEY_COLUMNS, TOKEN_COLUMNS, json};
use super::{PgStore, is_unique_violation};
use crate::*;

#[async_trait::async_trait]
impl IdentityStore for PgStore {
    async fn signing_keys(&self, purpose: &str) -> Result<Vec<SigningKeyRecord>> {
        let sql = format!("SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys WHERE purpose = $1 ORDER BY created_at DESC");
        let found = sqlx::query(AssertSqlSafe(sql)).bind(purpose).fetch_all(&self.pool).await?;
        found.iter().map(rows::signing_key).collect()
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<()> {
        let sql = format!("INSERT INTO signing_keys ({SIGNING_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
        sqlx::query(AssertSqlSafe(sql))
            .bind(&key.kid)
            .bind(&key.purpose)
            .bind(&key.algorithm)
            .bind(&key.private_key)
            .bind(&key.public_key)
            .bind(key.created_at)
            .bind(key.retired_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn retire_signing_key(&self, kid: &str, at: Timestamp) -> Result<bool> {
        let done = sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE kid = $2 AND retired_at IS NULL")
            .bind(at)
            .bind(kid)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_application(&self, a: &ApplicationRecord) -> Result<()> {
        let sql = format!("INSERT INTO applications ({APPLICATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
        let result = sqlx::query(AssertSqlSafe(sql))
            .bind(a.client_id)
            .bind(a.tenant_id.as_str())
            .bind(&a.name)
            .bind(&a.secret_hash)
            .bind(json(&a.roles)?)
            .bind(a.created_at)
            .bind(a.secret_rotated_at)
            .bind(a.disabled_at)
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
        let sql = format!("SELECT {APPLICATION_COLUMNS} FROM applications WHERE client_id = $1 AND tenant_id = $2");
        let row =
            sqlx::query(AssertSqlSafe(sql)).bind(client_id).bind(tenant.as_str()).fetch_optional(&self.pool).await?;
        row.as_ref().map(rows::application).transpose()
    }

    async fn application_by_client_id(&self, client_id: Uuid) -> Result<Option<ApplicationRecord>> {
        let sql = format!("SELECT {APPLICATION_COLUMNS} FROM applications WHERE client_id = $1");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(client_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(rows::application).transpose()
    }

    async fn applications(&self, tenant: &TenantId) -> Result<Vec<ApplicationRecord>> {
        let sql = format!(
            "SELECT {APPLICATION_COLUMNS} FROM applications WHERE tenant_id = $1 \
             ORDER BY lower(name) COLLATE \"C\", client_id"
        );
        let found = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).fetch_all(&self.pool).await?;
        found.iter().map(rows::application).collect()
    }

    async fn update_application_roles(
        &self,
        tenant: &TenantId,
        client_id: Uuid,
        roles: &[String],
    ) -> Result<Option<ApplicationRecord>> {
        let roles = json(&roles)?;
        self.update_application("roles = $3", tenant, client_id, |q| q.bind(roles)).await
    }

    async fn set_application_disabled(
        &self,
        tenant: &TenantId,
        client_id: Uuid,
        disabled_at: Option<Timestamp>,
    ) -> Result<Option<ApplicationRecord>> {
        match disabled_at {
            Some(at) => {
                self.update_application("disabled_at = COALESCE(disabled_at, $3)", tenant, client_id, |q| q.bind(at))
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
        self.update_application("secret_hash = $3, secret_rotated_at = $4", tenant, client_id, |q| {
            q.bind(hash).bind(at)
        })
        .await
    }

    async fn insert_enrollment_token(&self, t: &EnrollmentTokenRecord) -> Result<()> {
        let sql =
            format!("INSERT INTO enrollment_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
        sqlx::query(AssertSqlSafe(sql))
            .bind(t.id)
            .bind(t.tenant_id.as_str())
            .bind(&t.token_hash)
            .bind(t.created_at)
            .bind(t.expires_at)
            .bind(t.revoked_at)
            .bind(i64::from(t.uses_allowed))
            .bind(i64::from(t.uses))
            .bind(t.last_used_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn enrollment_token_by_hash(&self, hash: &str) -> Result<Option<EnrollmentTokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE token_hash = $1");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(rows::token).transpose()
    }

    async fn enrollment_tokens(&self, tenant: &TenantId) -> Result<Vec<EnrollmentTokenRecord>> {
        let sql =
            format!("SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE tenant_id = $1 ORDER BY created_at DESC, id");
        let found = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).fetch_all(&self.pool).await?;
        found.iter().map(rows::token).collect()
    }

    async fn revoke_enrollment_token(
        &self,
        tenant: &TenantId,
        id: Uuid,
        at: Timestamp,
    ) -> Result<Option<EnrollmentTokenRecord>> {
        let sql = format!(
            "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND tenant_id = $3 \
             RETURNING {TOKEN_COLUMNS}"
        );
        let mut tx = self.write().await?;
        let row =
            sqlx::query(AssertSqlSafe(sql)).bind(at).bind(id).bind(tenant.as_str()).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        row.as_ref().map(rows::token).transpose()
    }
}

impl PgStore {
    /// `UPDATE applications SET {set} … RETURNING` on one application of `tenant`; `set`'s
    /// placeholders start at `$3` (`$1` is the client id, `$2` the tenant) and `values`
    /// binds them.
    async fn update_application(
        &self,
        set: &str,
        tenant: &TenantId,
        client_id: Uuid,
        values: impl FnOnce(
            sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
        ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Option<ApplicationRecord>> {
        let sql = format!(
            "UPDATE applications SET {set} WHERE client_id = $1 AND tenant_id = $2 RETURNING {APPLICATION_COLUMNS}"
        );
        let mut tx = self.write().await?;
        let row = values(sqlx::query(AssertSqlSafe(sql)).bind(client_id).bind(tenant.as_str().to_owned()))
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(rows::application).transpose()
    }
}
