//! Tenant ids: the `tid` of an access token, the key that partitions every tenant's data.

use serde::{Deserialize, Serialize};

/// A tenant id: 1 to 64 ASCII letters, digits, `-`, `_` or `.` (a GUID, as Entra ID's, or
/// a name such as `default`). Parsed once at the edge (the token's `tid`, a path, a
/// command line); the store takes nothing else where it scopes by tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(raw: &str) -> Option<Self> {
        Self::valid(raw).then(|| Self(raw.to_owned()))
    }

    /// Whether `raw` is a tenant id.
    pub fn valid(raw: &str) -> bool {
        !raw.is_empty()
            && raw.len() <= 64
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    }

    /// The tenant of a single-tenant installation ([`crate::DEFAULT_TENANT`]).
    pub fn default_tenant() -> Self {
        Self(crate::DEFAULT_TENANT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        match Self::valid(&raw) {
            true => Ok(Self(raw)),
            false => Err(format!("'{raw}' is not a tenant id (1 to 64 of A-Z a-z 0-9 - _ .)")),
        }
    }
}

impl std::str::FromStr for TenantId {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        Self::try_from(raw.to_owned())
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.0
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Read access as a string (SQL binds, comparisons, messages); building one goes through
/// [`TenantId::parse`].
impl std::ops::Deref for TenantId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for TenantId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for TenantId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for TenantId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_tenant_ids() {
        assert_eq!(TenantId::parse("default").unwrap().as_str(), "default");
        assert!(TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").is_some());
        for bad in ["", "a b", "a/b", "ü", &"x".repeat(65), "a\n"] {
            assert!(TenantId::parse(bad).is_none(), "{bad:?}");
            assert!(TenantId::try_from(bad.to_owned()).is_err());
        }
        assert!(TenantId::parse(&"x".repeat(64)).is_some());
    }
}
