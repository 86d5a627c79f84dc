//! Machines: enrollment's row writes, host facts, lookups, lists and tags.

use casefile_proto::time::Timestamp;
use sqlx::{AssertSqlSafe, PgConnection};

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
        .bind(&m.tenant_id)
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

impl PgStore {
    pub(super) async fn enroll_machine(&self, m: &MachineEnrollment) -> Result<MachineRecord> {
        let mut tx = self.write().await?;
        write_machine(&mut tx, m, MACHINE_UPSERT).await?;
        let machine = machine_in(&mut tx, &m.id).await?;
        tx.commit().await?;
        Ok(machine)
    }

    pub(super) async fn machine_by_credential(&self, hash: &str) -> Result<Option<MachineRecord>> {
        let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE credential_hash = $1");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(rows::machine).transpose()
    }

    pub(super) async fn machine(&self, tenant: &str, id_or_name: &str) -> Result<Option<MachineRecord>> {
        let by_id = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE id = $1 AND tenant_id = $2");
        let row = sqlx::query(AssertSqlSafe(by_id))
            .bind(id_or_name.to_ascii_lowercase())
            .bind(tenant)
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

    pub(super) async fn machines(&self, tenant: &str, query: &ListQuery) -> Result<Listed<MachineRecord>> {
        let listed = self
            .list("machines", MACHINE_COLUMNS, filter::MACHINE_COLUMNS, "last_seen DESC, id COLLATE \"C\"", tenant, query)
            .await?;
        listed.try_map_pg(rows::machine)
    }

    pub(super) async fn machines_named(&self, tenant: &str, name: &str) -> Result<Vec<MachineRecord>> {
        // Bounded: the list only ever names candidates in an error.
        let sql = format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE tenant_id = $1 AND lower(computer_dns_name) = lower($2) \
             ORDER BY last_seen DESC, id COLLATE \"C\" LIMIT 100"
        );
        let found = sqlx::query(AssertSqlSafe(sql)).bind(tenant).bind(name).fetch_all(&self.pool).await?;
        found.iter().map(rows::machine).collect()
    }

    pub(super) async fn update_host_facts(
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
        super::audit::insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn touch_machine(&self, machine_id: &str, at: Timestamp, ip: Option<&str>) -> Result<()> {
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

    pub(super) async fn change_machine_tag(
        &self,
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
        let sql = format!("UPDATE machines SET machine_tags = {change} WHERE id = $2 RETURNING {MACHINE_COLUMNS}");
        let mut tx = self.write().await?;
        let row = sqlx::query(AssertSqlSafe(sql)).bind(tag).bind(machine_id).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        row.as_ref().map(rows::machine).transpose()
    }

    pub(super) async fn set_machine_group(&self, machine_id: &str, group: Option<i64>) -> Result<()> {
        sqlx::query("UPDATE machines SET rbac_group_id = $1 WHERE id = $2")
            .bind(group)
            .bind(machine_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
