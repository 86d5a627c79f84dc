//! The public API's caller, from its bearer token.

use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::request::Parts;
use casefile_proto::ErrorCode;
use jsonwebtoken::errors::ErrorKind;
use serde::{Deserialize, Serialize};

use super::{Api, Keyring, MDE_AUDIENCES};
use crate::error::ApiError;
use crate::ratelimit::retry_after_seconds;
use crate::state::AppState;

/// `typ` header of access tokens.
pub const ACCESS_TOKEN_TYPE: &str = "JWT";

/// Claims of an access token, named as Entra ID names them (§6.2).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ver: Option<String>,
}

/// An authenticated caller of the public API.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: String,
    /// Who calls: the application id, else the user's object id, UPN or subject. Quotas
    /// are kept per principal.
    pub principal: String,
    /// What `requestor` shows on the actions this caller creates.
    pub requestor: String,
    pub roles: Vec<String>,
}

impl Caller {
    /// Counts the call against the caller's quota for `api` (refused calls count too),
    /// then checks its permission.
    pub async fn admit(&self, state: &AppState, api: Api) -> Result<(), ApiError> {
        let windows = state.config.rate_limits.windows(api);
        if !windows.is_empty() {
            let key = format!("{}\n{}\n{}", self.tenant_id, self.principal, api.name());
            if let Err(wait) = state.limiter.hit(&key, &windows, state.now()).await {
                let seconds = retry_after_seconds(wait);
                return Err(ApiError::new(
                    ErrorCode::TooManyRequests,
                    format!("Rate limit is exceeded for {}. Try again in {seconds} seconds.", api.name()),
                )
                .with_header(RETRY_AFTER, HeaderValue::from(seconds)));
            }
        }
        self.authorize(api)
    }

    /// Allows the call if the token carries any permission `api` accepts.
    pub fn authorize(&self, api: Api) -> Result<(), ApiError> {
        let accepted = api.application_permissions();
        if accepted.iter().any(|p| self.roles.iter().any(|r| r == p)) {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "The application does not have any of the required application permissions ({}) to access the resource.",
            accepted.join(", ")
        )))
    }
}

/// Tenant ids become part of storage keys: keep them to a safe alphabet.
pub fn valid_tenant_id(tid: &str) -> bool {
    !tid.is_empty()
        && tid.len() <= 64
        && tid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
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
                let claims: AccessClaims =
                    state.keyring.verify(token, &state.access_validation).map_err(token_error)?;
                state.verified_tokens.insert(token, &claims, now);
                claims
            }
        };
        if !valid_tenant_id(&claims.tid) {
            return Err(ApiError::unauthorized("The access token's tenant id (tid) is invalid"));
        }
        let requestor = claims
            .app_displayname
            .clone()
            .or_else(|| claims.upn.clone())
            .or_else(|| claims.appid.clone())
            .unwrap_or_else(|| claims.sub.clone());
        let principal = claims
            .appid
            .clone()
            .or_else(|| claims.oid.clone())
            .or_else(|| claims.upn.clone())
            .unwrap_or_else(|| claims.sub.clone());
        Ok(Caller { tenant_id: claims.tid, principal, requestor, roles: claims.roles })
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

fn token_error(e: jsonwebtoken::errors::Error) -> ApiError {
    let message = match e.kind() {
        ErrorKind::ExpiredSignature => "The access token has expired",
        ErrorKind::ImmatureSignature => "The access token is not valid yet (nbf)",
        ErrorKind::InvalidAudience => "The access token's audience (aud) is not accepted by this server",
        ErrorKind::InvalidIssuer => "The access token's issuer (iss) is not trusted by this server",
        ErrorKind::InvalidSignature => "The access token's signature is invalid or its signing key is unknown",
        ErrorKind::InvalidAlgorithm => "The access token's signing algorithm is not accepted",
        ErrorKind::MissingRequiredClaim(_) => "The access token lacks a required claim (exp, nbf, iss or aud)",
        _ => "The access token is malformed",
    };
    ApiError::unauthorized(message)
}
