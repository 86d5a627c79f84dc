//! What the agent keeps in its state directory: its enrollment (machine id and
//! credential) and its Ed25519 signing key. Both files are private to the agent's user.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::AgentError;

const IDENTITY_FILE: &str = "identity.json";
/// The signing key's file name in the state directory.
pub const KEY_FILE: &str = "agent.key";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub server: String,
    pub machine_id: String,
    pub tenant_id: String,
    pub credential: String,
}

fn state_error(path: &Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::State { path: path.to_owned(), source }
}

pub fn ensure_dir(dir: &Path) -> Result<(), AgentError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(state_error(dir))
}

/// Writes `bytes` to `path` readable by the owner only, atomically (temp file + rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(state_error(&tmp))?;
    file.write_all(bytes).and_then(|_| file.sync_all()).map_err(state_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(state_error(path))
}

pub fn load(dir: &Path) -> Result<Option<Identity>, AgentError> {
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AgentError::State { path, source: std::io::Error::other(e) }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AgentError::State { path, source: e }),
    }
}

pub fn save(dir: &Path, identity: &Identity) -> Result<(), AgentError> {
    let json = serde_json::to_vec_pretty(identity).expect("identity serializes");
    write_private(&dir.join(IDENTITY_FILE), &json)
}

/// The agent's signing key, created on first use.
pub fn signing_key(dir: &Path) -> Result<SigningKey, AgentError> {
    load_or_create_key(&dir.join(KEY_FILE))
}

/// An Ed25519 key kept as its 32-byte seed in `path`, created (owner-only) if missing.
pub fn load_or_create_key(path: &Path) -> Result<SigningKey, AgentError> {
    let path: PathBuf = path.to_owned();
    match std::fs::read(&path) {
        Ok(bytes) => {
            let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| AgentError::State {
                path: path.clone(),
                source: std::io::Error::other("not a 32-byte key"),
            })?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed)
                .map_err(|e| AgentError::State { path: path.clone(), source: std::io::Error::other(e.to_string()) })?;
            write_private(&path, &seed)?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(AgentError::State { path, source: e }),
    }
}

pub fn public_key_base64(key: &SigningKey) -> String {
    STANDARD.encode(key.verifying_key().to_bytes())
}

/// Answers a re-enrollment challenge: the machine's registered key signs the challenge,
/// the machine id and the key the agent registers next (issue 9 item 1).
pub fn prove(
    key: &SigningKey,
    challenge: &casefile_proto::agent::EnrollChallenge,
    new_public_key: Option<&str>,
) -> casefile_proto::agent::EnrollProof {
    use ed25519_dalek::Signer;
    let message = casefile_proto::agent::reenroll_message(&challenge.nonce, &challenge.machine_id, new_public_key);
    casefile_proto::agent::EnrollProof {
        nonce: challenge.nonce.clone(),
        signature: STANDARD.encode(key.sign(&message).to_bytes()),
    }
}
