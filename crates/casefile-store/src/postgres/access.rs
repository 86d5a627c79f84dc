//! Roles and device groups for delegated users.

use casefile_proto::rbac::{DeviceGroup, Role};

use super::rows::{self, json};
use super::{PgStore, is_unique_violation};
use crate::*;

#[async_trait::async_trait]
impl AccessStore for PgStore {
    async fn roles(&self, tenant: &TenantId) -> Result<Vec<Role>> {
        let found = sqlx::query(
            "SELECT name, permissions, users, \"groups\" FROM rbac_roles WHERE tenant_id = $1 \
             ORDER BY lower(name) COLLATE \"C\"",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::role).collect()
    }

    async fn put_role(&self, tenant: &TenantId, role: &Role) -> Result<()> {
        sqlx::query(
            "INSERT INTO rbac_roles (tenant_id, name, permissions, users, \"groups\") VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, lower(name)) DO UPDATE SET permissions = excluded.permissions, \
                 users = excluded.users, \"groups\" = excluded.\"groups\"",
        )
        .bind(tenant.as_str())
        .bind(&role.name)
        .bind(json(&role.permissions)?)
        .bind(json(&role.users)?)
        .bind(json(&role.groups)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_role(&self, tenant: &TenantId, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM rbac_roles WHERE tenant_id = $1 AND lower(name) = lower($2)")
            .bind(tenant.as_str())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn device_groups(&self, tenant: &TenantId) -> Result<Vec<DeviceGroup>> {
        let found = sqlx::query(
            "SELECT id, name, rank, rules, user_groups FROM device_groups WHERE tenant_id = $1 ORDER BY rank, id",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::device_group).collect()
    }

    async fn create_device_group(&self, tenant: &TenantId, g: &DeviceGroup) -> Result<DeviceGroup> {
        let inserted: std::result::Result<i64, sqlx::Error> = sqlx::query_scalar(
            "INSERT INTO device_groups (tenant_id, name, rank, rules, user_groups) VALUES ($1, $2, $3, $4, $5) \
             RETURNING id",
        )
        .bind(tenant.as_str())
        .bind(&g.name)
        .bind(g.rank)
        .bind(json(&g.rules)?)
        .bind(json(&g.user_groups)?)
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Ok(id) => Ok(DeviceGroup { id, ..g.clone() }),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Duplicate(format!("a device group named '{}' exists already", g.name)))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_device_group(&self, tenant: &TenantId, id: i64) -> Result<bool> {
        let mut tx = self.write().await?;
        let done = sqlx::query("DELETE FROM device_groups WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE machines SET rbac_group_id = NULL WHERE tenant_id = $1 AND rbac_group_id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn ungrouped_user_groups(&self, tenant: &TenantId) -> Result<Vec<String>> {
        let row = sqlx::query("SELECT user_groups FROM ungrouped_access WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => rows::json_list(&row, "user_groups"),
            None => Ok(Vec::new()),
        }
    }

    async fn set_ungrouped_user_groups(&self, tenant: &TenantId, groups: &[String]) -> Result<()> {
        sqlx::query(
            "INSERT INTO ungrouped_access (tenant_id, user_groups) VALUES ($1, $2) \
             ON CONFLICT (tenant_id) DO UPDATE SET user_groups = excluded.user_groups",
        )
        .bind(tenant.as_str())
        .bind(json(&groups)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
