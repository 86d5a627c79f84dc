//! Application registrations: the clients of the token endpoint, one tenant each, with a
//! client id, a secret shown once and kept as an argon2 hash, and application permissions
//! (`roles`). The one place that creates, changes and authenticates them: the CLI
//! (`casefile app ...`) and the admin API (`/api/admin/applications`) both call it.

use casefile_proto::application::{Application, ApplicationSecret};
use casefile_proto::time::Timestamp;
use casefile_store::{ApplicationRecord, Store, StoreError};
use uuid::Uuid;

use super::permissions;
use crate::secrets;
use casefile_proto::TenantId;

/// Client secrets look like `cfs_<43 base64url characters>` (256 random bits).
pub const SECRET_PREFIX: &str = "cfs_";
/// Longest application name.
const MAX_NAME_CHARS: usize = 120;

#[derive(Debug, thiserror::Error)]
pub enum ApplicationError {
    #[error("'{0}' is not a valid tenant id (letters, digits, '-', '_', '.'; at most 64)")]
    InvalidTenant(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("'{0}' is not a valid client id (a GUID)")]
    InvalidClientId(String),
    #[error("unknown application permission(s): {unknown}; known: {known}")]
    UnknownRoles { unknown: String, known: String },
    #[error("an application named '{0}' already exists in this tenant")]
    DuplicateName(String),
    #[error("no application with client id {0} in this tenant")]
    NotFound(Uuid),
    #[error(transparent)]
    Store(StoreError),
    #[error("hashing the client secret failed: {0}")]
    Hash(String),
}

impl From<StoreError> for ApplicationError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

pub type Result<T, E = ApplicationError> = std::result::Result<T, E>;

/// Registers an application in `tenant` with a new secret, returned this once.
pub async fn create(
    store: &dyn Store,
    tenant: &str,
    name: &str,
    roles: &[String],
    now: Timestamp,
) -> Result<ApplicationSecret> {
    let Some(tenant) = TenantId::parse(tenant) else {
        return Err(ApplicationError::InvalidTenant(tenant.to_owned()));
    };
    let name = valid_name(name)?;
    let roles = valid_roles(roles)?;
    let secret = secrets::generate(SECRET_PREFIX);
    let record = ApplicationRecord {
        client_id: Uuid::new_v4(),
        tenant_id: tenant,
        name: name.clone(),
        secret_hash: hash_secret(&secret).await?,
        roles,
        created_at: now,
        secret_rotated_at: None,
        disabled_at: None,
    };
    match store.create_application(&record).await {
        Ok(()) => Ok(ApplicationSecret { application: to_wire(&record), client_secret: secret }),
        Err(StoreError::Duplicate(_)) => Err(ApplicationError::DuplicateName(name)),
        Err(e) => Err(e.into()),
    }
}

/// The tenant's applications, by name.
pub async fn list(store: &dyn Store, tenant: &TenantId) -> Result<Vec<Application>> {
    Ok(store.applications(tenant).await?.iter().map(to_wire).collect())
}

/// One application of the tenant.
pub async fn get(store: &dyn Store, tenant: &TenantId, client_id: &str) -> Result<Application> {
    let id = parse_client_id(client_id)?;
    found(id, store.application(tenant, id).await?)
}

/// Disables (`enabled == false`) or enables the application. A disabled application
/// gets no new tokens; tokens it already holds run out within the token lifetime.
pub async fn set_enabled(
    store: &dyn Store,
    tenant: &TenantId,
    client_id: &str,
    enabled: bool,
    now: Timestamp,
) -> Result<Application> {
    let id = parse_client_id(client_id)?;
    let disabled_at = (!enabled).then_some(now);
    found(id, store.set_application_disabled(tenant, id, disabled_at).await?)
}

/// Replaces the application's secret with a new one, returned this once; the old one
/// stops working at once.
pub async fn rotate_secret(
    store: &dyn Store,
    tenant: &TenantId,
    client_id: &str,
    now: Timestamp,
) -> Result<ApplicationSecret> {
    let id = parse_client_id(client_id)?;
    let secret = secrets::generate(SECRET_PREFIX);
    let hash = hash_secret(&secret).await?;
    let application = found(id, store.rotate_application_secret(tenant, id, &hash, now).await?)?;
    Ok(ApplicationSecret { application, client_secret: secret })
}

/// Replaces the application's roles; tokens issued from now on carry them.
pub async fn set_roles(store: &dyn Store, tenant: &TenantId, client_id: &str, roles: &[String]) -> Result<Application> {
    let id = parse_client_id(client_id)?;
    let roles = valid_roles(roles)?;
    found(id, store.update_application_roles(tenant, id, &roles).await?)
}

/// Why the token endpoint turns a client away. The first three are answered alike, so
/// that nobody learns which client ids exist; the log tells them apart.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("no application has this client id")]
    UnknownClient,
    #[error("the application belongs to tenant '{0}', not the one in the path")]
    WrongTenant(String),
    #[error("the client secret is wrong")]
    WrongSecret,
    /// The secret was right: only then is the application's state revealed.
    #[error("the application is disabled")]
    Disabled(ApplicationRecord),
    #[error(transparent)]
    Failed(ApplicationError),
}

/// Checks a client's credentials at the token endpoint of `path_tenant` (compared without
/// letter case). Every refusal costs one argon2 verification, so timing does not tell an
/// unknown client from a wrong secret.
pub async fn authenticate(
    store: &dyn Store,
    path_tenant: &str,
    client_id: &str,
    secret: &str,
) -> Result<ApplicationRecord, Rejected> {
    let record = match Uuid::try_parse(client_id.trim()) {
        Ok(id) => store.application_by_client_id(id).await.map_err(|e| Rejected::Failed(e.into()))?,
        Err(_) => None,
    };
    let hash = record.as_ref().map(|r| r.secret_hash.clone());
    let matches = verify_secret(secret, hash).await.map_err(Rejected::Failed)?;
    let Some(record) = record else {
        return Err(Rejected::UnknownClient);
    };
    if !record.tenant_id.eq_ignore_ascii_case(path_tenant) {
        return Err(Rejected::WrongTenant(record.tenant_id.into()));
    }
    if !matches {
        return Err(Rejected::WrongSecret);
    }
    if record.disabled_at.is_some() {
        return Err(Rejected::Disabled(record));
    }
    Ok(record)
}

/// The wire form of a registration (without its secret hash).
pub fn to_wire(r: &ApplicationRecord) -> Application {
    Application {
        client_id: r.client_id,
        tenant_id: r.tenant_id.to_string(),
        name: r.name.clone(),
        roles: r.roles.clone(),
        enabled: r.disabled_at.is_none(),
        created_at: r.created_at,
        secret_rotated_at: r.secret_rotated_at,
        disabled_at: r.disabled_at,
    }
}

fn found(id: Uuid, record: Option<ApplicationRecord>) -> Result<Application> {
    record.as_ref().map(to_wire).ok_or(ApplicationError::NotFound(id))
}

fn parse_client_id(raw: &str) -> Result<Uuid> {
    Uuid::try_parse(raw.trim()).map_err(|_| ApplicationError::InvalidClientId(raw.to_owned()))
}

fn valid_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApplicationError::InvalidName("the application name must not be empty".into()));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApplicationError::InvalidName(format!(
            "the application name must be at most {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApplicationError::InvalidName("the application name must not hold control characters".into()));
    }
    Ok(name.to_owned())
}

/// Known application permissions only, each once, in the order given.
fn valid_roles(roles: &[String]) -> Result<Vec<String>> {
    let unknown = permissions::unknown_roles(roles);
    if !unknown.is_empty() {
        return Err(ApplicationError::UnknownRoles {
            unknown: unknown.iter().map(|r| format!("'{r}'")).collect::<Vec<_>>().join(", "),
            known: permissions::ALL.join(", "),
        });
    }
    let mut unique: Vec<String> = Vec::with_capacity(roles.len());
    for role in roles {
        if !unique.contains(role) {
            unique.push(role.clone());
        }
    }
    Ok(unique)
}

async fn hash_secret(secret: &str) -> Result<String> {
    super::passwords::hash(secret).await.map_err(|e| ApplicationError::Hash(e.to_string()))
}

async fn verify_secret(secret: &str, hash: Option<String>) -> Result<bool> {
    super::passwords::verify(secret, hash).await.map_err(|e| ApplicationError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_verify_against_their_hash_only() {
        let hash = hash_secret("cfs_right").await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_secret("cfs_right", Some(hash.clone())).await.unwrap());
        assert!(!verify_secret("cfs_wrong", Some(hash)).await.unwrap());
        assert!(!verify_secret("cfs_right", None).await.unwrap());
    }

    #[test]
    fn roles_must_be_known_and_are_kept_once() {
        let roles = ["Machine.Read.All", "Casefile.Admin", "Machine.Read.All"].map(String::from);
        assert_eq!(valid_roles(&roles).unwrap(), vec!["Machine.Read.All", "Casefile.Admin"]);
        let error = valid_roles(&["Machine.Read.All".into(), "Machine.Read".into()]).unwrap_err().to_string();
        assert!(error.contains("'Machine.Read'") && error.contains("known: Machine.CollectForensics"), "{error}");
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(valid_name("  SOAR  ").unwrap(), "SOAR");
        assert!(valid_name(" ").is_err());
        assert!(valid_name(&"x".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(valid_name("a\nb").is_err());
    }
}
