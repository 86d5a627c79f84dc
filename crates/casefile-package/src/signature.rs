//! `manifest.sig`: an Ed25519 signature over the exact bytes of `manifest.json`. The
//! manifest lists every file with its SHA-256, so the signature covers the whole package.
//! The signer's public key travels in the file; whether it is the *expected* key (the
//! agent key registered at enrollment, or one given on the command line) is the
//! verifier's question.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

pub const ALGORITHM: &str = "Ed25519";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSignature {
    pub algorithm: String,
    /// The signer's public key, base64 of its 32 bytes.
    pub public_key: String,
    /// Base64 of the 64-byte signature over `manifest.json`.
    pub signature: String,
}

pub fn sign(manifest_bytes: &[u8], key: &SigningKey) -> ManifestSignature {
    ManifestSignature {
        algorithm: ALGORITHM.to_owned(),
        public_key: public_key_base64(&key.verifying_key()),
        signature: STANDARD.encode(key.sign(manifest_bytes).to_bytes()),
    }
}

pub fn public_key_base64(key: &VerifyingKey) -> String {
    STANDARD.encode(key.to_bytes())
}

/// A public key given as base64 of its 32 bytes.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = STANDARD.decode(text.trim()).map_err(|e| format!("not base64: {e}"))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| "an Ed25519 public key has 32 bytes".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

/// What the signature check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Valid, by `public_key`; `expected` tells whether that key was the one asked for
    /// (`None`: no key was given, so only the package's integrity is proven).
    Valid {
        public_key: String,
        expected: Option<bool>,
    },
    Missing,
    Invalid(String),
}

impl SignatureCheck {
    /// Valid, and by the expected key when one was given.
    pub fn is_trusted(&self) -> bool {
        matches!(self, Self::Valid { expected: None | Some(true), .. })
    }
}

impl std::fmt::Display for SignatureCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Valid { public_key, expected: Some(true) } => write!(f, "signed by the expected key {public_key}"),
            Self::Valid { public_key, expected: Some(false) } => {
                write!(f, "signed by {public_key}, which is not the expected key")
            }
            Self::Valid { public_key, expected: None } => {
                write!(f, "signed by {public_key} (no key given to compare with: integrity only)")
            }
            Self::Missing => write!(f, "not signed (manifest.sig is missing)"),
            Self::Invalid(why) => write!(f, "the signature is invalid: {why}"),
        }
    }
}

/// Checks `signature_json` (the bytes of `manifest.sig`) against the manifest bytes.
pub fn check(manifest_bytes: &[u8], signature_json: Option<&[u8]>, expected: Option<&VerifyingKey>) -> SignatureCheck {
    let Some(raw) = signature_json else {
        return SignatureCheck::Missing;
    };
    let parsed: ManifestSignature = match serde_json::from_slice(raw) {
        Ok(parsed) => parsed,
        Err(e) => return SignatureCheck::Invalid(format!("manifest.sig is unreadable: {e}")),
    };
    if parsed.algorithm != ALGORITHM {
        return SignatureCheck::Invalid(format!("unsupported algorithm '{}'", parsed.algorithm));
    }
    let key = match parse_public_key(&parsed.public_key) {
        Ok(key) => key,
        Err(e) => return SignatureCheck::Invalid(e),
    };
    let signature = match STANDARD.decode(&parsed.signature).ok().and_then(|b| Signature::from_slice(&b).ok()) {
        Some(signature) => signature,
        None => return SignatureCheck::Invalid("the signature is not 64 bytes of base64".to_owned()),
    };
    if key.verify(manifest_bytes, &signature).is_err() {
        return SignatureCheck::Invalid("it does not match manifest.json".to_owned());
    }
    SignatureCheck::Valid { public_key: parsed.public_key, expected: expected.map(|e| *e == key) }
}
