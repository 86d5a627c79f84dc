//! The public API's caller, from its bearer token: an application (client credentials,
//! permissions in `roles`) or a user signed in through an application (delegated,
//! permissions in `scp`), as Entra ID issues them (`../shared/spec/mde-api.md` §6.2).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use casefile_proto::TenantId;
use jsonwebtoken::errors::ErrorKind;
use serde::{Deserialize, Serialize};

use super::{Api, Keyring, MDE_AUDIENCES, TokenRejected};
use crate::error::ApiError;
use crate::state::AppState;

/// `typ` header of access tokens.
pub const ACCESS_TOKEN_TYPE: &str = "JWT";

/// Claims of an access token, named as Entra ID names them (§6.2).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub tid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_displayname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oid: Option<String>,
    /// Application permissions (app tokens).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Delegated permissions, space-separated: its presence makes the token a user's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    /// The user's name in v1 tokens without `upn` (e.g. guest accounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_name: Option<String>,
    /// Object ids of the user's groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The client the token was issued to (v2 tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ver: Option<String>,
    /// casefile's own, on a local user's CLI token: when the user's password was set
    /// (microseconds), so a new password voids the tokens issued before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwd_set: Option<i64>,
}

/// The signed-in user behind a delegated token. Device-group RBAC will decide on these
/// fields; for now only the delegated permissions (`scp`) are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdentity {
    /// The user's object id (`oid`).
    pub oid: Option<String>,
    /// `upn`, else `unique_name`; for a trusted issuer's token, `preferred_username`
    /// stands in for a missing `upn` (Entra v2, Keycloak).
    pub upn: Option<String>,
    /// Object ids of the user's groups (`groups`).
    pub groups: Vec<String>,
}

/// An authenticated caller of the public API.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: TenantId,
    /// Who calls: the application id, else the user's object id, UPN or subject. Quotas
    /// are kept per principal.
    pub principal: String,
    /// What `requestor` shows on the actions this caller creates, as MDE fills it: an
    /// application's display name (else its id, `appid` or `azp`); a user's UPN (else
    /// `unique_name`).
    pub requestor: String,
    /// Application permissions (`roles`); what an application may do.
    pub roles: Vec<String>,
    /// Delegated permissions (`scp`, split); what a user's token may do.
    pub scopes: Vec<String>,
    /// The signed-in user, for delegated tokens; `None` for an application.
    pub user: Option<UserIdentity>,
}

impl Caller {
    /// Counts the call against the caller's quota for `api` (refused calls count too),
    /// checks its token permission and, for a user, the role permission; returns what the
    /// caller may see.
    pub async fn admit(&self, state: &AppState, api: Api) -> Result<crate::rbac::Access, ApiError> {
        self.count_and_authorize(state, api).await?;
        let access = crate::rbac::Access::of(state, self).await?;
        access.require(api)?;
        Ok(access)
    }

    async fn count_and_authorize(&self, state: &AppState, api: Api) -> Result<(), ApiError> {
        let windows = state.config.rate_limits.windows(api);
        if !windows.is_empty() {
            let key = format!("{}\n{}\n{}", self.tenant_id, self.principal, api.name());
            if let Err(wait) = state.limiter.hit(&key, &windows, state.now()).await {
                state.metrics.rate_limited("api");
                return Err(ApiError::too_many_requests(
                    format_args!("Rate limit is exceeded for {}", api.name()),
                    wait,
                ));
            }
        }
        self.authorize(api)
    }

    /// Allows the call if the token carries any permission `api` accepts: for an
    /// application in `roles`, for a user in `scp`.
    pub fn authorize(&self, api: Api) -> Result<(), ApiError> {
        let (accepted, held, kind) = match self.user {
            None => (api.application_permissions(), &self.roles, "application"),
            Some(_) => (api.delegated_permissions(), &self.scopes, "delegated"),
        };
        if accepted.iter().any(|p| held.iter().any(|r| r == p)) {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "The application does not have any of the required {kind} permissions ({}) to access the resource.",
            accepted.join(", ")
        )))
    }

    /// The caller a verified token describes. A token with `scp` is a user's (delegated);
    /// any other is an application's. `None`: its `tid` is no tenant id.
    pub fn from_claims(claims: AccessClaims) -> Option<Self> {
        let tenant_id = TenantId::parse(&claims.tid)?;
        let subject = claims.sub.clone();
        let user = claims.scp.is_some().then(|| UserIdentity {
            oid: claims.oid.clone(),
            upn: claims.upn.clone().or_else(|| claims.unique_name.clone()),
            groups: claims.groups.clone(),
        });
        // v2 and Keycloak application tokens name the client in `azp` only.
        let client = claims.appid.clone().or_else(|| claims.azp.clone());
        let requestor = match &user {
            None => claims.app_displayname.clone().or_else(|| client.clone()),
            Some(user) => user.upn.clone(),
        }
        .unwrap_or_else(|| subject.clone());
        let principal = match &user {
            None => client.or_else(|| claims.oid.clone()),
            Some(user) => user.oid.clone().or_else(|| user.upn.clone()),
        }
        .unwrap_or(subject);
        let scopes = claims.scp.as_deref().unwrap_or("").split_whitespace().map(str::to_owned).collect();
        Some(Caller { tenant_id, principal, requestor, roles: claims.roles, scopes, user })
    }
}

/// A local user's token for casefile's CLI (the password grant).
fn is_cli_token(claims: &AccessClaims) -> bool {
    let cli = crate::routes::CLI_CLIENT_ID;
    claims.azp.as_deref() == Some(cli) || claims.appid.as_deref() == Some(cli)
}

/// A CLI token is good only while its local user is: enabled, and its password not changed
/// since the token was issued (disabling a user or resetting a password stops its CLI at
/// once, not at the token's end).
async fn cli_user_holds(state: &AppState, claims: &AccessClaims) -> Result<(), ApiError> {
    let refused =
        || ApiError::unauthorized("The access token's user is disabled or its password changed; sign in again");
    let (Some(tenant), Some(name)) = (TenantId::parse(&claims.tid), claims.upn.as_deref()) else {
        return Err(refused());
    };
    let user = state.store.tenant(&tenant).user_by_name(name).await?;
    match user {
        Some(u)
            if u.id.to_string() == claims.sub
                && u.disabled_at.is_none()
                && claims.pwd_set == Some(u.password_changed_at.timestamp_micros()) =>
        {
            Ok(())
        }
        _ => Err(refused()),
    }
}

/// An identity provider's user may not go by the name of one of the tenant's local users:
/// roles name both kinds alike, so the provider's `upn`/`preferred_username` would
/// otherwise claim the local user's roles.
pub(crate) async fn not_a_local_name(state: &AppState, claims: &AccessClaims) -> Result<(), ApiError> {
    let (Some(tenant), Some(name)) =
        (TenantId::parse(&claims.tid), claims.upn.as_deref().or(claims.unique_name.as_deref()))
    else {
        return Ok(());
    };
    if state.store.tenant(&tenant).user_by_name(name).await?.is_some() {
        return Err(ApiError::unauthorized(
            "The access token's user name is the name of a local user of this tenant; an identity provider's user cannot use it",
        ));
    }
    Ok(())
}

/// Tenant ids become part of storage keys: keep them to a safe alphabet.
pub fn valid_tenant_id(tid: &str) -> bool {
    TenantId::valid(tid)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("Authorization header is missing or is not 'Bearer <token>'"))?;
        let now = chrono::Utc::now().timestamp();
        let leeway = state.config.auth.leeway_seconds.min(i64::MAX as u64) as i64;
        let claims = match state.verified_tokens.get(token, now, leeway) {
            Some(claims) => claims,
            None => {
                let claims = super::keys::verify_access(state, token).await.map_err(|e| {
                    let refused = token_error(e);
                    crate::audit::note_detail(serde_json::json!({"reason": refused.message}));
                    refused
                })?;
                if claims.scp.is_some() && claims.iss != state.config.auth.issuer {
                    not_a_local_name(state, &claims).await?;
                }
                state.verified_tokens.insert(token, &claims, now);
                claims
            }
        };
        if claims.scp.is_some() && is_cli_token(&claims) {
            cli_user_holds(state, &claims).await?;
        }
        let caller = Caller::from_claims(claims)
            .ok_or_else(|| ApiError::unauthorized("The access token's tenant id (tid) is invalid"))?;
        let kind = if caller.user.is_some() { "user" } else { "application" };
        crate::audit::note_actor(kind, &caller.requestor, &caller.tenant_id);
        Ok(caller)
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case).
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Validation of access tokens: our issuer, an accepted audience, `exp` and `nbf`.
pub fn access_validation(issuer: &str, extra_audiences: &[String], leeway: u64) -> jsonwebtoken::Validation {
    let mut v = Keyring::validation();
    let mut audiences: Vec<&str> = MDE_AUDIENCES.to_vec();
    audiences.extend(extra_audiences.iter().map(String::as_str));
    v.set_audience(&audiences);
    v.set_issuer(&[issuer]);
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
    v.validate_nbf = true;
    v.leeway = leeway;
    v
}

fn token_error(e: TokenRejected) -> ApiError {
    let message = match e {
        TokenRejected::Invalid(e) => match e.kind() {
            ErrorKind::ExpiredSignature => "The access token has expired",
            ErrorKind::ImmatureSignature => "The access token is not valid yet (nbf)",
            ErrorKind::InvalidAudience => "The access token's audience (aud) is not accepted by this server",
            ErrorKind::InvalidIssuer => "The access token's issuer (iss) is not trusted by this server",
            ErrorKind::InvalidSignature => "The access token's signature is invalid or its signing key is unknown",
            ErrorKind::InvalidAlgorithm => "The access token's signing algorithm is not accepted",
            ErrorKind::MissingRequiredClaim(_) => "The access token lacks a required claim (exp, nbf, iss or aud)",
            _ => "The access token is malformed",
        },
        TokenRejected::Malformed => "The access token is malformed",
        TokenRejected::UntrustedIssuer => "The access token's issuer (iss) is not trusted by this server",
        TokenRejected::IssuerTenantMismatch => {
            "The access token's issuer (iss) is not trusted by this server: the tenant it names is not the token's tenant (tid)"
        }
        TokenRejected::TenantNotAllowed => {
            "The access token's tenant (tid) is not one its issuer is trusted for (allowed_tids)"
        }
        TokenRejected::NoTenant => "The access token has no tenant id (tid) and its issuer is mapped to no tenant",
        TokenRejected::Unsigned => {
            "The access token's signing algorithm is not accepted: unsigned tokens (alg none) never are"
        }
        TokenRejected::AlgorithmNotAccepted => {
            "The access token's signing algorithm is not accepted: it is not the algorithm of the key it names"
        }
        TokenRejected::NoKeyId => "The access token names no signing key (kid)",
        TokenRejected::UnknownKey => "The access token's signing key is unknown: its issuer has no key with this kid",
        TokenRejected::KeysUnavailable => {
            "The signing keys of the access token's issuer could not be fetched yet; retry later"
        }
    };
    ApiError::unauthorized(message)
}
