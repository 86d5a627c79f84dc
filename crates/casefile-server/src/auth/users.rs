//! Local console users: created by an administrator (`casefile user create`, the admin
//! API), signed in with a name and a password kept as an argon2id hash. A user's principal
//! name is its name: roles name it as they name a user of an identity provider.
//!
//! Failed sign-ins are counted per user; from the fourth on, the next attempt waits
//! 2^(failures − 4) seconds (at most 15 minutes) after the last failure, and is refused
//! unchecked until then, with the same answer as a wrong password. The count starts again
//! after a success or a new password.

use std::time::Duration;

use casefile_proto::TenantId;
use casefile_proto::time::Timestamp;
use casefile_store::{Backoff, Store, StoreError, UserChange, UserRecord};
use uuid::Uuid;

/// Failures allowed before the wait starts.
const FREE_FAILURES: u32 = 3;
/// The longest wait between attempts.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longer passwords are refused rather than hashed (argon2 takes any length).
pub const MAX_PASSWORD_BYTES: usize = 1024;
const MAX_NAME_CHARS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("'{0}' is not a valid tenant id (letters, digits, '-', '_', '.'; at most 64)")]
    InvalidTenant(String),
    #[error("'{0}' is not a valid user name: 1 to {MAX_NAME_CHARS} characters, letters, digits and . _ - @ only")]
    InvalidName(String),
    #[error("{0}")]
    WeakPassword(String),
    #[error("a user named '{0}' already exists in this tenant")]
    Duplicate(String),
    #[error("no user named '{0}' in this tenant")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("hashing the password failed: {0}")]
    Hash(#[from] super::passwords::HashError),
}

pub type Result<T, E = UserError> = std::result::Result<T, E>;

/// What a sign-in attempt gives. A wrong name, a wrong password, a disabled user and a
/// user whose failures impose a wait all give [`SignIn::Refused`], at the same cost, so
/// the answer tells nobody which names exist.
#[derive(Debug)]
pub enum SignIn {
    Accepted(UserRecord),
    Refused,
}

pub fn tenant(raw: &str) -> Result<TenantId> {
    TenantId::parse(raw).ok_or_else(|| UserError::InvalidTenant(raw.to_owned()))
}

pub fn valid_name(name: &str) -> Result<&str> {
    // ASCII only: no look-alike letters, and SQLite's NOCASE, PostgreSQL's lower() and
    // RBAC's comparison all fold it the same way. Not dots alone: a path cannot name them.
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
        && !name.bytes().all(|b| b == b'.');
    if ok { Ok(name) } else { Err(UserError::InvalidName(name.chars().take(MAX_NAME_CHARS).collect())) }
}

pub fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UserError::WeakPassword(format!("a password needs at least {MIN_PASSWORD_CHARS} characters")));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(UserError::WeakPassword(format!("a password has at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

pub async fn create(
    store: &dyn Store,
    tenant: &TenantId,
    name: &str,
    password: &str,
    now: Timestamp,
) -> Result<UserRecord> {
    let name = valid_name(name)?;
    check_password(password)?;
    let user = UserRecord {
        id: Uuid::new_v4(),
        tenant_id: tenant.clone(),
        name: name.to_owned(),
        password_hash: super::passwords::hash(password).await?,
        created_at: now,
        password_changed_at: now,
        disabled_at: None,
        failed_logins: 0,
        last_failed_at: None,
    };
    match store.create_user(&user).await {
        Err(StoreError::Duplicate(_)) => Err(UserError::Duplicate(name.to_owned())),
        other => other.map(|()| user).map_err(Into::into),
    }
}

pub async fn list(store: &dyn Store, tenant: &TenantId) -> Result<Vec<UserRecord>> {
    Ok(store.tenant(tenant).users().await?)
}

/// Disables (ending its sessions) or enables the user.
pub async fn set_disabled(
    store: &dyn Store,
    tenant: &TenantId,
    name: &str,
    disabled: bool,
    now: Timestamp,
) -> Result<UserRecord> {
    let change = if disabled { UserChange::Disable { at: now } } else { UserChange::Enable };
    store.tenant(tenant).change_user(name, &change).await?.ok_or_else(|| UserError::NotFound(name.to_owned()))
}

/// Sets a new password: the user's sessions end and its failure count starts again.
pub async fn reset_password(
    store: &dyn Store,
    tenant: &TenantId,
    name: &str,
    password: &str,
    now: Timestamp,
) -> Result<UserRecord> {
    check_password(password)?;
    let hash = super::passwords::hash(password).await?;
    store
        .tenant(tenant)
        .change_user(name, &UserChange::Password { hash, at: now })
        .await?
        .ok_or_else(|| UserError::NotFound(name.to_owned()))
}

/// How long a user with `failures` failed sign-ins, the last at `last`, must still wait.
pub fn wait_left(failures: u32, last: Option<Timestamp>, now: Timestamp) -> Option<Duration> {
    casefile_store::sign_in_wait(failures, last, now, FREE_FAILURES, MAX_WAIT)
}

/// Checks a name and password. The attempt is counted as a failure before the password
/// is checked, in one transaction with the check of the wait, so concurrent guesses are
/// each counted (`UserStore::attempt_sign_in`); a success resets the count.
pub async fn sign_in(
    store: &dyn Store,
    tenant: &TenantId,
    name: &str,
    password: &str,
    now: Timestamp,
) -> Result<SignIn> {
    let backoff = Backoff { free: FREE_FAILURES, max: MAX_WAIT };
    let checkable = valid_name(name).is_ok() && password.len() <= MAX_PASSWORD_BYTES;
    let attempt = if checkable { store.attempt_sign_in(tenant, name, now, backoff).await? } else { None };
    let (user, hash) = match attempt {
        Some((user, None)) => {
            let hash = user.password_hash.clone();
            (Some(user), Some(hash))
        }
        // Waiting, unknown, or not a name at all: the decoy's cost, then refused.
        Some((_, Some(_))) | None => (None, None),
    };
    let candidate = if password.len() <= MAX_PASSWORD_BYTES { password } else { "" };
    let matches = super::passwords::verify(candidate, hash).await?;
    let Some(user) = user else { return Ok(SignIn::Refused) };
    if !matches || user.disabled_at.is_some() {
        return Ok(SignIn::Refused);
    }
    store.tenant(tenant).change_user(&user.name, &UserChange::LoginSucceeded).await?;
    Ok(SignIn::Accepted(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_after_three_failures_and_is_capped() {
        let t0 = chrono::Utc::now();
        assert_eq!(wait_left(3, Some(t0), t0), None, "three failures are free");
        assert_eq!(wait_left(4, Some(t0), t0), Some(Duration::from_secs(1)));
        assert_eq!(wait_left(6, Some(t0), t0), Some(Duration::from_secs(4)));
        assert_eq!(wait_left(60, Some(t0), t0), Some(MAX_WAIT));
        assert_eq!(wait_left(6, Some(t0), t0 + chrono::Duration::seconds(3)), Some(Duration::from_secs(1)));
        assert_eq!(wait_left(6, Some(t0), t0 + chrono::Duration::seconds(4)), None);
        assert_eq!(wait_left(u32::MAX, Some(t0), t0), Some(MAX_WAIT));
    }

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(valid_name("alice.smith@corp").is_ok());
        for bad in ["", "a b", "../x", "a\u{0}b", "x;y", &"a".repeat(200), "\u{430}dmin", ".", ".."] {
            assert!(valid_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_password("short").is_err());
        assert!(check_password(&"p".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(check_password("correct horse battery").is_ok());
    }
}
