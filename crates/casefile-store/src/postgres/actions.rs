//! Machine actions, their packages, cancellation, claims and the time rules.

use casefile_proto::action::{ActionStatus, MachineAction};
use casefile_proto::time::Timestamp;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::audit::{insert_audit, insert_audit_opt};
use super::rows::{self, ACTION_COLUMNS, PACKAGE_COLUMNS};
use super::{PgStore, filter, is_unique_violation};
use crate::*;

async fn insert_action(conn: &mut PgConnection, tenant: &TenantId, a: &MachineAction) -> Result<()> {
    let result = sqlx::query(
        "INSERT INTO machine_actions (id, tenant_id, machine_id, type, status, title, requestor, \
             requestor_comment, external_id, request_source, computer_dns_name, created_at, updated_at, \
             error_hresult, troubleshoot_info, profile) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(a.id)
    .bind(tenant.as_str())
    .bind(&a.machine_id)
    .bind(a.action_type.as_str())
    .bind(a.status.as_str())
    .bind(&a.title)
    .bind(&a.requestor)
    .bind(&a.requestor_comment)
    .bind(&a.external_id)
    .bind(&a.request_source)
    .bind(&a.computer_dns_name)
    .bind(a.creation_date_time_utc)
    .bind(a.last_update_date_time_utc)
    .bind(a.error_h_result)
    .bind(&a.troubleshoot_info)
    .bind(&a.profile)
    .execute(conn)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::ActiveRequestExists),
        Err(e) => Err(e.into()),
    }
}

async fn insert_package(conn: &mut PgConnection, p: &PackageRecord) -> Result<()> {
    let size = i64::try_from(p.size).map_err(|_| StoreError::Query(format!("package size {}", p.size)))?;
    sqlx::query(
        "INSERT INTO packages (action_id, tenant_id, blob_key, size, sha256, stored_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(p.action_id)
    .bind(p.tenant_id.as_str())
    .bind(&p.blob_key)
    .bind(size)
    .bind(&p.sha256)
    .bind(p.stored_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// ` status IN (...)` for the statuses allowed to precede `to`.
fn push_predecessors(q: &mut QueryBuilder<Postgres>, to: ActionStatus) {
    let allowed: Vec<&str> = to.predecessors().iter().map(|s| s.as_str()).collect();
    q.push(" status = ANY(").push_bind(allowed).push(")");
}

pub(super) fn push_transition_set(q: &mut QueryBuilder<Postgres>, change: &Transition) {
    q.push("UPDATE machine_actions SET status = ");
    q.push_bind(change.to.as_str());
    q.push(", updated_at = ");
    q.push_bind(change.at);
    if let Some(h) = change.error_h_result {
        q.push(", error_hresult = ").push_bind(h);
    }
    if let Some(info) = &change.troubleshoot_info {
        q.push(", troubleshoot_info = ").push_bind(info.clone());
    }
    if change.to == ActionStatus::Cancelled {
        // A confirmed cancellation keeps who asked for it and why.
        q.push(", cancelled_at = ").push_bind(change.at);
        q.push(", cancellation_requestor = COALESCE(").push_bind(change.cancellation_requestor.clone());
        q.push(", cancellation_requestor), cancellation_comment = COALESCE(");
        q.push_bind(change.cancellation_comment.clone()).push(", cancellation_comment)");
    }
}

fn ids(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Uuid>> {
    rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
}

#[async_trait::async_trait]
impl ActionStore for PgStore {
    async fn create_action(&self, tenant: &TenantId, a: &MachineAction, audit: Option<&AuditEntry>) -> Result<()> {
        let mut tx = self.write().await?;
        insert_action(&mut tx, tenant, a).await?;
        insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn action(&self, tenant: &TenantId, id: Uuid) -> Result<Option<MachineAction>> {
        let sql = format!("SELECT {ACTION_COLUMNS} FROM machine_actions WHERE id = $1 AND tenant_id = $2");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(id).bind(tenant.as_str()).fetch_optional(&self.pool).await?;
        row.as_ref().map(rows::action).transpose()
    }

    async fn actions(&self, tenant: &TenantId, query: &ListQuery) -> Result<Listed<MachineAction>> {
        let listed = self
            .list("machine_actions", ACTION_COLUMNS, filter::ACTION_COLUMNS, "created_at DESC, id DESC", tenant, query)
            .await?;
        listed.try_map_pg(rows::action)
    }

    async fn transition(
        &self,
        id: Uuid,
        machine_id: &str,
        change: &Transition,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<MachineAction>> {
        let mut q = QueryBuilder::<Postgres>::new("");
        push_transition_set(&mut q, change);
        q.push(" WHERE id = ").push_bind(id);
        q.push(" AND machine_id = ").push_bind(machine_id.to_owned());
        q.push(" AND");
        push_predecessors(&mut q, change.to);
        q.push(format!(" RETURNING {ACTION_COLUMNS}"));
        let mut tx = self.write().await?;
        let Some(row) = q.build().fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        rows::action(&row).map(Some)
    }

    async fn complete_with_package(
        &self,
        machine_id: &str,
        p: &PackageRecord,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<MachineAction>> {
        let mut q = QueryBuilder::<Postgres>::new("");
        push_transition_set(&mut q, &Transition::to(ActionStatus::Succeeded, at));
        q.push(" WHERE id = ").push_bind(p.action_id);
        q.push(" AND machine_id = ").push_bind(machine_id.to_owned());
        // A cancellation asked for during the upload wins: no package is kept.
        q.push(" AND cancel_requested_at IS NULL AND");
        push_predecessors(&mut q, ActionStatus::Succeeded);
        q.push(format!(" RETURNING {ACTION_COLUMNS}"));
        let mut tx = self.write().await?;
        let Some(row) = q.build().fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        let action = rows::action(&row)?;
        insert_package(&mut tx, p).await?;
        insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Some(action))
    }

    async fn package(&self, tenant: &TenantId, action_id: Uuid) -> Result<Option<PackageRecord>> {
        let sql = format!("SELECT {PACKAGE_COLUMNS} FROM packages WHERE action_id = $1 AND tenant_id = $2");
        let row =
            sqlx::query(AssertSqlSafe(sql)).bind(action_id).bind(tenant.as_str()).fetch_optional(&self.pool).await?;
        row.as_ref().map(rows::package).transpose()
    }

    async fn import_package(
        &self,
        tenant: &TenantId,
        action: &MachineAction,
        package: &PackageRecord,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        insert_action(&mut tx, tenant, action).await?;
        insert_package(&mut tx, package).await?;
        insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn request_cancel(
        &self,
        tenant: &TenantId,
        id: Uuid,
        r: &CancelRequest,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<CancelOutcome>> {
        let mut q = QueryBuilder::<Postgres>::new("");
        let change = Transition {
            cancellation_requestor: Some(r.requestor.clone()),
            cancellation_comment: r.comment.clone(),
            ..Transition::to(ActionStatus::Cancelled, r.at)
        };
        push_transition_set(&mut q, &change);
        q.push(" WHERE id = ").push_bind(id);
        q.push(" AND tenant_id = ").push_bind(tenant.as_str().to_owned());
        q.push(format!(" AND status = 'Pending' RETURNING {ACTION_COLUMNS}"));
        let mut tx = self.write().await?;
        if let Some(row) = q.build().fetch_optional(&mut *tx).await? {
            insert_audit_opt(&mut tx, audit).await?;
            tx.commit().await?;
            return Ok(Some(CancelOutcome::Cancelled(rows::action(&row)?)));
        }
        // Running: record the first request; the agent confirms the stop.
        let sql = format!(
            "UPDATE machine_actions SET cancel_requested_at = COALESCE(cancel_requested_at, $1), \
                 cancellation_requestor = COALESCE(cancellation_requestor, $2), \
                 cancellation_comment = COALESCE(cancellation_comment, $3) \
             WHERE id = $4 AND tenant_id = $5 AND status = 'InProgress' RETURNING {ACTION_COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(r.at)
            .bind(&r.requestor)
            .bind(&r.comment)
            .bind(id)
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = row {
            insert_audit_opt(&mut tx, audit).await?;
            tx.commit().await?;
            return Ok(Some(CancelOutcome::Requested(rows::action(&row)?)));
        }
        drop(tx);
        Ok(self.action(tenant, id).await?.map(CancelOutcome::AlreadyFinal))
    }

    async fn cancel_requests(&self, machine_id: &str) -> Result<Vec<Uuid>> {
        let found = sqlx::query(
            "SELECT id FROM machine_actions WHERE machine_id = $1 AND status = 'InProgress' \
             AND cancel_requested_at IS NOT NULL ORDER BY cancel_requested_at",
        )
        .bind(machine_id)
        .fetch_all(&self.pool)
        .await?;
        ids(&found)
    }

    async fn confirm_cancel(
        &self,
        machine_id: &str,
        id: Uuid,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<MachineAction>> {
        let mut q = QueryBuilder::<Postgres>::new("");
        push_transition_set(&mut q, &Transition::to(ActionStatus::Cancelled, at));
        q.push(" WHERE id = ").push_bind(id);
        q.push(" AND machine_id = ").push_bind(machine_id.to_owned());
        q.push(format!(" AND status = 'InProgress' AND cancel_requested_at IS NOT NULL RETURNING {ACTION_COLUMNS}"));
        let mut tx = self.write().await?;
        let Some(row) = q.build().fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        rows::action(&row).map(Some)
    }

    async fn fail_in_progress(&self, machine_id: &str, change: &Transition) -> Result<Vec<Uuid>> {
        self.fail_in_progress_except(machine_id, &[], change).await
    }

    async fn claim_leased(
        &self,
        machine_id: &str,
        at: Timestamp,
        lease_until: Option<Timestamp>,
        audit: Option<&(dyn for<'c> Fn(&'c Claim) -> AuditEntry + Sync)>,
    ) -> Result<Option<Claim>> {
        // The candidate is locked as it is chosen and rows another claim holds are passed
        // over: two servers polling for the same machine never hand out the same action.
        let sql = format!(
            "UPDATE machine_actions SET status = 'InProgress', lease_expires_at = $1, accepted_at = $2, \
                 offers = offers + 1, \
                 updated_at = CASE WHEN status = 'Pending' THEN $3 ELSE updated_at END \
             WHERE id = (SELECT id FROM machine_actions WHERE machine_id = $4 AND \
                             (status = 'Pending' OR (status = 'InProgress' AND accepted_at IS NULL \
                              AND cancel_requested_at IS NULL AND lease_expires_at <= $5)) \
                         ORDER BY status = 'Pending', created_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
               AND (status = 'Pending' OR (status = 'InProgress' AND accepted_at IS NULL \
                    AND cancel_requested_at IS NULL AND lease_expires_at <= $5)) \
             RETURNING {ACTION_COLUMNS}, offers"
        );
        // Most polls find nothing: a read says so without a write transaction. Anything
        // created after this read wakes the poll (the dispatcher), which claims then.
        let claimable: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM machine_actions WHERE machine_id = $1 AND \
                 (status = 'Pending' OR (status = 'InProgress' AND accepted_at IS NULL \
                  AND cancel_requested_at IS NULL AND lease_expires_at <= $2)) LIMIT 1",
        )
        .bind(machine_id)
        .bind(at)
        .fetch_optional(&self.pool)
        .await?;
        if claimable.is_none() {
            return Ok(None);
        }
        let mut tx = self.write().await?;
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(lease_until)
            .bind(lease_until.is_none().then_some(at))
            .bind(at)
            .bind(machine_id)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await?;
        let claim = match row {
            Some(row) => {
                let offers: i64 = row.try_get("offers")?;
                Some(Claim { action: rows::action(&row)?, offers: u32::try_from(offers).unwrap_or(u32::MAX) })
            }
            None => None,
        };
        if let (Some(claim), Some(entry)) = (&claim, audit) {
            insert_audit(&mut tx, &entry(claim)).await?;
        }
        tx.commit().await?;
        Ok(claim)
    }

    async fn set_progress(
        &self,
        machine_id: &str,
        id: Uuid,
        progress: &casefile_proto::action::Progress,
    ) -> Result<bool> {
        let mut tx = self.write().await?;
        let changed = sqlx::query(
            "UPDATE machine_actions SET progress = $1 WHERE id = $2 AND machine_id = $3 AND status = 'InProgress'",
        )
        .bind(sqlx::types::Json(progress))
        .bind(id)
        .bind(machine_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(changed > 0)
    }

    async fn accept_action(
        &self,
        machine_id: &str,
        id: Uuid,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        let mut tx = self.write().await?;
        let changed = sqlx::query(
            "UPDATE machine_actions SET accepted_at = COALESCE(accepted_at, $1) \
             WHERE id = $2 AND machine_id = $3 AND status = 'InProgress'",
        )
        .bind(at)
        .bind(id)
        .bind(machine_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 {
            insert_audit_opt(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(changed > 0)
    }

    async fn fail_in_progress_except(&self, machine_id: &str, keep: &[Uuid], change: &Transition) -> Result<Vec<Uuid>> {
        let mut q = QueryBuilder::<Postgres>::new("");
        push_transition_set(&mut q, change);
        q.push(" WHERE machine_id = ").push_bind(machine_id.to_owned());
        q.push(" AND status = 'InProgress' AND NOT (id = ANY(").push_bind(keep.to_vec()).push("))");
        q.push(" RETURNING id");
        let mut tx = self.write().await?;
        let failed = ids(&q.build().fetch_all(&mut *tx).await?)?;
        tx.commit().await?;
        Ok(failed)
    }

    async fn next_lease_end(&self, machine_id: &str) -> Result<Option<Timestamp>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(lease_expires_at) FROM machine_actions WHERE machine_id = $1 AND status = 'InProgress' \
             AND accepted_at IS NULL AND cancel_requested_at IS NULL",
        )
        .bind(machine_id)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn package_by_sha256(&self, tenant: &TenantId, sha256: &str) -> Result<Option<PackageRecord>> {
        let sql = format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE tenant_id = $1 AND sha256 = $2 AND deleted_at IS NULL LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).bind(sha256).fetch_optional(&self.pool).await?;
        row.as_ref().map(rows::package).transpose()
    }
}
