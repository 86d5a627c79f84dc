//! Signed, expiring download links for packages (what `getPackageUri` returns). The
//! link carries a token signed with the server's key, bound to one tenant, one action
//! and one package hash; no bearer token is needed to use it.

use casefile_proto::PACKAGE_FILE_NAME;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Keyring;
use crate::error::ApiError;

/// Audience of link tokens: never accepted as an API access token, and vice versa.
const LINK_AUDIENCE: &str = "casefile:package-download";
const LINK_TYPE: &str = "casefile-link+jwt";
/// Route of the download.
pub const DOWNLOAD_PATH: &str = "/safedownload/WDATP_Investigation_Package.zip";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkClaims {
    pub aud: String,
    pub tid: String,
    /// The action whose package this link opens.
    pub act: Uuid,
    /// SHA-256 of that package.
    pub sha: String,
    /// Who asked for the link: downloads are attributed to them in the audit trail.
    #[serde(default)]
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
}

/// What a link opens, and for whom.
#[derive(Debug, Clone)]
pub struct Link<'a> {
    pub tenant: &'a str,
    pub action: Uuid,
    pub sha256: &'a str,
    pub requestor: &'a str,
}

/// A download URL below `base` valid for `ttl`.
pub fn issue(keyring: &Keyring, base: &str, link: &Link<'_>, ttl: std::time::Duration) -> Result<String, ApiError> {
    let expires = chrono::Utc::now().timestamp().saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    issue_until(keyring, base, link, expires)
}

/// A download URL valid until `expires` (Unix seconds).
pub fn issue_until(keyring: &Keyring, base: &str, link: &Link<'_>, expires: i64) -> Result<String, ApiError> {
    debug_assert!(DOWNLOAD_PATH.ends_with(PACKAGE_FILE_NAME));
    let now = chrono::Utc::now().timestamp();
    let claims = LinkClaims {
        aud: LINK_AUDIENCE.to_owned(),
        tid: link.tenant.to_owned(),
        act: link.action,
        sha: link.sha256.to_owned(),
        sub: link.requestor.to_owned(),
        iat: now,
        exp: expires,
    };
    let token = keyring.sign(LINK_TYPE, &claims).map_err(ApiError::internal_from)?;
    Ok(format!("{base}{DOWNLOAD_PATH}?token={token}"))
}

/// Checks a link's token: our signature, our audience, not expired (no leeway).
pub fn verify(keyring: &Keyring, token: &str) -> Result<LinkClaims, ApiError> {
    let mut validation = Keyring::validation();
    validation.set_audience(&[LINK_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "aud"]);
    validation.leeway = 0;
    keyring.verify(token, &validation).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
            ApiError::forbidden("The download link has expired; request a new one with getPackageUri")
        }
        _ => ApiError::forbidden("The download link is invalid (altered or not issued by this server)"),
    })
}
