//! Machines: enrollment's row writes, host facts, lookups, lists and tags.

use casefile_proto::time::Timestamp;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use super::audit::{insert_audit, insert_audit_opt};
use super::rows::{self, MACHINE_COLUMNS, json};
use super::{PgStore, filter};
use crate::*;

/// `ON CONFLICT` clause of [`PgStore::enroll_machine`]: a host written again keeps its
/// `first_seen` and takes everything else anew.
const MACHINE_UPSERT: &str = " ON CONFLICT (id) DO UPDATE SET computer_dns_name = excluded.computer_dns_name, \
     os_platform = excluded.os_platform, os_version = excluded.os_version, \
     os_architecture = excluded.os_architecture, os_build = excluded.os_build, \
     agent_version = excluded.agent_version, last_ip_address = excluded.last_ip_address, \
     ip_addresses = excluded.ip_addresses, last_seen = excluded.last_seen, \
     credential_hash = excluded.credential_hash, agent_public_key = excluded.agent_public_key";

/// Inserts the machine, with `on_conflict` appended to the statement; whether a row was
/// written.
pub(super) async fn write_machine(conn: &mut PgConnection, m: &MachineEnrollment, on_conflict: &str) -> Result<bool> {
    let sql = format!(
        "INSERT INTO machines (id, tenant_id, computer_dns_name, os_platform, os_version, os_architecture, \
             os_build, agent_version, last_ip_address, ip_addresses, first_seen, last_seen, credential_hash, \
             agent_public_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13){on_conflict}"
    );
    let done = sqlx::query(AssertSqlSafe(sql))
        .bind(&m.id)
        .bind(m.tenant_id.as_str())
        .bind(&m.facts.computer_dns_name)
        .bind(&m.facts.os_platform)
        .bind(&m.facts.os_version)
        .bind(&m.facts.os_architecture)
        .bind(m.facts.os_build)
        .bind(&m.facts.agent_version)
        .bind(&m.last_ip_address)
        .bind(json(&m.facts.ip_addresses)?)
        .bind(m.at)
        .bind(&m.credential_hash)
        .bind(&m.agent_public_key)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Writes a machine's new identity over its row: host facts, credential and key, keeping
/// `first_seen` and history; clears a pending identity reset.
pub(super) async fn rekey_machine(conn: &mut PgConnection, m: &MachineEnrollment) -> Result<()> {
    sqlx::query(
        "UPDATE machines SET computer_dns_name = $1, os_platform = $2, os_version = $3, os_architecture = $4, \
             os_build = $5, agent_version = $6, last_ip_address = $7, ip_addresses = $8, \
             last_seen = GREATEST(last_seen, $9), credential_hash = $10, agent_public_key = $11, \
             identity_reset_at = NULL WHERE id = $12",
    )
    .bind(&m.facts.computer_dns_name)
    .bind(&m.facts.os_platform)
    .bind(&m.facts.os_version)
    .bind(&m.facts.os_architecture)
    .bind(m.facts.os_build)
    .bind(&m.facts.agent_version)
    .bind(&m.last_ip_address)
    .bind(json(&m.facts.ip_addresses)?)
    .bind(m.at)
    .bind(&m.credential_hash)
    .bind(&m.agent_public_key)
    .bind(&m.id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM enroll_challenges WHERE machine_id = $1").bind(&m.id).execute(&mut *conn).await?;
    Ok(())
}

pub(super) async fn machine_in(conn: &mut PgConnection, id: &str) -> Result<MachineRecord> {
    let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE id = $1");
    let row = sqlx::query(AssertSqlSafe(sql)).bind(id).fetch_one(&mut *conn).await?;
    rows::machine(&row)
}

#[async_trait::async_trait]
impl MachineStore for PgStore {
    async fn enroll_machine(&self, m: &MachineEnrollment) -> Result<MachineRecord> {
        let mut tx = self.write().await?;
        write_machine(&mut tx, m, MACHINE_UPSERT).await?;
        let machine = machine_in(&mut tx, &m.id).await?;
        tx.commit().await?;
        Ok(machine)
    }

    async fn machine_by_credential(&self, hash: &str) -> Result<Option<MachineRecord>> {
        let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE credential_hash = $1");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(rows::machine).transpose()
    }

    async fn machine(&self, tenant: &TenantId, id_or_name: &str) -> Result<Option<MachineRecord>> {
        let by_id = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE id = $1 AND tenant_id = $2");
        let row = sqlx::query(AssertSqlSafe(by_id))
            .bind(id_or_name.to_ascii_lowercase())
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = row {
            return rows::machine(&row).map(Some);
        }
        let mut named = self.machines_named(tenant, id_or_name).await?;
        if named.len() > 1 {
            // Any agent can report any name: a shared name identifies none of them.
            let candidates = named.into_iter().map(|m| m.id).collect();
            return Err(StoreError::AmbiguousName { name: id_or_name.to_owned(), candidates });
        }
        Ok(named.pop())
    }

    async fn machines(&self, tenant: &TenantId, query: &ListQuery) -> Result<Listed<MachineRecord>> {
        let listed = self
            .list(
                "machines",
                MACHINE_COLUMNS,
                filter::MACHINE_COLUMNS,
                "last_seen DESC, id COLLATE \"C\"",
                tenant,
                query,
            )
            .await?;
        listed.try_map_pg(rows::machine)
    }

    async fn machines_named(&self, tenant: &TenantId, name: &str) -> Result<Vec<MachineRecord>> {
        // Bounded: the list only ever names candidates in an error.
        let sql = format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE tenant_id = $1 AND lower(computer_dns_name) = lower($2) \
             ORDER BY last_seen DESC, id COLLATE \"C\" LIMIT 100"
        );
        let found = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).bind(name).fetch_all(&self.pool).await?;
        found.iter().map(rows::machine).collect()
    }

    async fn update_host_facts(
        &self,
        machine_id: &str,
        f: &HostFacts,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE machines SET computer_dns_name = $1, os_platform = $2, os_version = $3, os_architecture = $4, \
                 os_build = $5, agent_version = $6, ip_addresses = $7, last_seen = GREATEST(last_seen, $8) \
             WHERE id = $9",
        )
        .bind(&f.computer_dns_name)
        .bind(&f.os_platform)
        .bind(&f.os_version)
        .bind(&f.os_architecture)
        .bind(f.os_build)
        .bind(&f.agent_version)
        .bind(json(&f.ip_addresses)?)
        .bind(at)
        .bind(machine_id)
        .execute(&mut *tx)
        .await?;
        insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn touch_machine(&self, machine_id: &str, at: Timestamp, ip: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE machines SET last_seen = GREATEST(last_seen, $1), \
                 last_ip_address = COALESCE($2, last_ip_address) WHERE id = $3",
        )
        .bind(at)
        .bind(ip)
        .bind(machine_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn change_machine_tag(
        &self,
        tenant: &TenantId,
        machine_id: &str,
        tag: &str,
        add: bool,
    ) -> Result<Option<MachineRecord>> {
        // One statement: a concurrent change of the same row waits for this one and is
        // then computed from its result, so neither is lost.
        let change = if add {
            "CASE WHEN EXISTS (SELECT 1 FROM jsonb_array_elements_text(machine_tags) AS e(v) \
                 WHERE lower(e.v) = lower($1)) \
             THEN machine_tags ELSE machine_tags || jsonb_build_array($1::text) END"
        } else {
            "COALESCE((SELECT jsonb_agg(e.v ORDER BY e.n) FROM jsonb_array_elements_text(machine_tags) \
                 WITH ORDINALITY AS e(v, n) WHERE lower(e.v) <> lower($1)), '[]'::jsonb)"
        };
        let sql = format!(
            "UPDATE machines SET machine_tags = {change} WHERE id = $2 AND tenant_id = $3 RETURNING {MACHINE_COLUMNS}"
        );
        let mut tx = self.write().await?;
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tag)
            .bind(machine_id)
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(rows::machine).transpose()
    }

    async fn set_machine_group(&self, tenant: &TenantId, machine_id: &str, group: Option<i64>) -> Result<()> {
        sqlx::query("UPDATE machines SET rbac_group_id = $1 WHERE id = $2 AND tenant_id = $3")
            .bind(group)
            .bind(machine_id)
            .bind(tenant.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
    async fn enroll_with_token(&self, e: &TokenEnrollment) -> Result<EnrollOutcome> {
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
        .bind(m.tenant_id.as_str())
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
                let refusal = if tenant != m.tenant_id.as_str() {
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

    async fn create_enroll_challenge(&self, tenant: &TenantId, c: &EnrollChallengeRecord) -> Result<bool> {
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
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn reset_machine_identity(
        &self,
        tenant: &TenantId,
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
        .bind(tenant.as_str())
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
}
