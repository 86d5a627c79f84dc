//! The server's signing keys: Ed25519, each with a `kid`, kept in the store so that
//! every replica and the CLI sign and verify with the same set. Created on first use.
//!
//! Rotation without downtime: `casefile keys rotate` adds a key, which signs from then on;
//! older keys keep verifying until `casefile keys retire` takes them out of service. A
//! running server reloads the set from the store periodically ([`run_refresh`]) and at
//! once when a token names a `kid` it does not know yet ([`verify_access`]); when a reload
//! finds a key gone, the verified-token cache is cleared so its tokens stop working.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use casefile_store::{SigningKeyRecord, Store};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{AccessClaims, AuthError, TokenRejected, issuers};
use crate::state::AppState;

pub const KEY_PURPOSE_TOKENS: &str = "token";
const ALGORITHM: &str = "EdDSA";
/// Least time between two reloads caused by unknown `kid`s, so tokens with made-up key
/// ids cannot turn every request into a database read.
const MISS_RELOAD_EVERY: Duration = Duration::from_secs(5);

struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Public key, base64url, as JWKS `x`.
    x: String,
}

/// The keys in service (never retired), newest first: the first signs, all verify.
type KeySet = Arc<[Key]>;

pub struct Keyring {
    keys: RwLock<KeySet>,
    /// When an unknown `kid` last caused a reload.
    last_miss_reload: Mutex<Option<Instant>>,
    /// One reload at a time, read to install: two overlapping reloads (the periodic one
    /// and another replica's announcement of a retirement) could otherwise install in the
    /// reverse order of their reads, putting a retired key back in service.
    reloading: tokio::sync::Mutex<()>,
}

/// What a reload changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyChanges {
    pub added: usize,
    pub removed: usize,
}

impl Keyring {
    pub async fn load_or_create(store: &dyn Store) -> Result<Self, AuthError> {
        Ok(Self {
            keys: RwLock::new(load_in_service(store).await?),
            last_miss_reload: Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// Replaces the set with the keys in service in the store now.
    pub async fn reload(&self, store: &dyn Store) -> Result<KeyChanges, AuthError> {
        let _one_at_a_time = self.reloading.lock().await;
        let fresh = load_in_service(store).await?;
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let changes = KeyChanges {
            added: fresh.iter().filter(|k| !keys.iter().any(|old| old.kid == k.kid)).count(),
            removed: keys.iter().filter(|old| !fresh.iter().any(|k| k.kid == old.kid)).count(),
        };
        *keys = fresh;
        Ok(changes)
    }

    fn snapshot(&self) -> KeySet {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The `kid`s in service, newest (the signing key) first.
    pub fn kids(&self) -> Vec<String> {
        self.snapshot().iter().map(|k| k.kid.clone()).collect()
    }

    /// Whether `kid` is one of the keys in service.
    pub fn knows(&self, kid: &str) -> bool {
        self.snapshot().iter().any(|k| k.kid == kid)
    }

    /// True at most once per [`MISS_RELOAD_EVERY`]: whether an unknown `kid` may reload now.
    fn may_reload_on_miss(&self) -> bool {
        let mut last = self.last_miss_reload.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < MISS_RELOAD_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Signs `claims` with the current key; `typ` separates token kinds.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, AuthError> {
        let keys = self.snapshot();
        let key = &keys[0];
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        header.typ = Some(typ.to_owned());
        Ok(jsonwebtoken::encode(&header, claims, &key.encoding)?)
    }

    /// Verifies a token signed by one of our keys. The algorithm is pinned to the
    /// key's (EdDSA): `none` and HMAC tokens fail before any claim is read.
    pub fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<T, jsonwebtoken::errors::Error> {
        let header = jsonwebtoken::decode_header(token)?;
        if header.alg != Algorithm::EdDSA {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        let kid = header.kid.ok_or(ErrorKind::InvalidToken)?;
        let keys = self.snapshot();
        let key = keys.iter().find(|k| k.kid == kid).ok_or(ErrorKind::InvalidSignature)?;
        Ok(jsonwebtoken::decode::<T>(token, &key.decoding, validation)?.claims)
    }

    /// A validation pinned to our algorithm.
    pub fn validation() -> Validation {
        Validation::new(Algorithm::EdDSA)
    }

    /// The public keys as a JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .snapshot()
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "alg": ALGORITHM, "use": "sig", "kid": k.kid, "x": k.x,
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

/// The store's keys in service, newest first; creates one when there is none.
async fn load_in_service(store: &dyn Store) -> Result<KeySet, AuthError> {
    let mut records = store.signing_keys(KEY_PURPOSE_TOKENS).await?;
    records.retain(|r| r.retired_at.is_none());
    if records.is_empty() {
        let record = generate()?;
        store.insert_signing_key(&record).await?;
        records.push(record);
    }
    records.iter().map(key_from_record).collect()
}

/// Verifies an access token: routed by its (unverified) `iss` to this server's keyring
/// or to the trusted issuer it names (`issuers.rs`); any other issuer is refused.
pub async fn verify_access(state: &AppState, token: &str) -> Result<AccessClaims, TokenRejected> {
    let unverified = issuers::peek(token)?;
    let Some(iss) = unverified.iss.as_deref() else {
        return Err(TokenRejected::Invalid(ErrorKind::MissingRequiredClaim("iss".to_owned()).into()));
    };
    // The validation also holds the legacy issuer `casefile` while `auth.issuer` is defaulted.
    if iss == state.config.auth.issuer || state.access_validation.iss.as_ref().is_some_and(|own| own.contains(iss)) {
        return verify_own(state, token, &unverified).await;
    }
    match state.issuers.route(iss) {
        Some(issuer) => issuers::verify(state, issuer, token, &unverified).await,
        None => Err(TokenRejected::UntrustedIssuer),
    }
}

/// Verifies a token of this server's issuer against the keyring. A `kid` the keyring
/// does not know (a key rotated in by the CLI or another replica since the last reload)
/// reloads it from the store first, at most once every few seconds.
async fn verify_own(
    state: &AppState,
    token: &str,
    unverified: &issuers::Unverified,
) -> Result<AccessClaims, TokenRejected> {
    if issuers::named_algorithm(&unverified.alg)? != Algorithm::EdDSA {
        return Err(TokenRejected::AlgorithmNotAccepted);
    }
    let kid = unverified.kid.as_deref().ok_or(TokenRejected::NoKeyId)?;
    if !state.keyring.knows(kid)
        && state.keyring.may_reload_on_miss()
        && let Err(e) = refresh(state).await
    {
        tracing::warn!("reloading the signing keys failed: {e}");
    }
    if !state.keyring.knows(kid) {
        return Err(TokenRejected::UnknownKey);
    }
    Ok(state.keyring.verify(token, &state.access_validation)?)
}

/// Reloads the keyring from the store; when a key went out of service, forgets every
/// verified token so none that it signed is accepted any more.
pub async fn refresh(state: &AppState) -> Result<KeyChanges, AuthError> {
    let changes = state.keyring.reload(state.store.as_ref()).await?;
    if changes.removed > 0 {
        state.verified_tokens.clear();
    }
    if changes != KeyChanges::default() {
        tracing::info!(added = changes.added, retired = changes.removed, kids = ?state.keyring.kids(), "signing keys reloaded");
    }
    Ok(changes)
}

/// Reloads the keyring every `auth.key_refresh_seconds`, so a rotation or a retirement
/// made by the CLI (or another replica) applies without a restart.
pub async fn run_refresh(state: AppState) {
    let period = Duration::from_secs(state.config.auth.key_refresh_seconds.max(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        ticker.tick().await;
        if let Err(e) = refresh(&state).await {
            tracing::warn!("reloading the signing keys failed: {e}");
        }
    }
}

/// A signing key as `casefile keys list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The newest key in service: it signs new tokens.
    pub signing: bool,
}

/// Every token signing key, newest first.
pub async fn list(store: &dyn Store) -> Result<Vec<KeyInfo>, AuthError> {
    let records = store.signing_keys(KEY_PURPOSE_TOKENS).await?;
    let signer = records.iter().find(|r| r.retired_at.is_none()).map(|r| r.kid.clone());
    Ok(records
        .into_iter()
        .map(|r| KeyInfo {
            signing: Some(&r.kid) == signer.as_ref(),
            kid: r.kid,
            created_at: r.created_at,
            retired_at: r.retired_at,
        })
        .collect())
}

/// Adds a signing key that signs from now on; the older keys keep verifying.
pub async fn rotate(store: &dyn Store) -> Result<KeyInfo, AuthError> {
    // A first key, if the store has none yet, so that the new one has a predecessor.
    load_in_service(store).await?;
    let record = generate()?;
    store.insert_signing_key(&record).await?;
    Ok(KeyInfo { kid: record.kid, created_at: record.created_at, retired_at: None, signing: true })
}

/// Takes `kid` out of service: the tokens and links it signed stop verifying. The
/// newest key in service (the one that signs) cannot be retired; rotate first.
pub async fn retire(store: &dyn Store, kid: &str) -> Result<(), AuthError> {
    let keys = list(store).await?;
    let Some(key) = keys.iter().find(|k| k.kid == kid) else {
        return Err(AuthError::Key(format!("no signing key has kid '{kid}'")));
    };
    if key.retired_at.is_some() {
        return Err(AuthError::Key(format!("key '{kid}' is already retired")));
    }
    if key.signing {
        return Err(AuthError::Key(format!(
            "key '{kid}' is the newest key and signs new tokens; run `casefile keys rotate` first"
        )));
    }
    if !store.retire_signing_key(kid, chrono::Utc::now()).await? {
        return Err(AuthError::Key(format!("key '{kid}' is already retired")));
    }
    Ok(())
}

fn generate() -> Result<SigningKeyRecord, AuthError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| AuthError::Key(e.to_string()))?;
    let signing = SigningKey::from_bytes(&seed);
    let public = signing.verifying_key().to_bytes();
    // kid: a short fingerprint of the public key, stable and unique per key.
    let kid = {
        use sha2::{Digest, Sha256};
        // Hex, so a kid never starts with `-` and reads as a command-line flag.
        hex::encode(&Sha256::digest(public)[..12])
    };
    Ok(SigningKeyRecord {
        kid,
        purpose: KEY_PURPOSE_TOKENS.to_owned(),
        algorithm: ALGORITHM.to_owned(),
        private_key: seed.to_vec(),
        public_key: public.to_vec(),
        created_at: chrono::Utc::now(),
        retired_at: None,
    })
}

fn key_from_record(r: &SigningKeyRecord) -> Result<Key, AuthError> {
    let seed: [u8; 32] =
        r.private_key.as_slice().try_into().map_err(|_| AuthError::Key(format!("key {} is not 32 bytes", r.kid)))?;
    let signing = SigningKey::from_bytes(&seed);
    let der = signing.to_pkcs8_der().map_err(|e| AuthError::Key(e.to_string()))?;
    let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes());
    Ok(Key {
        kid: r.kid.clone(),
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
        decoding: DecodingKey::from_ed_components(&x)?,
        x,
    })
}
