//! The identity area: signing keys, applications, enrollment tokens.

use async_trait::async_trait;
use casefile_proto::time::Timestamp;
use uuid::Uuid;

use crate::*;

/// Who may call: the server's signing keys, applications (clients of the token
/// endpoint; secrets stored as argon2 hashes) and enrollment tokens (stored as hashes).
///
/// Scope: signing keys are the server's, not a tenant's. Application and token
/// management takes the [`TenantId`]. Two lookups are cross-tenant by design, for the
/// endpoints that authenticate a caller and then compare the tenant themselves:
/// `application_by_client_id` (client ids are unique across tenants) and
/// `enrollment_token_by_hash`. `create_application` and `insert_enrollment_token` take
/// their tenant from the record.
#[async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    async fn signing_keys(&self, purpose: &str) -> Result<Vec<SigningKeyRecord>>;
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<()>;
    /// Marks a key retired from `at` on: it neither signs nor verifies any more.
    /// `false` when no such key was in service.
    async fn retire_signing_key(&self, kid: &str, at: Timestamp) -> Result<bool>;

    /// Inserts a new application; [`StoreError::Duplicate`] when its tenant already has one
    /// of that name (letter case aside).
    async fn create_application(&self, app: &ApplicationRecord) -> Result<()>;
    async fn application(&self, tenant: &TenantId, client_id: Uuid) -> Result<Option<ApplicationRecord>>;
    /// By client id alone (client ids are unique across tenants): the token endpoint
    /// compares the tenant itself.
    async fn application_by_client_id(&self, client_id: Uuid) -> Result<Option<ApplicationRecord>>;
    /// The tenant's applications, by name.
    async fn applications(&self, tenant: &TenantId) -> Result<Vec<ApplicationRecord>>;
    /// Replaces the application's roles. `None`: no such application in the tenant.
    async fn update_application_roles(
        &self,
        tenant: &TenantId,
        client_id: Uuid,
        roles: &[String],
    ) -> Result<Option<ApplicationRecord>>;
    /// Disables the application from `Some(at)` on (an already disabled one keeps its
    /// first `disabled_at`), or enables it with `None`. `None`: no such application.
    async fn set_application_disabled(
        &self,
        tenant: &TenantId,
        client_id: Uuid,
        disabled_at: Option<Timestamp>,
    ) -> Result<Option<ApplicationRecord>>;
    /// Replaces the secret's hash; the old secret stops working at once. `None`: no such
    /// application.
    async fn rotate_application_secret(
        &self,
        tenant: &TenantId,
        client_id: Uuid,
        secret_hash: &str,
        at: Timestamp,
    ) -> Result<Option<ApplicationRecord>>;

    async fn insert_enrollment_token(&self, token: &EnrollmentTokenRecord) -> Result<()>;
    async fn enrollment_token_by_hash(&self, hash: &str) -> Result<Option<EnrollmentTokenRecord>>;
    /// The tenant's enrollment tokens, newest first.
    async fn enrollment_tokens(&self, tenant: &TenantId) -> Result<Vec<EnrollmentTokenRecord>>;
    /// Revokes the token (a revoked one keeps its first `revoked_at`). `None`: no such token.
    async fn revoke_enrollment_token(
        &self,
        tenant: &TenantId,
        id: Uuid,
        at: Timestamp,
    ) -> Result<Option<EnrollmentTokenRecord>>;
}
