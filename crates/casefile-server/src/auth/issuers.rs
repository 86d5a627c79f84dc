//! External identity providers (`[[auth.trusted_issuers]]`): Entra ID (v1 and v2 tokens,
//! single- or multi-tenant), Keycloak, any OIDC provider that publishes a JWKS. Their
//! access tokens are accepted besides the server's own (`keys.rs`).
//!
//! A token is routed by its unverified `iss` to one issuer, then verified only with that
//! issuer's keys. Every key is pinned to one algorithm (the JWK's `alg`, else the one its
//! type implies: RSA → RS256, EC P-256 → ES256, P-384 → ES384, Ed25519 → EdDSA), and a
//! token whose `alg` is not its key's is refused before any signature check: so `none`
//! and HMAC signed with a public key never verify. Symmetric (`oct`) keys are never
//! loaded.
//!
//! Key sets come from a file or a URL and are kept in memory: fetched again every
//! `refresh_seconds`, and at once (at most once a minute per issuer) when a token names a
//! `kid` the set lacks, so a key the provider rotated in works without a restart. A
//! failed fetch keeps the last good set. A URL that cannot be fetched at start is not an
//! error: its tokens are refused ("could not be fetched") until a fetch succeeds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Deserializer};

use super::keys::KeyChanges;
use super::{AccessClaims, AuthError, MDE_AUDIENCES, TokenRejected};
use crate::config::{AuthConfig, TENANT_PLACEHOLDER, TrustedIssuerConfig};
use crate::state::AppState;

/// Least time between two fetches caused by unknown `kid`s, per issuer, so tokens with
/// made-up key ids cannot make the server hammer the provider.
const MISS_REFETCH_EVERY: Duration = Duration::from_secs(60);
/// After a failed fetch, the next background attempt comes at most this late.
const RETRY_FAILED_EVERY: Duration = Duration::from_secs(60);
/// Time allowed for one JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JWKS document read (Entra's is a few KiB).
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Smallest RSA modulus accepted.
const MIN_RSA_BITS: usize = 2048;

/// The trusted issuers, in configuration order.
pub struct TrustedIssuers {
    issuers: Vec<TrustedIssuer>,
}

pub struct TrustedIssuer {
    /// As configured, for logs and errors.
    name: String,
    pattern: IssuerPattern,
    audiences: Vec<String>,
    tenant: Option<String>,
    allowed_tids: Option<Vec<String>>,
    source: JwksSource,
    refresh: Duration,
    /// `None` until a key set was loaded once.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// When an unknown `kid` last caused a fetch; held while that fetch runs, so tokens
    /// arriving meanwhile wait for it instead of fetching again.
    miss_fetch: tokio::sync::Mutex<Option<Instant>>,
}

/// Keys by `kid`, each with its one algorithm.
type KeySet = HashMap<String, PinnedKey>;

#[derive(Debug)]
struct PinnedKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

enum JwksSource {
    File(PathBuf),
    Url(url::Url, reqwest::Client),
}

/// An issuer as configured: exact, or with the token's tenant in place of `{tenantid}`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IssuerPattern {
    Exact(String),
    PerTenant { prefix: String, suffix: String },
}

impl IssuerPattern {
    fn parse(issuer: &str) -> Result<Self, String> {
        match issuer.split_once(TENANT_PLACEHOLDER) {
            None => Ok(Self::Exact(issuer.to_owned())),
            Some((_, suffix)) if suffix.contains(TENANT_PLACEHOLDER) => {
                Err(format!("{TENANT_PLACEHOLDER} may appear only once"))
            }
            Some((prefix, suffix)) => Ok(Self::PerTenant { prefix: prefix.to_owned(), suffix: suffix.to_owned() }),
        }
    }

    /// Whether `iss` is this issuer's; for a per-tenant issuer, the tenant `iss` names.
    fn matches<'a>(&self, iss: &'a str) -> Option<Option<&'a str>> {
        match self {
            Self::Exact(exact) => (iss == exact).then_some(None),
            Self::PerTenant { prefix, suffix } => {
                let tenant = iss.strip_prefix(prefix.as_str())?.strip_suffix(suffix.as_str())?;
                (!tenant.is_empty() && !tenant.contains('/')).then_some(Some(tenant))
            }
        }
    }

    fn is_exact(&self) -> bool {
        matches!(self, Self::Exact(_))
    }
}

impl TrustedIssuers {
    /// Checks `auth.trusted_issuers` and loads every key set: a file that cannot be read
    /// or holds no usable key is an error; a URL that cannot be fetched now is logged
    /// and fetched again later.
    pub async fn load(auth: &AuthConfig) -> Result<Self, AuthError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT / 2)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("casefile/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AuthError::Issuer(format!("cannot build the HTTP client for JWKS: {e}")))?;
        let mut issuers: Vec<TrustedIssuer> = Vec::with_capacity(auth.trusted_issuers.len());
        for (index, config) in auth.trusted_issuers.iter().enumerate() {
            let issuer = TrustedIssuer::from_config(auth, config, &client)
                .map_err(|e| AuthError::Issuer(format!("auth.trusted_issuers[{index}] ('{}'): {e}", config.issuer)))?;
            if let Some(same) = issuers.iter().find(|other| other.pattern == issuer.pattern) {
                return Err(AuthError::Issuer(format!(
                    "auth.trusted_issuers[{index}]: the issuer '{}' is listed twice",
                    same.name
                )));
            }
            issuers.push(issuer);
        }
        let loads = issuers.iter().map(|issuer| async move {
            match (issuer.refresh_keys().await, &issuer.source) {
                (Ok(_), _) => Ok(()),
                (Err(e), JwksSource::File(_)) => {
                    Err(AuthError::Issuer(format!("trusted issuer '{}': {e}", issuer.name)))
                }
                (Err(e), JwksSource::Url(..)) => {
                    tracing::warn!(
                        issuer = %issuer.name,
                        "the issuer's keys could not be fetched; its tokens are refused until a fetch succeeds: {e}"
                    );
                    Ok(())
                }
            }
        });
        futures::future::try_join_all(loads).await?;
        Ok(Self { issuers })
    }

    /// The issuer `iss` belongs to: an exact issuer first, then one with `{tenantid}`.
    pub fn route(&self, iss: &str) -> Option<&TrustedIssuer> {
        let by_pattern = |exact: bool| {
            self.issuers
                .iter()
                .find(|issuer| issuer.pattern.is_exact() == exact && issuer.pattern.matches(iss).is_some())
        };
        by_pattern(true).or_else(|| by_pattern(false))
    }
}

impl TrustedIssuer {
    fn from_config(auth: &AuthConfig, config: &TrustedIssuerConfig, client: &reqwest::Client) -> Result<Self, String> {
        let name = config.issuer.trim();
        if name.is_empty() {
            return Err("issuer is empty".to_owned());
        }
        if name != config.issuer {
            return Err("issuer has leading or trailing spaces; it must be the tokens' iss exactly".to_owned());
        }
        if name == auth.issuer {
            return Err(
                "this is the server's own issuer (auth.issuer); its tokens are verified with its own keys".to_owned()
            );
        }
        let pattern = IssuerPattern::parse(name)?;
        let source = match (&config.jwks_file, &config.jwks_url) {
            (Some(_), Some(_)) => return Err("set one of jwks_file and jwks_url, not both".to_owned()),
            (None, None) => return Err("set jwks_file or jwks_url (where the issuer's public keys are)".to_owned()),
            (Some(path), None) => JwksSource::File(path.clone()),
            (None, Some(raw)) => JwksSource::Url(jwks_url(raw)?, client.clone()),
        };
        let audiences = match &config.audiences {
            Some(list) if list.is_empty() || list.iter().any(|a| a.trim().is_empty()) => {
                return Err("audiences must list at least one audience, none of them empty".to_owned());
            }
            Some(list) => list.clone(),
            None => MDE_AUDIENCES.iter().map(|a| a.to_string()).chain(auth.extra_audiences.iter().cloned()).collect(),
        };
        if let Some(tenant) = &config.tenant
            && !super::caller::valid_tenant_id(tenant)
        {
            return Err(format!(
                "tenant '{tenant}' is not a valid tenant id (1 to 64 letters, digits, '-', '_' or '.')"
            ));
        }
        if config.allowed_tids.as_ref().is_some_and(|tids| tids.is_empty()) {
            return Err("allowed_tids is empty: no token could be accepted; remove it to accept any tid".to_owned());
        }
        if config.refresh_seconds == 0 {
            return Err("refresh_seconds must be at least 1".to_owned());
        }
        if !pattern.is_exact() && config.tenant.is_none() && config.allowed_tids.is_none() {
            tracing::warn!(
                issuer = name,
                "trusted issuer accepts the tokens of every tenant it serves, each in a casefile tenant of its tid; \
                 set allowed_tids to accept only yours"
            );
        }
        Ok(Self {
            name: name.to_owned(),
            pattern,
            audiences,
            tenant: config.tenant.clone(),
            allowed_tids: config.allowed_tids.clone(),
            source,
            refresh: Duration::from_secs(config.refresh_seconds),
            keys: RwLock::new(None),
            miss_fetch: tokio::sync::Mutex::new(None),
        })
    }

    fn key_set(&self) -> Option<Arc<KeySet>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn loaded(&self) -> bool {
        self.key_set().is_some()
    }

    fn knows(&self, kid: &str) -> bool {
        self.key_set().is_some_and(|keys| keys.contains_key(kid))
    }

    /// Reads the key set again and replaces the one in memory; on failure the last good
    /// set stays.
    async fn refresh_keys(&self) -> Result<KeyChanges, String> {
        let raw = match &self.source {
            JwksSource::File(path) => read_file(path).await?,
            JwksSource::Url(url, client) => fetch(client, url).await?,
        };
        let fresh = parse_jwks(&raw, &self.name)?;
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let old = keys.clone().unwrap_or_default();
        let changes = KeyChanges {
            added: fresh.keys().filter(|kid| !old.contains_key(*kid)).count(),
            removed: old.keys().filter(|kid| !fresh.contains_key(*kid)).count(),
        };
        *keys = Some(Arc::new(fresh));
        Ok(changes)
    }

    /// A token names `kid`, which the set lacks: fetches the set again, unless another
    /// request just did or the last such fetch was less than a minute ago.
    async fn refetch_for(&self, state: &AppState, kid: &str) {
        let mut last = self.miss_fetch.lock().await;
        if self.knows(kid) || last.is_some_and(|at| at.elapsed() < MISS_REFETCH_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        self.refresh_logged(state, "a token names an unknown kid").await;
    }

    /// [`Self::refresh_keys`], logged; a key that went away forgets the verified tokens.
    async fn refresh_logged(&self, state: &AppState, why: &str) -> bool {
        match self.refresh_keys().await {
            Ok(changes) => {
                if changes.removed > 0 {
                    state.verified_tokens.clear();
                }
                if changes != KeyChanges::default() {
                    tracing::info!(issuer = %self.name, added = changes.added, removed = changes.removed, why, "issuer keys reloaded");
                }
                true
            }
            Err(e) => {
                tracing::warn!(issuer = %self.name, why, "fetching the issuer's keys failed; the last good set stays: {e}");
                false
            }
        }
    }
}

/// A URL the server fetches from a provider: `https://`, or `http://` on a loopback host.
pub(crate) fn check_fetch_url(raw: &str) -> Result<url::Url, String> {
    fetch_url(raw, "the URL")
}

/// A JWKS URL: `https://`, or `http://` on a loopback host (tests, a sidecar).
fn jwks_url(raw: &str) -> Result<url::Url, String> {
    fetch_url(raw, "jwks_url")
}

fn fetch_url(raw: &str, what: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("{what} '{raw}' is not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(host)) => host.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(format!("{what} '{raw}' has no host")),
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(format!("{what} '{raw}' must be https (plain http only on a loopback host)")),
        other => Err(format!("{what} '{raw}' has the scheme '{other}'; use https")),
    }
}

async fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let raw = tokio::fs::read(path).await.map_err(|e| format!("cannot read jwks_file {}: {e}", path.display()))?;
    if raw.len() > MAX_JWKS_BYTES {
        return Err(format!("jwks_file {} is larger than {MAX_JWKS_BYTES} bytes", path.display()));
    }
    Ok(raw)
}

async fn fetch(client: &reqwest::Client, url: &url::Url) -> Result<Vec<u8>, String> {
    let failed = |e: reqwest::Error| format!("GET {url}: {e}");
    let mut response =
        client.get(url.clone()).header(reqwest::header::ACCEPT, "application/json").send().await.map_err(failed)?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("GET {url}: the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
        }
    }
    Ok(body)
}

/// The usable signing keys of a JWKS document, each pinned to its algorithm. A key that
/// cannot be used (encryption key, symmetric, unknown type or curve, no `kid`, weak RSA)
/// is skipped and logged; a document without any usable key is an error.
fn parse_jwks(raw: &[u8], issuer: &str) -> Result<KeySet, String> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document =
        serde_json::from_slice(raw).map_err(|e| format!("invalid JWKS (a JSON object with \"keys\" expected): {e}"))?;
    let mut set = KeySet::new();
    for (index, value) in document.keys.into_iter().enumerate() {
        // Keycloak publishes its encryption key beside its signing keys: not worth a warning.
        if value.get("use").and_then(serde_json::Value::as_str) == Some("enc") {
            tracing::debug!(issuer, "JWKS key {index} is an encryption key (use: enc), not used");
            continue;
        }
        match pinned_key(value) {
            Ok((kid, key)) if !set.contains_key(&kid) => {
                set.insert(kid, key);
            }
            Ok((kid, _)) => tracing::warn!(issuer, kid, "JWKS key {index} repeats a kid; the first one is kept"),
            Err(why) => tracing::warn!(issuer, "JWKS key {index} is not used: {why}"),
        }
    }
    if set.is_empty() {
        return Err("invalid JWKS: it holds no usable signing key (RSA, EC P-256/P-384 or Ed25519, with a kid)".into());
    }
    Ok(set)
}

fn pinned_key(value: serde_json::Value) -> Result<(String, PinnedKey), String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("not a JWK: {e}"))?;
    let kid = jwk.common.key_id.clone().filter(|kid| !kid.is_empty()).ok_or("no kid")?;
    let algorithm = pinned_algorithm(&jwk)?;
    if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
        let modulus = URL_SAFE_NO_PAD.decode(rsa.n.trim_end_matches('=')).map_err(|e| format!("RSA n: {e}"))?;
        let bits = modulus.iter().skip_while(|b| **b == 0).count() * 8;
        if bits < MIN_RSA_BITS {
            return Err(format!("an RSA key of about {bits} bits; at least {MIN_RSA_BITS} are required"));
        }
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("kid '{kid}': {e}"))?;
    Ok((kid, PinnedKey { algorithm, key }))
}

/// The one algorithm a key verifies: its `alg` when it has one (and it fits the key's
/// type), else the one its type implies.
fn pinned_algorithm(jwk: &Jwk) -> Result<Algorithm, String> {
    let (kind, implied, fitting): (&str, Algorithm, &[Algorithm]) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (
            "RSA",
            Algorithm::RS256,
            &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
        ),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => ("EC P-256", Algorithm::ES256, &[Algorithm::ES256]),
            EllipticCurve::P384 => ("EC P-384", Algorithm::ES384, &[Algorithm::ES384]),
            ref other => return Err(format!("the curve {other:?} is not supported")),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => ("Ed25519", Algorithm::EdDSA, &[Algorithm::EdDSA]),
            ref other => return Err(format!("the curve {other:?} is not supported")),
        },
        AlgorithmParameters::OctetKey(_) => return Err("a symmetric key (kty oct) is never trusted".to_owned()),
        _ => return Err("an unsupported key type".to_owned()),
    };
    let Some(declared) = jwk.common.key_algorithm else {
        return Ok(implied);
    };
    match Algorithm::try_from(declared) {
        Ok(alg) if fitting.contains(&alg) => Ok(alg),
        _ => Err(format!("alg {declared} does not fit a {kind} key")),
    }
}

/// What routing needs from a token before it is verified: read without any check, and
/// trusted for nothing else.
pub(crate) struct Unverified {
    pub alg: String,
    pub kid: Option<String>,
    pub iss: Option<String>,
    pub tid: Option<String>,
}

/// Reads a token's header and claims without verifying them, to route it.
pub(crate) fn peek(token: &str) -> Result<Unverified, TokenRejected> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
    }
    #[derive(Deserialize)]
    struct Claims {
        #[serde(default)]
        iss: Option<serde_json::Value>,
        #[serde(default)]
        tid: Option<serde_json::Value>,
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenRejected::Malformed);
    };
    let json = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenRejected::Malformed);
    let header: Header = serde_json::from_slice(&json(header)?).map_err(|_| TokenRejected::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json(claims)?).map_err(|_| TokenRejected::Malformed)?;
    let text = |v: Option<serde_json::Value>| v.and_then(|v| v.as_str().map(str::to_owned));
    Ok(Unverified { alg: header.alg, kid: header.kid, iss: text(claims.iss), tid: text(claims.tid) })
}

/// The algorithm named by `alg`, when it is one a key may be pinned to.
pub(crate) fn named_algorithm(alg: &str) -> Result<Algorithm, TokenRejected> {
    if alg.eq_ignore_ascii_case("none") {
        return Err(TokenRejected::Unsigned);
    }
    Algorithm::from_str(alg).map_err(|_| TokenRejected::AlgorithmNotAccepted)
}

/// Verifies a token `issuer` signed: its tenant, its key and that key's algorithm, the
/// signature, `iss` exactly, `aud`, `exp` and `nbf`; then the casefile tenant.
pub(crate) async fn verify(
    state: &AppState,
    issuer: &TrustedIssuer,
    token: &str,
    unverified: &Unverified,
) -> Result<AccessClaims, TokenRejected> {
    verify_for(state, issuer, token, unverified, &issuer.audiences).await.map(|(claims, _)| claims)
}

/// A user's ID token from single sign-on: signed by `iss`'s keys for the console's client
/// (`aud` = `client_id`), its tenant mapped as an access token's is. Also gives `nonce`.
pub(crate) async fn verify_id_token(
    state: &AppState,
    iss: &str,
    token: &str,
    client_id: &str,
) -> Result<(AccessClaims, Option<String>), TokenRejected> {
    let unverified = peek(token)?;
    if unverified.iss.as_deref() != Some(iss) {
        return Err(TokenRejected::UntrustedIssuer);
    }
    let issuer = state.issuers.route(iss).ok_or(TokenRejected::UntrustedIssuer)?;
    verify_for(state, issuer, token, &unverified, &[client_id.to_owned()]).await
}

async fn verify_for(
    state: &AppState,
    issuer: &TrustedIssuer,
    token: &str,
    unverified: &Unverified,
    audiences: &[String],
) -> Result<(AccessClaims, Option<String>), TokenRejected> {
    let iss = unverified.iss.as_deref().unwrap_or_default();
    // The tenant `{tenantid}` stands for must be the token's own.
    let expected_iss = match issuer.pattern.matches(iss) {
        Some(None) => iss.to_owned(),
        Some(Some(named)) if unverified.tid.as_deref() == Some(named) => iss.to_owned(),
        _ => return Err(TokenRejected::IssuerTenantMismatch),
    };
    let alg = named_algorithm(&unverified.alg)?;
    let kid = unverified.kid.as_deref().ok_or(TokenRejected::NoKeyId)?;
    if !issuer.knows(kid) {
        issuer.refetch_for(state, kid).await;
    }
    let keys = issuer.key_set().ok_or(TokenRejected::KeysUnavailable)?;
    let key = keys.get(kid).ok_or(TokenRejected::UnknownKey)?;
    if alg != key.algorithm {
        return Err(TokenRejected::AlgorithmNotAccepted);
    }
    let mut validation = Validation::new(key.algorithm);
    validation.set_issuer(&[expected_iss]);
    validation.set_audience(audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.validate_nbf = true;
    validation.leeway = state.config.auth.leeway_seconds;
    let claims = jsonwebtoken::decode::<ProviderClaims>(token, &key.key, &validation)?.claims;
    let nonce = claims.nonce.clone();
    if let Some(allowed) = &issuer.allowed_tids
        && !claims.tid.as_ref().is_some_and(|tid| allowed.contains(tid))
    {
        return Err(TokenRejected::TenantNotAllowed);
    }
    let tenant = issuer.tenant.clone().or_else(|| claims.tid.clone()).ok_or(TokenRejected::NoTenant)?;
    Ok((claims.into_access_claims(tenant, audiences), nonce))
}

/// Fetches every URL issuer's keys again every `refresh_seconds` (sooner after a failed
/// fetch), and re-reads every file issuer's, so rotations at the provider apply.
pub async fn run_refresh(state: AppState) {
    let loops = (0..state.issuers.issuers.len()).map(|index| {
        let state = state.clone();
        async move {
            let mut ok = state.issuers.issuers[index].loaded();
            loop {
                let issuer = &state.issuers.issuers[index];
                let wait = if ok { issuer.refresh } else { issuer.refresh.min(RETRY_FAILED_EVERY) };
                tokio::time::sleep(wait).await;
                ok = issuer.refresh_logged(&state, "periodic refresh").await;
            }
        }
    });
    futures::future::join_all(loops).await;
}

/// The claims of a provider's access token, in the shapes Entra ID (v1 and v2) and
/// Keycloak give them.
#[derive(Deserialize)]
struct ProviderClaims {
    // Everything is optional here: the validation, not this parsing, says what is missing.
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Audiences>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    tid: Option<String>,
    #[serde(default, deserialize_with = "seconds")]
    iat: Option<i64>,
    #[serde(default, deserialize_with = "seconds")]
    nbf: Option<i64>,
    #[serde(default, deserialize_with = "seconds")]
    exp: Option<i64>,
    #[serde(default)]
    appid: Option<String>,
    #[serde(default)]
    app_displayname: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    upn: Option<String>,
    #[serde(default)]
    unique_name: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
    /// Top-level `roles` only (Keycloak's `realm_access.roles` are not read).
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scp: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    ver: Option<String>,
    /// An ID token's `nonce` (single sign-on).
    #[serde(default)]
    nonce: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audiences {
    One(String),
    Many(Vec<String>),
}

/// NumericDate: whole or fractional seconds.
fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.map(|s| s as i64))
}

impl ProviderClaims {
    /// The claims as the server's own tokens carry them: `tid` becomes the casefile
    /// tenant, `aud` the accepted audience, and a v2 user's `preferred_username` their
    /// UPN when `upn` is absent.
    fn into_access_claims(self, tenant: String, accepted: &[String]) -> AccessClaims {
        let aud = match self.aud {
            Some(Audiences::One(aud)) => aud,
            Some(Audiences::Many(list)) => list.into_iter().find(|a| accepted.contains(a)).unwrap_or_default(),
            None => String::new(),
        };
        let sub = self.sub.or_else(|| self.oid.clone()).or_else(|| self.azp.clone()).unwrap_or_default();
        AccessClaims {
            iss: self.iss.unwrap_or_default(),
            aud,
            sub,
            tid: tenant,
            iat: self.iat.unwrap_or_default(),
            nbf: self.nbf.or(self.iat).unwrap_or_default(),
            exp: self.exp.unwrap_or_default(),
            appid: self.appid,
            app_displayname: self.app_displayname,
            upn: self.upn.or(self.preferred_username),
            oid: self.oid,
            roles: self.roles,
            scp: self.scp,
            unique_name: self.unique_name,
            groups: self.groups,
            azp: self.azp,
            ver: self.ver,
            pwd_set: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(value: serde_json::Value) -> Jwk {
        serde_json::from_value(value).unwrap()
    }

    /// An RSA modulus `bytes` long (only its length matters here).
    fn rsa_n(bytes: usize) -> String {
        URL_SAFE_NO_PAD.encode(vec![0xC5u8; bytes])
    }

    #[test]
    fn keys_are_pinned_to_their_declared_or_implied_algorithm() {
        let rsa = |alg: Option<&str>| {
            let mut v = serde_json::json!({"kty": "RSA", "kid": "r", "n": rsa_n(256), "e": "AQAB"});
            if let Some(alg) = alg {
                v["alg"] = alg.into();
            }
            pinned_algorithm(&jwk(v))
        };
        assert_eq!(rsa(None), Ok(Algorithm::RS256));
        assert_eq!(rsa(Some("PS256")), Ok(Algorithm::PS256));
        assert_eq!(rsa(Some("RS512")), Ok(Algorithm::RS512));
        assert!(rsa(Some("ES256")).is_err());
        assert!(rsa(Some("HS256")).is_err());
        assert!(rsa(Some("RSA-OAEP")).is_err());

        let ec = |crv: &str, alg: Option<&str>| {
            let mut v = serde_json::json!({"kty": "EC", "crv": crv, "kid": "e", "x": "AA", "y": "AA"});
            if let Some(alg) = alg {
                v["alg"] = alg.into();
            }
            pinned_algorithm(&jwk(v))
        };
        assert_eq!(ec("P-256", None), Ok(Algorithm::ES256));
        assert_eq!(ec("P-384", None), Ok(Algorithm::ES384));
        assert!(ec("P-256", Some("ES384")).is_err());
        assert!(ec("P-521", None).is_err());

        let okp = jwk(serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "o", "x": "AA"}));
        assert_eq!(pinned_algorithm(&okp), Ok(Algorithm::EdDSA));
        let oct = jwk(serde_json::json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0", "alg": "HS256"}));
        assert!(pinned_algorithm(&oct).unwrap_err().contains("symmetric"));
    }

    #[test]
    fn unusable_keys_are_skipped_and_a_set_without_any_is_refused() {
        let good = serde_json::json!({"kty": "RSA", "use": "sig", "kid": "good", "n": rsa_n(256), "e": "AQAB", "x5t": "x", "issuer": "i"});
        let document = serde_json::json!({"keys": [
            {"kty": "RSA", "use": "enc", "kid": "enc", "n": rsa_n(256), "e": "AQAB"},
            {"kty": "RSA", "n": rsa_n(256), "e": "AQAB"},
            {"kty": "RSA", "kid": "weak", "n": rsa_n(128), "e": "AQAB"},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "XYZ", "kid": "odd"},
            good,
        ]});
        let set = parse_jwks(&serde_json::to_vec(&document).unwrap(), "test").unwrap();
        assert_eq!(set.keys().collect::<Vec<_>>(), ["good"]);
        assert_eq!(set["good"].algorithm, Algorithm::RS256);

        assert!(parse_jwks(br#"{"keys": []}"#, "test").unwrap_err().contains("no usable signing key"));
        assert!(parse_jwks(b"<html>", "test").unwrap_err().contains("invalid JWKS"));
        assert!(parse_jwks(br#"{"kty": "RSA"}"#, "test").unwrap_err().contains("invalid JWKS"));
    }

    #[test]
    fn issuers_match_exactly_or_with_the_tenant_in_place_of_the_placeholder() {
        let exact = IssuerPattern::parse("https://sts.windows.net/abc/").unwrap();
        assert_eq!(exact.matches("https://sts.windows.net/abc/"), Some(None));
        assert_eq!(exact.matches("https://sts.windows.net/abc"), None);
        let per_tenant = IssuerPattern::parse("https://login.microsoftonline.com/{tenantid}/v2.0").unwrap();
        assert_eq!(per_tenant.matches("https://login.microsoftonline.com/t-1/v2.0"), Some(Some("t-1")));
        assert_eq!(per_tenant.matches("https://login.microsoftonline.com//v2.0"), None);
        assert_eq!(per_tenant.matches("https://login.microsoftonline.com/a/b/v2.0"), None);
        assert_eq!(per_tenant.matches("https://login.microsoftonline.com/t-1/v1.0"), None);
        assert!(IssuerPattern::parse("https://x/{tenantid}/{tenantid}").is_err());
    }

    #[test]
    fn configuration_mistakes_are_named() {
        let auth = AuthConfig { issuer: "casefile".into(), ..Default::default() };
        let client = reqwest::Client::new();
        let refused = |config: TrustedIssuerConfig| match TrustedIssuer::from_config(&auth, &config, &client) {
            Ok(_) => panic!("accepted {config:?}"),
            Err(e) => e,
        };
        let base = TrustedIssuerConfig {
            issuer: "https://idp.example/realms/soc".into(),
            jwks_url: Some("https://idp.example/certs".into()),
            ..Default::default()
        };
        assert!(TrustedIssuer::from_config(&auth, &base, &client).is_ok());
        assert!(refused(TrustedIssuerConfig { jwks_file: Some("k.json".into()), ..base.clone() }).contains("not both"));
        assert!(refused(TrustedIssuerConfig { jwks_url: None, ..base.clone() }).contains("jwks_file or jwks_url"));
        assert!(
            refused(TrustedIssuerConfig { jwks_url: Some("not a url".into()), ..base.clone() }).contains("not a URL")
        );
        assert!(
            refused(TrustedIssuerConfig { jwks_url: Some("http://idp.example/certs".into()), ..base.clone() })
                .contains("must be https")
        );
        let loopback = TrustedIssuerConfig { jwks_url: Some("http://127.0.0.1:9/certs".into()), ..base.clone() };
        assert!(TrustedIssuer::from_config(&auth, &loopback, &client).is_ok());
        assert!(refused(TrustedIssuerConfig { issuer: "casefile".into(), ..base.clone() }).contains("own issuer"));
        assert!(refused(TrustedIssuerConfig { tenant: Some("a/b".into()), ..base.clone() }).contains("tenant id"));
        assert!(refused(TrustedIssuerConfig { audiences: Some(vec![]), ..base.clone() }).contains("audiences"));
        assert!(refused(TrustedIssuerConfig { allowed_tids: Some(vec![]), ..base.clone() }).contains("allowed_tids"));
        assert!(refused(TrustedIssuerConfig { refresh_seconds: 0, ..base.clone() }).contains("refresh_seconds"));
        assert!(refused(TrustedIssuerConfig { issuer: " x".into(), ..base }).contains("spaces"));
    }
}
