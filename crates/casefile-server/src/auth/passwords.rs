//! argon2id hashing of secrets people and programs present: application client secrets and
//! local users' passwords. Hashing runs on the blocking pool, two at a time.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::secrets;

/// argon2 hashes at once; each takes about 19 MiB and a few tens of milliseconds of CPU,
/// so a burst of sign-ins or token requests queues here instead of exhausting the machine.
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HashError(String);

/// An argon2id PHC string of `secret` (the crate's default parameters, a random salt).
pub async fn hash(secret: &str) -> Result<String, HashError> {
    let secret = secret.to_owned();
    run(move || {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| HashError(e.to_string()))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
        Argon2::default()
            .hash_password(secret.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| HashError(e.to_string()))
    })
    .await
}

/// Whether `secret` matches the PHC string `hash` (its own parameters and salt); without a
/// hash, it is checked against a decoy nothing matches, at the same cost, so an unknown
/// name costs as much as a known one.
pub async fn verify(secret: &str, hash: Option<String>) -> Result<bool, HashError> {
    let secret = secret.to_owned();
    run(move || {
        let hash = match &hash {
            Some(hash) => hash.as_str(),
            None => decoy_hash(),
        };
        let parsed = PasswordHash::new(hash).map_err(|e| HashError(format!("stored hash: {e}")))?;
        Ok(Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok())
    })
    .await
}

/// Runs an argon2 computation on the blocking pool, a few at a time.
async fn run<T: Send + 'static>(work: impl FnOnce() -> Result<T, HashError> + Send + 'static) -> Result<T, HashError> {
    let _permit = HASHING.acquire().await.map_err(|e| HashError(e.to_string()))?;
    tokio::task::spawn_blocking(work).await.map_err(|e| HashError(e.to_string()))?
}

fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::encode_b64(b"casefile-decoy!!").expect("a 16-byte salt encodes");
        Argon2::default()
            .hash_password(secrets::generate("").as_bytes(), &salt)
            .map(|h| h.to_string())
            .expect("argon2 with its default parameters hashes")
    })
}
