//! SQLite: the machines area.

use async_trait::async_trait;
use casefile_proto::time::Timestamp;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use super::rows::*;
use super::*;

/// Writes a machine's new identity over its row: host facts, credential and key, keeping
/// `first_seen` and history; clears a pending identity reset.
pub(super) async fn rekey_machine(conn: &mut sqlx::SqliteConnection, m: &MachineEnrollment) -> Result<()> {
    let ips = serde_json::to_string(&m.facts.ip_addresses).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query(
        "UPDATE machines SET computer_dns_name = ?, os_platform = ?, os_version = ?, os_architecture = ?, \
             os_build = ?, agent_version = ?, last_ip_address = ?, ip_addresses = ?, last_seen = MAX(last_seen, ?), \
             credential_hash = ?, agent_public_key = ?, identity_reset_at = NULL WHERE id = ?",
    )
    .bind(&m.facts.computer_dns_name)
    .bind(&m.facts.os_platform)
    .bind(&m.facts.os_version)
    .bind(&m.facts.os_architecture)
    .bind(m.facts.os_build)
    .bind(&m.facts.agent_version)
    .bind(&m.last_ip_address)
    .bind(ips)
    .bind(micros(m.at))
    .bind(&m.credential_hash)
    .bind(&m.agent_public_key)
    .bind(&m.id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM enroll_challenges WHERE machine_id = ?").bind(&m.id).execute(&mut *conn).await?;
    Ok(())
}

pub(super) async fn insert_machine(conn: &mut sqlx::SqliteConnection, m: &MachineEnrollment) -> Result<()> {
    write_machine(conn, m, "").await
}

/// `ON CONFLICT` clause of [`Store::enroll_machine`]: a host written again keeps its
/// `first_seen` and takes everything else anew.
pub(super) const MACHINE_UPSERT: &str = " ON CONFLICT (id) DO UPDATE SET computer_dns_name = excluded.computer_dns_name, \
     os_platform = excluded.os_platform, os_version = excluded.os_version, \
     os_architecture = excluded.os_architecture, os_build = excluded.os_build, \
     agent_version = excluded.agent_version, last_ip_address = excluded.last_ip_address, \
     ip_addresses = excluded.ip_addresses, last_seen = excluded.last_seen, \
     credential_hash = excluded.credential_hash, agent_public_key = excluded.agent_public_key";

/// Inserts the machine, with `on_conflict` appended to the statement.
pub(super) async fn write_machine(
    conn: &mut sqlx::SqliteConnection,
    m: &MachineEnrollment,
    on_conflict: &str,
) -> Result<()> {
    let ips = serde_json::to_string(&m.facts.ip_addresses).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let sql = format!(
        "INSERT INTO machines (id, tenant_id, computer_dns_name, os_platform, os_version, os_architecture, \
             os_build, agent_version, last_ip_address, ip_addresses, first_seen, last_seen, credential_hash, \
             agent_public_key) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?){on_conflict}"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(&m.id)
        .bind(m.tenant_id.as_str())
        .bind(&m.facts.computer_dns_name)
        .bind(&m.facts.os_platform)
        .bind(&m.facts.os_version)
        .bind(&m.facts.os_architecture)
        .bind(m.facts.os_build)
        .bind(&m.facts.agent_version)
        .bind(&m.last_ip_address)
        .bind(ips)
        .bind(micros(m.at))
        .bind(micros(m.at))
        .bind(&m.credential_hash)
        .bind(&m.agent_public_key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) async fn machine_in(conn: &mut sqlx::SqliteConnection, id: &str) -> Result<MachineRecord> {
    let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE id = ?");
    let row = sqlx::query(AssertSqlSafe(sql)).bind(id).fetch_one(&mut *conn).await?;
    machine_from_row(&row)
}

#[async_trait]
impl MachineStore for SqliteStore {
    async fn enroll_machine(&self, m: &MachineEnrollment) -> Result<MachineRecord> {
        let mut tx = self.write().await?;
        write_machine(&mut tx, m, MACHINE_UPSERT).await?;
        let machine = machine_in(&mut tx, &m.id).await?;
        tx.commit().await?;
        Ok(machine)
    }

    async fn machine_by_credential(&self, hash: &str) -> Result<Option<MachineRecord>> {
        let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE credential_hash = ?");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(machine_from_row).transpose()
    }

    async fn machine(&self, tenant: &TenantId, id_or_name: &str) -> Result<Option<MachineRecord>> {
        // Two indexed lookups (primary key, then name) rather than one `OR` that SQLite
        // may answer by scanning the tenant's machines.
        let by_id = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE id = ? AND tenant_id = ?");
        let row = sqlx::query(AssertSqlSafe(by_id))
            .bind(id_or_name.to_ascii_lowercase())
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = row {
            return machine_from_row(&row).map(Some);
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
            .list("machines", MACHINE_COLUMNS, filter::MACHINE_COLUMNS, "last_seen DESC, id", tenant, query)
            .await?;
        listed.try_map(machine_from_row)
    }

    async fn machines_named(&self, tenant: &TenantId, name: &str) -> Result<Vec<MachineRecord>> {
        // Bounded: the list only ever names candidates in an error.
        let sql = format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE tenant_id = ? AND computer_dns_name = ? COLLATE NOCASE \
             ORDER BY last_seen DESC, id LIMIT 100"
        );
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).bind(name).fetch_all(&self.pool).await?;
        rows.iter().map(machine_from_row).collect()
    }

    async fn update_host_facts(
        &self,
        machine_id: &str,
        f: &HostFacts,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        let ips = serde_json::to_string(&f.ip_addresses).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE machines SET computer_dns_name = ?, os_platform = ?, os_version = ?, os_architecture = ?, \
                 os_build = ?, agent_version = ?, ip_addresses = ?, last_seen = MAX(last_seen, ?) WHERE id = ?",
        )
        .bind(&f.computer_dns_name)
        .bind(&f.os_platform)
        .bind(&f.os_version)
        .bind(&f.os_architecture)
        .bind(f.os_build)
        .bind(&f.agent_version)
        .bind(ips)
        .bind(micros(at))
        .bind(machine_id)
        .execute(&mut *tx)
        .await?;
        insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn touch_machine(&self, machine_id: &str, at: Timestamp, ip: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE machines SET last_seen = MAX(last_seen, ?), last_ip_address = COALESCE(?, last_ip_address) \
             WHERE id = ?",
        )
        .bind(micros(at))
        .bind(ip)
        .bind(machine_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn enroll_with_token(&self, e: &TokenEnrollment) -> Result<EnrollOutcome> {
        let m = &e.machine;
        let mut tx = self.write().await?;
        // The token's use is taken first, by a write: concurrent enrollments queue on the
        // database's write lock, so exactly as many succeed as the token has uses.
        let used = sqlx::query(
            "UPDATE enrollment_tokens SET uses = uses + 1, last_used_at = ? WHERE token_hash = ? AND tenant_id = ? \
             AND revoked_at IS NULL AND expires_at > ? AND uses < uses_allowed",
        )
        .bind(micros(m.at))
        .bind(&e.token_hash)
        .bind(m.tenant_id.as_str())
        .bind(micros(m.at))
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(EnrollOutcome::TokenUnusable);
        }
        let existing = sqlx::query("SELECT tenant_id, agent_public_key, identity_reset_at FROM machines WHERE id = ?")
            .bind(&m.id)
            .fetch_optional(&mut *tx)
            .await?;
        let made: fn(MachineRecord) -> EnrollOutcome = match existing {
            None => {
                insert_machine(&mut tx, m).await?;
                EnrollOutcome::Created
            }
            Some(row) => {
                let tenant: String = row.try_get("tenant_id")?;
                let key: Option<String> = row.try_get("agent_public_key")?;
                let reset: Option<i64> = row.try_get("identity_reset_at")?;
                let refusal = if m.tenant_id != tenant {
                    Some(EnrollOutcome::MachineEnrolled)
                } else if reset.is_some() {
                    None
                } else {
                    match &e.proof {
                        Some(proof) if key.as_deref() == Some(proof.key.as_str()) => {
                            let consumed = sqlx::query(
                                "DELETE FROM enroll_challenges WHERE machine_id = ? AND nonce = ? AND expires_at > ?",
                            )
                            .bind(&m.id)
                            .bind(&proof.nonce)
                            .bind(micros(m.at))
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
            }
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
             SELECT id, ?, ? FROM machines WHERE id = ? AND tenant_id = ? AND agent_public_key IS NOT NULL \
                 AND identity_reset_at IS NULL \
             ON CONFLICT (machine_id) DO UPDATE SET nonce = excluded.nonce, expires_at = excluded.expires_at",
        )
        .bind(&c.nonce)
        .bind(micros(c.expires_at))
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
            "UPDATE machines SET credential_hash = ?, agent_public_key = NULL, identity_reset_at = ? \
             WHERE id = ? AND tenant_id = ?",
        )
        .bind(void)
        .bind(micros(entry.at))
        .bind(&id)
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        sqlx::query("DELETE FROM enroll_challenges WHERE machine_id = ?").bind(&id).execute(&mut *tx).await?;
        insert_audit(&mut tx, entry).await?;
        let machine = machine_in(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(Some(machine))
    }

    async fn set_machine_group(&self, tenant: &TenantId, machine_id: &str, group: Option<i64>) -> Result<()> {
        sqlx::query("UPDATE machines SET rbac_group_id = ? WHERE id = ? AND tenant_id = ?")
            .bind(group)
            .bind(machine_id)
            .bind(tenant.as_str())
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
        let change = if add {
            "CASE WHEN EXISTS (SELECT 1 FROM json_each(machine_tags) WHERE value = ? COLLATE NOCASE) \
             THEN machine_tags ELSE json_insert(machine_tags, '$[#]', ?) END"
        } else {
            "(SELECT json_group_array(value) FROM json_each(machine_tags) WHERE value <> ? COLLATE NOCASE)"
        };
        let sql = format!(
            "UPDATE machines SET machine_tags = {change} WHERE id = ? AND tenant_id = ? RETURNING {MACHINE_COLUMNS}"
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(tag);
        if add {
            query = query.bind(tag);
        }
        let mut tx = self.write().await?;
        let row = query.bind(machine_id).bind(tenant.as_str()).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        row.as_ref().map(machine_from_row).transpose()
    }
}
