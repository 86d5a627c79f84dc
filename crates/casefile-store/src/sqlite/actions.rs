//! SQLite: the actions area.

use async_trait::async_trait;
use casefile_proto::action::{ActionStatus, MachineAction};
use casefile_proto::time::Timestamp;
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::rows::*;
use super::*;

pub(super) async fn insert_action(conn: &mut sqlx::SqliteConnection, tenant: &str, a: &MachineAction) -> Result<()> {
    let result = sqlx::query(
        "INSERT INTO machine_actions (id, tenant_id, machine_id, type, status, title, requestor, \
             requestor_comment, external_id, request_source, computer_dns_name, created_at, updated_at, \
             error_hresult, troubleshoot_info, profile) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(a.id.to_string())
    .bind(tenant)
    .bind(&a.machine_id)
    .bind(a.action_type.as_str())
    .bind(a.status.as_str())
    .bind(&a.title)
    .bind(&a.requestor)
    .bind(&a.requestor_comment)
    .bind(&a.external_id)
    .bind(&a.request_source)
    .bind(&a.computer_dns_name)
    .bind(micros(a.creation_date_time_utc))
    .bind(micros(a.last_update_date_time_utc))
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

pub(super) async fn insert_package(conn: &mut sqlx::SqliteConnection, p: &PackageRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO packages (action_id, tenant_id, blob_key, size, sha256, stored_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(p.action_id.to_string())
    .bind(p.tenant_id.as_str())
    .bind(&p.blob_key)
    .bind(p.size as i64)
    .bind(&p.sha256)
    .bind(micros(p.stored_at))
    .execute(conn)
    .await?;
    Ok(())
}

/// `status IN (...)` for the statuses allowed to precede `to`.
pub(super) fn push_predecessors(q: &mut QueryBuilder<Sqlite>, to: ActionStatus) {
    q.push(" status IN (");
    let mut list = q.separated(", ");
    for s in to.predecessors() {
        list.push_bind(s.as_str());
    }
    list.push_unseparated(")");
}

#[async_trait]
impl ActionStore for SqliteStore {
    async fn create_action(&self, tenant: &TenantId, a: &MachineAction, audit: Option<&AuditEntry>) -> Result<()> {
        let mut tx = self.write().await?;
        insert_action(&mut tx, tenant, a).await?;
        insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn action(&self, tenant: &TenantId, id: Uuid) -> Result<Option<MachineAction>> {
        let sql = format!("SELECT {ACTION_COLUMNS} FROM machine_actions WHERE id = ? AND tenant_id = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(action_from_row).transpose()
    }

    async fn actions(&self, tenant: &TenantId, query: &ListQuery) -> Result<Listed<MachineAction>> {
        let listed = self
            .list("machine_actions", ACTION_COLUMNS, filter::ACTION_COLUMNS, "created_at DESC, id DESC", tenant, query)
            .await?;
        listed.try_map(action_from_row)
    }

    async fn transition(
        &self,
        id: Uuid,
        machine_id: &str,
        change: &Transition,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<MachineAction>> {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_transition_set(&mut q, change);
        q.push(" WHERE id = ").push_bind(id.to_string());
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
        action_from_row(&row).map(Some)
    }

    async fn complete_with_package(
        &self,
        machine_id: &str,
        p: &PackageRecord,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<MachineAction>> {
        let mut tx = self.write().await?;
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_transition_set(&mut q, &Transition::to(ActionStatus::Succeeded, at));
        q.push(" WHERE id = ").push_bind(p.action_id.to_string());
        q.push(" AND machine_id = ").push_bind(machine_id.to_owned());
        // A cancellation asked for during the upload wins: no package is kept.
        q.push(" AND cancel_requested_at IS NULL AND");
        push_predecessors(&mut q, ActionStatus::Succeeded);
        q.push(format!(" RETURNING {ACTION_COLUMNS}"));
        let Some(row) = q.build().fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        let action = action_from_row(&row)?;
        insert_package(&mut tx, p).await?;
        insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Some(action))
    }

    async fn package(&self, tenant: &TenantId, action_id: Uuid) -> Result<Option<PackageRecord>> {
        let sql = format!("SELECT {PACKAGE_COLUMNS} FROM packages WHERE action_id = ? AND tenant_id = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(action_id.to_string())
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(package_from_row).transpose()
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

    async fn package_by_sha256(&self, tenant: &TenantId, sha256: &str) -> Result<Option<PackageRecord>> {
        let sql = format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE tenant_id = ? AND sha256 = ? AND deleted_at IS NULL LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).bind(sha256).fetch_optional(&self.pool).await?;
        row.as_ref().map(package_from_row).transpose()
    }

    async fn request_cancel(
        &self,
        tenant: &TenantId,
        id: Uuid,
        r: &CancelRequest,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<CancelOutcome>> {
        let mut q = QueryBuilder::<Sqlite>::new("");
        let change = Transition {
            cancellation_requestor: Some(r.requestor.clone()),
            cancellation_comment: r.comment.clone(),
            ..Transition::to(ActionStatus::Cancelled, r.at)
        };
        push_transition_set(&mut q, &change);
        q.push(" WHERE id = ").push_bind(id.to_string());
        q.push(" AND tenant_id = ").push_bind(tenant.as_str().to_owned());
        q.push(format!(" AND status = 'Pending' RETURNING {ACTION_COLUMNS}"));
        let mut tx = self.write().await?;
        if let Some(row) = q.build().fetch_optional(&mut *tx).await? {
            insert_audit_opt(&mut tx, audit).await?;
            tx.commit().await?;
            return Ok(Some(CancelOutcome::Cancelled(action_from_row(&row)?)));
        }
        // Running: record the first request; the agent confirms the stop.
        let sql = format!(
            "UPDATE machine_actions SET cancel_requested_at = COALESCE(cancel_requested_at, ?), \
                 cancellation_requestor = COALESCE(cancellation_requestor, ?), \
                 cancellation_comment = COALESCE(cancellation_comment, ?) \
             WHERE id = ? AND tenant_id = ? AND status = 'InProgress' RETURNING {ACTION_COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(micros(r.at))
            .bind(&r.requestor)
            .bind(&r.comment)
            .bind(id.to_string())
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = row {
            insert_audit_opt(&mut tx, audit).await?;
            tx.commit().await?;
            return Ok(Some(CancelOutcome::Requested(action_from_row(&row)?)));
        }
        drop(tx);
        Ok(self.action(tenant, id).await?.map(CancelOutcome::AlreadyFinal))
    }

    async fn cancel_requests(&self, machine_id: &str) -> Result<Vec<Uuid>> {
        let rows = sqlx::query(
            "SELECT id FROM machine_actions WHERE machine_id = ? AND status = 'InProgress' \
             AND cancel_requested_at IS NOT NULL ORDER BY cancel_requested_at",
        )
        .bind(machine_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| uuid_column(r, "id")).collect()
    }

    async fn confirm_cancel(
        &self,
        machine_id: &str,
        id: Uuid,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<MachineAction>> {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_transition_set(&mut q, &Transition::to(ActionStatus::Cancelled, at));
        q.push(" WHERE id = ").push_bind(id.to_string());
        q.push(" AND machine_id = ").push_bind(machine_id.to_owned());
        q.push(format!(" AND status = 'InProgress' AND cancel_requested_at IS NOT NULL RETURNING {ACTION_COLUMNS}"));
        let mut tx = self.write().await?;
        let Some(row) = q.build().fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        action_from_row(&row).map(Some)
    }

    async fn fail_in_progress(&self, machine_id: &str, change: &Transition) -> Result<Vec<Uuid>> {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_transition_set(&mut q, change);
        q.push(" WHERE machine_id = ").push_bind(machine_id.to_owned());
        q.push(" AND status = 'InProgress' RETURNING id");
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(|r| uuid_column(r, "id")).collect()
    }

    async fn fail_in_progress_except(&self, machine_id: &str, keep: &[Uuid], change: &Transition) -> Result<Vec<Uuid>> {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_transition_set(&mut q, change);
        q.push(" WHERE machine_id = ").push_bind(machine_id.to_owned());
        q.push(" AND status = 'InProgress'");
        if !keep.is_empty() {
            q.push(" AND id NOT IN (");
            let mut list = q.separated(", ");
            for id in keep {
                list.push_bind(id.to_string());
            }
            list.push_unseparated(")");
        }
        q.push(" RETURNING id");
        let mut tx = self.write().await?;
        let rows = q.build().fetch_all(&mut *tx).await?;
        let failed = rows.iter().map(|r| uuid_column(r, "id")).collect::<Result<Vec<_>>>()?;
        tx.commit().await?;
        Ok(failed)
    }

    async fn claim_leased(
        &self,
        machine_id: &str,
        at: Timestamp,
        lease_until: Option<Timestamp>,
        audit: Option<&(dyn for<'c> Fn(&'c Claim) -> AuditEntry + Sync)>,
    ) -> Result<Option<Claim>> {
        // The UPDATE comes first so the transaction takes the write lock at once (a read
        // first could not be upgraded when another writer got in between).
        let sql = format!(
            "UPDATE machine_actions SET status = 'InProgress', lease_expires_at = ?, accepted_at = ?, \
                 offers = offers + 1, \
                 updated_at = CASE WHEN status = 'Pending' THEN ? ELSE updated_at END \
             WHERE id = (SELECT id FROM machine_actions WHERE machine_id = ? AND \
                             (status = 'Pending' OR (status = 'InProgress' AND accepted_at IS NULL \
                              AND cancel_requested_at IS NULL AND lease_expires_at <= ?)) \
                         ORDER BY status = 'Pending', created_at LIMIT 1) \
               AND status IN ('Pending', 'InProgress') \
             RETURNING {ACTION_COLUMNS}, offers"
        );
        // Most polls find nothing: a read says so without queueing for the write lock.
        // Anything created after this read wakes the poll (the dispatcher), which claims then.
        let claimable: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM machine_actions WHERE machine_id = ? AND \
                 (status = 'Pending' OR (status = 'InProgress' AND accepted_at IS NULL \
                  AND cancel_requested_at IS NULL AND lease_expires_at <= ?)) LIMIT 1",
        )
        .bind(machine_id)
        .bind(micros(at))
        .fetch_optional(&self.pool)
        .await?;
        if claimable.is_none() {
            return Ok(None);
        }
        let mut tx = self.write().await?;
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(lease_until.map(micros))
            .bind(lease_until.is_none().then(|| micros(at)))
            .bind(micros(at))
            .bind(machine_id)
            .bind(micros(at))
            .fetch_optional(&mut *tx)
            .await?;
        let claim = match row {
            Some(row) => {
                let offers: i64 = row.try_get("offers")?;
                Some(Claim { action: action_from_row(&row)?, offers: u32::try_from(offers).unwrap_or(u32::MAX) })
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
            "UPDATE machine_actions SET progress = ? WHERE id = ? AND machine_id = ? AND status = 'InProgress'",
        )
        .bind(serde_json::to_string(progress).map_err(|e| StoreError::Corrupt(format!("progress: {e}")))?)
        .bind(id.to_string())
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
            "UPDATE machine_actions SET accepted_at = COALESCE(accepted_at, ?) \
             WHERE id = ? AND machine_id = ? AND status = 'InProgress'",
        )
        .bind(micros(at))
        .bind(id.to_string())
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

    async fn next_lease_end(&self, machine_id: &str) -> Result<Option<Timestamp>> {
        let end: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(lease_expires_at) FROM machine_actions WHERE machine_id = ? AND status = 'InProgress' \
             AND accepted_at IS NULL AND cancel_requested_at IS NULL",
        )
        .bind(machine_id)
        .fetch_one(&self.pool)
        .await?;
        opt_from_micros(end)
    }
}
