//! Access tokens already verified, so a script polling an action every few seconds does
//! not pay an Ed25519 verification per call. An entry holds the token's claims only
//! until the token expires; entries are keyed by the token's SHA-256, not the token.
//!
//! When a signing key is retired the keyring's reload clears this cache, so no token that
//! key signed is taken on trust any more.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::AccessClaims;

/// Most tokens kept: far more callers than a SOC has, a few MiB at most.
const CAPACITY: usize = 4096;

#[derive(Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<[u8; 32], AccessClaims>>,
}

impl VerifiedTokens {
    /// The claims of `token` if it was verified before and is still within `nbf`..`exp`
    /// (with `leeway` seconds) at `now`.
    pub fn get(&self, token: &str, now: i64, leeway: i64) -> Option<AccessClaims> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(&key(token)).filter(|c| c.nbf - leeway <= now && now < c.exp + leeway).cloned()
    }

    pub fn insert(&self, token: &str, claims: &AccessClaims, now: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, c| c.exp > now);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key(token), claims.clone());
    }

    /// Forgets every token (a signing key was retired).
    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}
