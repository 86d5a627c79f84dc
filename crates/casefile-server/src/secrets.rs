//! Bearer secrets (enrollment tokens, agent credentials): 256 random bits, shown once,
//! stored as SHA-256. A fast hash is right here because the secrets are random, not
//! chosen by people (passwords would need argon2).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

pub const ENROLLMENT_PREFIX: &str = "cfe_";
pub const AGENT_PREFIX: &str = "cfa_";

pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}
