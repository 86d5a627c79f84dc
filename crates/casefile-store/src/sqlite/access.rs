//! SQLite: the access area (roles, device groups).

use async_trait::async_trait;

use super::rows::*;
use super::*;

#[async_trait]
impl AccessStore for SqliteStore {
    async fn roles(&self, tenant: &TenantId) -> Result<Vec<casefile_proto::rbac::Role>> {
        let rows =
            sqlx::query("SELECT name, permissions, users, groups FROM rbac_roles WHERE tenant_id = ? ORDER BY name")
                .bind(tenant.as_str())
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(role_from_row).collect()
    }

    async fn put_role(&self, tenant: &TenantId, role: &casefile_proto::rbac::Role) -> Result<()> {
        sqlx::query(
            "INSERT INTO rbac_roles (tenant_id, name, permissions, users, groups) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET permissions = excluded.permissions, \
                 users = excluded.users, groups = excluded.groups",
        )
        .bind(tenant.as_str())
        .bind(&role.name)
        .bind(json_text(&role.permissions)?)
        .bind(json_text(&role.users)?)
        .bind(json_text(&role.groups)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_role(&self, tenant: &TenantId, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM rbac_roles WHERE tenant_id = ? AND name = ?")
            .bind(tenant.as_str())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn device_groups(&self, tenant: &TenantId) -> Result<Vec<casefile_proto::rbac::DeviceGroup>> {
        let rows = sqlx::query(
            "SELECT id, name, rank, rules, user_groups FROM device_groups WHERE tenant_id = ? ORDER BY rank, id",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_group_from_row).collect()
    }

    async fn create_device_group(
        &self,
        tenant: &TenantId,
        g: &casefile_proto::rbac::DeviceGroup,
    ) -> Result<casefile_proto::rbac::DeviceGroup> {
        let inserted =
            sqlx::query("INSERT INTO device_groups (tenant_id, name, rank, rules, user_groups) VALUES (?, ?, ?, ?, ?)")
                .bind(tenant.as_str())
                .bind(&g.name)
                .bind(g.rank)
                .bind(json_text(&g.rules)?)
                .bind(json_text(&g.user_groups)?)
                .execute(&self.pool)
                .await;
        match inserted {
            Ok(done) => Ok(casefile_proto::rbac::DeviceGroup { id: done.last_insert_rowid(), ..g.clone() }),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Duplicate(format!("a device group named '{}' exists already", g.name)))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_device_group(&self, tenant: &TenantId, id: i64) -> Result<bool> {
        let mut tx = self.write().await?;
        let done = sqlx::query("DELETE FROM device_groups WHERE tenant_id = ? AND id = ?")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE machines SET rbac_group_id = NULL WHERE tenant_id = ? AND rbac_group_id = ?")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn ungrouped_user_groups(&self, tenant: &TenantId) -> Result<Vec<String>> {
        let row = sqlx::query("SELECT user_groups FROM ungrouped_access WHERE tenant_id = ?")
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => json_list(row.try_get::<&str, _>("user_groups")?),
            None => Ok(Vec::new()),
        }
    }

    async fn set_ungrouped_user_groups(&self, tenant: &TenantId, groups: &[String]) -> Result<()> {
        sqlx::query(
            "INSERT INTO ungrouped_access (tenant_id, user_groups) VALUES (?, ?) \
             ON CONFLICT (tenant_id) DO UPDATE SET user_groups = excluded.user_groups",
        )
        .bind(tenant.as_str())
        .bind(json_text(&groups)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
