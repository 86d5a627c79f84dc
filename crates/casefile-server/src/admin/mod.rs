//! The admin layer: every management operation the `casefile` command offers (tokens,
//! enrollment tokens, applications, signing keys, RBAC, the audit trail, machine
//! identities, migrations, backups), on the same [`Config`] the server runs with.
//!
//! API boundary: the CLI calls [`Admin`] and gets [`AdminError`] back; it never sees the
//! server's state or an HTTP error.

mod archive;
mod lock;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use casefile_proto::agent::EnrollmentToken;
use casefile_proto::application::{Application, ApplicationSecret};
use casefile_proto::audit::AuditEvent;
use casefile_proto::rbac::{DeviceGroup, Role};
use casefile_proto::{ErrorCode, TenantId};
use casefile_store::{AuditFilter, Database, MachineRecord, Schema as StoreSchema, Store, StoreError};

use crate::auth::AuthError;
use crate::auth::applications::{self, ApplicationError};
use crate::auth::keys::{self, KeyInfo};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError};
use crate::enrollment::{self, EnrollmentError};
use crate::error::ApiError;
use crate::{Endpoint, Schema, Server, ServerError, TokenRequest};

pub use archive::{BackupReport, RestoreReport, restore};
pub use lock::DataDirLock;

/// The tenant an operator named.
fn tenant_of(raw: &str) -> Result<TenantId> {
    TenantId::parse(raw).ok_or_else(|| AdminError::Invalid(format!("'{raw}' is not a valid tenant id")))
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The request cannot be carried out as asked (bad tenant, unknown role, ...).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Open(Box<ServerError>),
    /// A backup archive that is damaged, tampered with or not casefile's.
    #[error("the archive {path} cannot be restored: {why}")]
    Archive { path: PathBuf, why: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// A `casefile server` (or another migrate or restore) holds the data directory.
    #[error("a casefile server is running on {} (it holds its .lock): stop it first", .0.display())]
    Busy(PathBuf),
    /// Other casefile processes (replicas) are connected to the shared database.
    #[error(
        "other casefile processes are connected to this database: {}; stop every replica first",
        .0.join(", ")
    )]
    InUse(Vec<String>),
    /// `casefile store copy` refused or failed.
    #[error(transparent)]
    Copy(#[from] casefile_store::copy::CopyError),
}

impl From<ServerError> for AdminError {
    fn from(e: ServerError) -> Self {
        match e {
            ServerError::Invalid(why) => Self::Invalid(why),
            ServerError::Store(e) => Self::Store(e),
            other => Self::Open(Box::new(other)),
        }
    }
}

impl From<ApplicationError> for AdminError {
    fn from(e: ApplicationError) -> Self {
        match e {
            ApplicationError::NotFound(_) => Self::NotFound(e.to_string()),
            ApplicationError::Store(e) => Self::Store(e),
            other => Self::Invalid(other.to_string()),
        }
    }
}

impl From<crate::auth::users::UserError> for AdminError {
    fn from(e: crate::auth::users::UserError) -> Self {
        use crate::auth::users::UserError;
        match e {
            UserError::NotFound(_) => Self::NotFound(e.to_string()),
            UserError::Store(e) => Self::Store(e),
            other => Self::Invalid(other.to_string()),
        }
    }
}

impl From<EnrollmentError> for AdminError {
    fn from(e: EnrollmentError) -> Self {
        match e {
            EnrollmentError::Invalid(why) => Self::Invalid(why),
            EnrollmentError::NotFound(why) => Self::NotFound(why),
            EnrollmentError::Store(e) => Self::Store(e),
        }
    }
}

/// The RBAC rules live with the admin API, which answers in HTTP terms; here only the
/// message and whether something was missing count.
impl From<ApiError> for AdminError {
    fn from(e: ApiError) -> Self {
        match e.code {
            ErrorCode::NotFound | ErrorCode::ResourceNotFound => Self::NotFound(e.message),
            _ => Self::Invalid(e.message),
        }
    }
}

pub type Result<T, E = AdminError> = std::result::Result<T, E>;

/// A data directory opened for management, as the server with the same configuration
/// sees it.
pub struct Admin {
    server: Server,
}

impl Admin {
    /// Opens the data directory `config` names. Its schema must be current (a new, empty
    /// database is created): management never migrates behind the admin's back.
    ///
    /// Tokens carry the issuer the server accepts: `auth.issuer`, else `public_url`,
    /// else what the running server recorded (its issuer depends on the address it
    /// really listens on).
    pub async fn open(mut config: Config) -> Result<Self> {
        let recorded = Endpoint::load(&config.data_dir);
        if config.auth.issuer.is_empty() {
            config.auth.issuer = match (&config.public_url, &recorded) {
                (None, Some(endpoint)) => endpoint.issuer.clone(),
                _ => config.issuer(),
            };
        }
        if recorded.is_some() {
            // A command never serves: it must not touch the TLS material of the server
            // that recorded its endpoint there.
            config.tls.plain_http = true;
        }
        let server = Server::open_with(config, Arc::new(SystemClock), Schema::Require).await?;
        Ok(Self { server })
    }

    pub fn config(&self) -> &Config {
        &self.server.state().config
    }

    fn store(&self) -> &dyn Store {
        self.server.state().store.as_ref()
    }

    fn now(&self) -> casefile_proto::time::Timestamp {
        self.server.state().now()
    }

    /// Where agents reach the server and which CA they pin: what the server recorded,
    /// else what this configuration says.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::load(&self.config().data_dir).unwrap_or_else(|| self.server.endpoint())
    }

    /// A bearer token the server accepts, carrying `request.roles`.
    pub fn mint_token(&self, request: &TokenRequest) -> Result<String> {
        Ok(self.server.mint_access_token(request)?)
    }

    pub async fn create_enrollment_token(&self, tenant: &str, ttl: Option<Duration>, uses: u32) -> Result<String> {
        Ok(self.server.create_enrollment_token_with(tenant, ttl, uses).await?)
    }

    pub async fn enrollment_tokens(&self, tenant: &str) -> Result<Vec<EnrollmentToken>> {
        let tenant = &tenant_of(tenant)?;
        Ok(enrollment::list_tokens(self.store(), tenant, self.now()).await?)
    }

    pub async fn revoke_enrollment_token(&self, tenant: &str, id: &str) -> Result<EnrollmentToken> {
        let tenant = &tenant_of(tenant)?;
        Ok(enrollment::revoke_token(self.store(), tenant, id, self.now()).await?)
    }

    pub async fn reset_identity(&self, tenant: &str, machine_id: &str, actor: &str) -> Result<MachineRecord> {
        let tenant = &tenant_of(tenant)?;
        Ok(enrollment::reset_identity(self.store(), tenant, machine_id, actor, self.now()).await?)
    }

    pub async fn create_application(&self, tenant: &str, name: &str, roles: &[String]) -> Result<ApplicationSecret> {
        Ok(applications::create(self.store(), tenant, name, roles, self.now()).await?)
    }

    pub async fn applications(&self, tenant: &str) -> Result<Vec<Application>> {
        let tenant = &tenant_of(tenant)?;
        Ok(applications::list(self.store(), tenant).await?)
    }

    pub async fn set_application_enabled(&self, tenant: &str, client_id: &str, enabled: bool) -> Result<Application> {
        let tenant = &tenant_of(tenant)?;
        Ok(applications::set_enabled(self.store(), tenant, client_id, enabled, self.now()).await?)
    }

    pub async fn rotate_application_secret(&self, tenant: &str, client_id: &str) -> Result<ApplicationSecret> {
        let tenant = &tenant_of(tenant)?;
        Ok(applications::rotate_secret(self.store(), tenant, client_id, self.now()).await?)
    }

    pub async fn set_application_roles(&self, tenant: &str, client_id: &str, roles: &[String]) -> Result<Application> {
        let tenant = &tenant_of(tenant)?;
        Ok(applications::set_roles(self.store(), tenant, client_id, roles).await?)
    }

    /// Every running replica reloads its keys at once (`casefile_keys`), else within
    /// `auth.key_refresh_seconds`.
    pub async fn rotate_key(&self) -> Result<KeyInfo> {
        let key = keys::rotate(self.store()).await?;
        crate::cluster::keys_changed(self.server.state()).await;
        Ok(key)
    }

    pub async fn retire_key(&self, kid: &str) -> Result<()> {
        keys::retire(self.store(), kid).await?;
        crate::cluster::keys_changed(self.server.state()).await;
        Ok(())
    }

    pub async fn keys(&self) -> Result<Vec<KeyInfo>> {
        Ok(keys::list(self.store()).await?)
    }

    pub async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        Ok(self.store().audit(filter).await?.into_iter().map(crate::audit::to_wire).collect())
    }

    pub async fn roles(&self, tenant: &str) -> Result<Vec<Role>> {
        let tenant = &tenant_of(tenant)?;
        Ok(self.store().roles(tenant).await?)
    }

    /// A local console user (its principal name is `name`).
    pub async fn create_user(&self, tenant: &str, name: &str, password: &str) -> Result<casefile_store::UserRecord> {
        let tenant = &tenant_of(tenant)?;
        Ok(crate::auth::users::create(self.store(), tenant, name, password, self.now()).await?)
    }

    pub async fn users(&self, tenant: &str) -> Result<Vec<casefile_store::UserRecord>> {
        let tenant = &tenant_of(tenant)?;
        Ok(crate::auth::users::list(self.store(), tenant).await?)
    }

    /// Disables (ending its sessions) or enables a local user.
    pub async fn set_user_disabled(
        &self,
        tenant: &str,
        name: &str,
        disabled: bool,
    ) -> Result<casefile_store::UserRecord> {
        let tenant = &tenant_of(tenant)?;
        Ok(crate::auth::users::set_disabled(self.store(), tenant, name, disabled, self.now()).await?)
    }

    /// A new password (the user's sessions end).
    pub async fn reset_user_password(
        &self,
        tenant: &str,
        name: &str,
        password: &str,
    ) -> Result<casefile_store::UserRecord> {
        let tenant = &tenant_of(tenant)?;
        Ok(crate::auth::users::reset_password(self.store(), tenant, name, password, self.now()).await?)
    }

    pub async fn put_role(&self, tenant: &str, role: Role) -> Result<Role> {
        let tenant = &tenant_of(tenant)?;
        Ok(crate::rbac::put_role(self.server.state(), tenant, role).await?)
    }

    pub async fn delete_role(&self, tenant: &str, name: &str) -> Result<()> {
        let tenant = &tenant_of(tenant)?;
        Ok(crate::rbac::delete_role(self.server.state(), tenant, name).await?)
    }

    pub async fn device_groups(&self, tenant: &str) -> Result<Vec<DeviceGroup>> {
        let tenant = &tenant_of(tenant)?;
        Ok(self.store().device_groups(tenant).await?)
    }

    pub async fn create_device_group(&self, tenant: &str, group: DeviceGroup) -> Result<DeviceGroup> {
        let tenant = &tenant_of(tenant)?;
        Ok(crate::rbac::create_group(self.server.state(), tenant, group).await?)
    }

    pub async fn delete_device_group(&self, tenant: &str, id: i64) -> Result<()> {
        let tenant = &tenant_of(tenant)?;
        Ok(crate::rbac::delete_group(self.server.state(), tenant, id).await?)
    }

    pub async fn set_ungrouped_access(&self, tenant: &str, user_groups: Vec<String>) -> Result<()> {
        let tenant = &tenant_of(tenant)?;
        Ok(crate::rbac::set_ungrouped_access(self.server.state(), tenant, user_groups).await?)
    }

    /// A consistent backup of the data directory, taken while the server runs, into the
    /// single archive `output` (see [`archive`] for what it holds). `config_file` is
    /// archived as well.
    pub async fn backup(&self, output: &Path, config_file: Option<&Path>) -> Result<BackupReport> {
        archive::backup(self.store(), self.config(), output, config_file, self.now()).await
    }
}

/// `casefile store copy`: copies the SQLite database `from` into the empty PostgreSQL
/// database `to` and verifies it (see [`casefile_store::copy`]). Refused while a server
/// runs on the SQLite file's data directory (its parent), which holds the directory's
/// lock for the whole copy, so no server starts on it meanwhile.
pub async fn store_copy(from: &str, to: &str) -> Result<casefile_store::copy::CopyReport> {
    let _owner = match casefile_store::Backend::of(from)? {
        casefile_store::Backend::Sqlite(path) => match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => DataDirLock::acquire_existing(dir)?,
            _ => DataDirLock::acquire_existing(Path::new("."))?,
        },
        casefile_store::Backend::Postgres(_) => None,
    };
    Ok(casefile_store::copy::copy(from, to).await?)
}

/// What `casefile migrate` did.
#[derive(Debug)]
pub struct Migrated {
    /// The versions applied (empty: the schema was current).
    pub applied: Vec<i64>,
    /// The copy of the database taken before migrating (none for a new database).
    pub backup: Option<PathBuf>,
}

/// Where `casefile migrate` leaves the copy it takes first.
pub fn migration_backup_dir(config: &Config) -> PathBuf {
    config.data_dir.join("backups")
}

/// `casefile restore` into the installation `config` describes. An archive holds an SQLite
/// database: with a PostgreSQL store it would restore a file nothing reads, so that is
/// refused before anything is written.
pub fn restore_installation(
    config: &Config,
    archive: &Path,
    force: bool,
    expected_sha256: Option<&str>,
) -> Result<RestoreReport> {
    match casefile_store::Backend::of(&config.database_url())? {
        casefile_store::Backend::Sqlite(path) if path == config.data_dir.join("casefile.db") => {}
        casefile_store::Backend::Sqlite(path) => {
            return Err(AdminError::Invalid(format!(
                "[store] url names {}, outside the data directory: the archive's database would be restored \
                 into {} where nothing reads it; point [store] url at it, or restore by hand",
                path.display(),
                config.data_dir.join("casefile.db").display()
            )));
        }
        _ => {
            return Err(AdminError::Invalid(
                "casefile restore restores an installation on SQLite, and [store] url names another database: \
                 restore PostgreSQL with its own tools (pg_restore of a pg_dump) and the packages from their bucket"
                    .to_owned(),
            ));
        }
    }
    restore(archive, &config.data_dir, force, expected_sha256)
}

/// Applies the pending migrations of the database `config` names, after copying it to
/// `<data_dir>/backups/casefile-<UTC time>-schema-<version>.db`. Refuses a database newer
/// than this binary.
pub async fn migrate(config: &Config) -> Result<Migrated> {
    migrate_with_clock(config, &SystemClock).await
}

pub async fn migrate_with_clock(config: &Config, clock: &dyn Clock) -> Result<Migrated> {
    // Not beneath a running server: it would go on with the schema it knows.
    let _owner = DataDirLock::acquire(&config.data_dir)?;
    let store = Database::open_unmigrated(&config.database_url()).await?;
    // Replicas on a shared database hold no lock on this data directory: ask the database.
    let others = store.other_clients().await?;
    if !others.is_empty() {
        return Err(AdminError::InUse(others));
    }
    let backup = match store.schema().await? {
        StoreSchema::Current => return Ok(Migrated { applied: Vec::new(), backup: None }),
        StoreSchema::Newer { database, binary } => return Err(StoreError::SchemaNewer { database, binary }.into()),
        // Nothing in it to lose.
        StoreSchema::Empty => None,
        // PostgreSQL is backed up with its own tools (pg_dump) before `casefile migrate`;
        // the migrator's advisory lock keeps two migrations of it apart.
        StoreSchema::Older { .. } if !store.can_backup() => None,
        StoreSchema::Older { database, .. } => {
            let dir = migration_backup_dir(config);
            crate::create_private_dir(&dir)?;
            let at = clock.now().format("%Y%m%dT%H%M%SZ");
            let path = dir.join(format!("casefile-{at}-schema-{database}.db"));
            store.store().backup_into(&path).await?;
            Some(path)
        }
    };
    let applied = store.migrate().await?;
    Ok(Migrated { applied, backup })
}
