//! The server's signing keys: Ed25519, each with a `kid`, kept in the store so that
//! every replica and the CLI sign and verify with the same set. Created on first use.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use casefile_store::{SigningKeyRecord, Store};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::AuthError;

pub const KEY_PURPOSE_TOKENS: &str = "token";
const ALGORITHM: &str = "EdDSA";

struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Public key, base64url, as JWKS `x`.
    x: String,
}

pub struct Keyring {
    /// Newest first; the first signs.
    keys: Vec<Key>,
}

impl Keyring {
    pub async fn load_or_create(store: &dyn Store) -> Result<Self, AuthError> {
        let mut records = store.signing_keys(KEY_PURPOSE_TOKENS).await?;
        if records.iter().all(|r| r.retired_at.is_some()) {
            let record = generate()?;
            store.insert_signing_key(&record).await?;
            records.insert(0, record);
        }
        let keys = records.iter().map(key_from_record).collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }

    fn current(&self) -> &Key {
        &self.keys[0]
    }

    /// Signs `claims` with the current key; `typ` separates token kinds.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, AuthError> {
        let key = self.current();
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
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token)?;
        if header.alg != Algorithm::EdDSA {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        let kid = header.kid.ok_or(ErrorKind::InvalidToken)?;
        let key = self.keys.iter().find(|k| k.kid == kid).ok_or(ErrorKind::InvalidSignature)?;
        Ok(jsonwebtoken::decode::<T>(token, &key.decoding, validation)?.claims)
    }

    /// A validation pinned to our algorithm.
    pub fn validation() -> Validation {
        Validation::new(Algorithm::EdDSA)
    }

    /// The public keys as a JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .keys
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

fn generate() -> Result<SigningKeyRecord, AuthError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| AuthError::Key(e.to_string()))?;
    let signing = SigningKey::from_bytes(&seed);
    let public = signing.verifying_key().to_bytes();
    // kid: a short fingerprint of the public key, stable and unique per key.
    let kid = {
        use sha2::{Digest, Sha256};
        URL_SAFE_NO_PAD.encode(&Sha256::digest(public)[..12])
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
