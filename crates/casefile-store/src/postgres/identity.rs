//! Identities: signing keys, applications, enrollment tokens, enrollment and machine
//! identity resets.

use casefile_proto::time::Timestamp;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use super::audit::{insert_audit, insert_audit_opt};
use super::machines::{machine_in, rekey_machine, write_machine};
use super::rows::{self, APPLICATION_COLUMNS, SIGNING_KEY_COLUMNS, TOKEN_COLUMNS, json};
use super::{PgStore, is_unique_violation};
use crate::*;

impl PgStore {
    pub(super) async fn signing_keys(&self, purpose: &str) -> Result<Vec<SigningKeyRecord>> {
        let sql =
            format!("SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys WHERE purpose = $1 ORDER BY created_at DESC");
        let found = sqlx::query(AssertSqlSafe(sql)).bind(purpose).fetch_all(&self.pool).await?;
        found.iter().map(rows::signing_key).collect()
    }

    pub(super) async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<()> {
        let sql = format!(
            "INSERT INTO signing_keys ({SIGNING_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
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

    pub(super) async fn retire_signing_key(&self, kid: &str, at: Timestamp) -> Result<bool> {
        let done = sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE kid = $2 AND retired_at IS NULL")
            .bind(at)
            .bind(kid)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn create_application(&self, a: &ApplicationRecord) -> Result<()> {
        let sql = format!("INSERT INTO applications ({APPLICATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
        let result = sqlx::query(AssertSqlSafe(sql))
            .bind(a.client_id)
            .bind(&a.tenant_id)
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

    pub(super) async fn application(&self, tenant: &str, client_id: Uuid) -> Result<Option<ApplicationRecord>> {
        let sql = format!("SELECT {APPLICATION_COLUMNS} FROM applications WHERE client_id = $1 AND tenant_id = $2");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(client_id).bind(tenant).fetch_optional(&self.pool).await?;
        row.as_ref().map(rows::application).transpose()
    }

    pub(super) async fn application_by_client_id(&self, client_id: Uuid) -> Result<Option<ApplicationRecord>> {
        let sql = format!("SELECT {APPLICATION_COLUMNS} FROM applications WHERE client_id = $1");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(client_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(rows::application).transpose()
    }

    pub(super) async fn applications(&self, tenant: &str) -> Result<Vec<ApplicationRecord>> {
        let sql = format!(
            "SELECT {APPLICATION_COLUMNS} FROM applications WHERE tenant_id = $1 \
             ORDER BY lower(name) COLLATE \"C\", client_id"
        );
        let found = sqlx::query(AssertSqlSafe(sql)).bind(tenant).fetch_all(&self.pool).await?;
        found.iter().map(rows::application).collect()
    }

    /// `UPDATE applications SET {set} … RETURNING` on one application of `tenant`; `set`'s
    /// placeholders start at `$3` (`$1` is the client id, `$2` the tenant) and `values`
    /// binds them.
    async fn update_application(
        &self,
        set: &str,
        tenant: &str,
        client_id: Uuid,
        values: impl FnOnce(
            sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
        ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Option<ApplicationRecord>> {
        let sql = format!(
            "UPDATE applications SET {set} WHERE client_id = $1 AND tenant_id = $2 RETURNING {APPLICATION_COLUMNS}"
        );
        let mut tx = self.write().await?;
        let row =
            values(sqlx::query(AssertSqlSafe(sql)).bind(client_id).bind(tenant.to_owned())).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        row.as_ref().map(rows::application).transpose()
    }

    pub(super) async fn update_application_roles(
        &self,
        tenant: &str,
        client_id: Uuid,
        roles: &[String],
    ) -> Result<Option<ApplicationRecord>> {
        let roles = json(&roles)?;
        self.update_application("roles = $3", tenant, client_id, |q| q.bind(roles)).await
    }

    pub(super) async fn set_application_disabled(
        &self,
        tenant: &str,
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

    pub(super) async fn rotate_application_secret(
        &self,
        tenant: &str,
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

    pub(super) async fn insert_enrollment_token(&self, t: &EnrollmentTokenRecord) -> Result<()> {
        let sql = format!("INSERT INTO enrollment_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
        sqlx::query(AssertSqlSafe(sql))
            .bind(t.id)
            .bind(&t.tenant_id)
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

    pub(super) async fn enrollment_token_by_hash(&self, hash: &str) -> Result<Option<EnrollmentTokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE token_hash = $1");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(rows::token).transpose()
    }

    pub(super) async fn enroll_with_token(&self, e: &TokenEnrollment) -> Result<EnrollOutcome> {
        let m = &e.machine;
        let mut tx = self.write().await?;
        // The token's use is taken first, by a guarded update: concurrent enrollments wait
        // on the token's row and re-check the count, so exactly as many succeed as the
        // token has uses.
        let used = sqlx::query(
            "UPDATE enrollment_tokens SET uses = uses + 1, last_used_at = $1 WHERE token_hash = $2 \
             AND tenant_id = $3 AND revoked_at IS NULL AND expires_at > $1 AND uses < uses_allowed",
        )
        .bind(m.at)
        .bind(&e.token_hash)
        .bind(&m.tenant_id)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(EnrollOutcome::TokenUnusable);
        }
        // A new machine is inserted outright; one that exists (or that a concurrent
        // enrollment just created) is locked before it is judged.
        let made: fn(MachineRecord) -> EnrollOutcome =
            if write_machine(&mut tx, m, " ON CONFLICT (id) DO NOTHING").await? {
                EnrollOutcome::Created
            } else {
                let row = sqlx::query(
                    "SELECT tenant_id, agent_public_key, identity_reset_at FROM machines WHERE id = $1 FOR UPDATE",
                )
                .bind(&m.id)
                .fetch_one(&mut *tx)
                .await?;
                let tenant: String = row.try_get("tenant_id")?;
                let key: Option<String> = row.try_get("agent_public_key")?;
                let reset: Option<Timestamp> = row.try_get("identity_reset_at")?;
                let refusal = if tenant != m.tenant_id {
                    Some(EnrollOutcome::MachineEnrolled)
                } else if reset.is_some() {
                    None
                } else {
                    match &e.proof {
                        Some(proof) if key.as_deref() == Some(proof.key.as_str()) => {
                            let consumed = sqlx::query(
                                "DELETE FROM enroll_challenges WHERE machine_id = $1 AND nonce = $2 AND expires_at > $3",
                            )
                            .bind(&m.id)
                            .bind(&proof.nonce)
                            .bind(m.at)
                            .execute(&mut *tx)
                            .await?;
                            (consumed.rows_affected() != 1).then_some(EnrollOutcome::ChallengeInvalid)
                        }
                        _ => Some(EnrollOutcome::MachineEnrolled),
                    }
                };
                if let Some(refusal) = refusal {
                    tx.rollback().await?;
                    return Ok(refusal);
                }
                rekey_machine(&mut tx, m).await?;
                if reset.is_some() { EnrollOutcome::Recreated } else { EnrollOutcome::Rekeyed }
            };
        let machine = machine_in(&mut tx, &m.id).await?;
        insert_audit_opt(&mut tx, e.audit.as_ref()).await?;
        tx.commit().await?;
        Ok(made(machine))
    }

    pub(super) async fn create_enroll_challenge(&self, tenant: &str, c: &EnrollChallengeRecord) -> Result<bool> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "INSERT INTO enroll_challenges (machine_id, nonce, expires_at) \
             SELECT id, $1, $2 FROM machines WHERE id = $3 AND tenant_id = $4 AND agent_public_key IS NOT NULL \
                 AND identity_reset_at IS NULL \
             ON CONFLICT (machine_id) DO UPDATE SET nonce = excluded.nonce, expires_at = excluded.expires_at",
        )
        .bind(&c.nonce)
        .bind(c.expires_at)
        .bind(&c.machine_id)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn reset_machine_identity(
        &self,
        tenant: &str,
        machine_id: &str,
        entry: &AuditEntry,
    ) -> Result<Option<MachineRecord>> {
        let id = machine_id.to_ascii_lowercase();
        let mut tx = self.write().await?;
        // A hash no secret has: the old credential, and any other, is refused from now on.
        let void = format!("void:{}", Uuid::new_v4());
        let done = sqlx::query(
            "UPDATE machines SET credential_hash = $1, agent_public_key = NULL, identity_reset_at = $2 \
             WHERE id = $3 AND tenant_id = $4",
        )
        .bind(void)
        .bind(entry.at)
        .bind(&id)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        sqlx::query("DELETE FROM enroll_challenges WHERE machine_id = $1").bind(&id).execute(&mut *tx).await?;
        insert_audit(&mut tx, entry).await?;
        let machine = machine_in(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(Some(machine))
    }

    pub(super) async fn enrollment_tokens(&self, tenant: &str) -> Result<Vec<EnrollmentTokenRecord>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE tenant_id = $1 ORDER BY created_at DESC, id"
        );
        let found = sqlx::query(AssertSqlSafe(sql)).bind(tenant).fetch_all(&self.pool).await?;
        found.iter().map(rows::token).collect()
    }

    pub(super) async fn revoke_enrollment_token(
        &self,
        tenant: &str,
        id: Uuid,
        at: Timestamp,
    ) -> Result<Option<EnrollmentTokenRecord>> {
        let sql = format!(
            "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND tenant_id = $3 \
             RETURNING {TOKEN_COLUMNS}"
        );
        let mut tx = self.write().await?;
        let row = sqlx::query(AssertSqlSafe(sql)).bind(at).bind(id).bind(tenant).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        row.as_ref().map(rows::token).transpose()
    }
}
