//! The access tokens the token endpoint issues to applications, with the claims of an
//! Entra ID application token (`../shared/spec/mde-api.md` §6.2), and the audiences a
//! client may ask for.

use casefile_store::ApplicationRecord;

use super::caller::ACCESS_TOKEN_TYPE;
use super::{AccessClaims, AuthError, Keyring, MDE_AUDIENCES};
use crate::config::AuthConfig;

/// Which token endpoint answered: it decides `ver` (and `azp`), and the response shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenVersion {
    /// `/{tenant}/oauth2/token`, `resource=<audience>`.
    V1,
    /// `/{tenant}/oauth2/v2.0/token`, `scope=<audience>/.default`.
    V2,
}

/// An access token and what it says.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub claims: AccessClaims,
}

/// The accepted audience `requested` names, spelled as configured (and so as the token's
/// `aud` is checked): letter case and one trailing slash aside, as Entra matches
/// resource URIs. `None` when this server does not accept it.
pub fn accepted_audience(config: &AuthConfig, requested: &str) -> Option<String> {
    let wanted = requested.trim();
    let wanted = wanted.strip_suffix('/').unwrap_or(wanted);
    MDE_AUDIENCES
        .iter()
        .copied()
        .chain(config.extra_audiences.iter().map(String::as_str))
        .find(|aud| aud.trim_end_matches('/').eq_ignore_ascii_case(wanted))
        .map(str::to_owned)
}

/// Signs an application token for `audience`, valid `auth.token_ttl_seconds` from `now`
/// (Unix seconds). The application's client id is its `appid`, `oid` and `sub`.
pub fn issue(
    keyring: &Keyring,
    config: &AuthConfig,
    app: &ApplicationRecord,
    audience: &str,
    version: TokenVersion,
    now: i64,
) -> Result<Issued, AuthError> {
    let client_id = app.client_id.to_string();
    let claims = AccessClaims {
        iss: config.issuer.clone(),
        aud: audience.to_owned(),
        sub: client_id.clone(),
        tid: app.tenant_id.to_string(),
        iat: now,
        nbf: now,
        exp: now.saturating_add(config.token_ttl_seconds.min(i64::MAX as u64) as i64),
        appid: Some(client_id.clone()),
        app_displayname: Some(app.name.clone()),
        oid: Some(client_id.clone()),
        roles: app.roles.clone(),
        azp: (version == TokenVersion::V2).then_some(client_id),
        ver: Some(match version {
            TokenVersion::V1 => "1.0".to_owned(),
            TokenVersion::V2 => "2.0".to_owned(),
        }),
        ..Default::default()
    };
    Ok(Issued { token: keyring.sign(ACCESS_TOKEN_TYPE, &claims)?, claims })
}

/// Signs a delegated token for a local user (the CLI's password grant): `scp` holds the
/// delegated permissions a console session has, `upn` the user's name; what the user may
/// do is decided by the roles RBAC gives that name.
pub fn issue_for_user(
    keyring: &Keyring,
    config: &AuthConfig,
    user: &casefile_store::UserRecord,
    audience: &str,
    version: TokenVersion,
    now: i64,
) -> Result<Issued, AuthError> {
    let claims = AccessClaims {
        iss: config.issuer.clone(),
        aud: audience.to_owned(),
        sub: user.id.to_string(),
        tid: user.tenant_id.to_string(),
        iat: now,
        nbf: now,
        exp: now.saturating_add(config.token_ttl_seconds.min(i64::MAX as u64) as i64),
        upn: Some(user.name.clone()),
        scp: Some(super::sessions::DELEGATED_SCOPES.join(" ")),
        pwd_set: Some(user.password_changed_at.timestamp_micros()),
        azp: (version == TokenVersion::V2).then(|| crate::routes::CLI_CLIENT_ID.to_owned()),
        appid: (version == TokenVersion::V1).then(|| crate::routes::CLI_CLIENT_ID.to_owned()),
        ver: Some(match version {
            TokenVersion::V1 => "1.0".to_owned(),
            TokenVersion::V2 => "2.0".to_owned(),
        }),
        ..Default::default()
    };
    Ok(Issued { token: keyring.sign(ACCESS_TOKEN_TYPE, &claims)?, claims })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_match_without_case_or_trailing_slash() {
        let config = AuthConfig { extra_audiences: vec!["api://casefile".into()], ..Default::default() };
        let found = |s| accepted_audience(&config, s);
        assert_eq!(found("https://API.securitycenter.microsoft.com/").as_deref(), Some(MDE_AUDIENCES[0]));
        assert_eq!(found("fc780465-2017-40d4-a0c5-307022471b92").as_deref(), Some(MDE_AUDIENCES[4]));
        assert_eq!(found("api://casefile").as_deref(), Some("api://casefile"));
        assert_eq!(found("https://graph.microsoft.com"), None);
        assert_eq!(found(""), None);
    }
}
