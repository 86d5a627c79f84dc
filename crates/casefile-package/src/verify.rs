//! Re-reads a package and checks every file against `manifest.json`.

use std::collections::HashSet;
use std::io::{Read, Seek};

use zip::ZipArchive;

use ed25519_dalek::VerifyingKey;

use crate::hashing::hash_reader;
use crate::manifest::Manifest;
use crate::signature::{self, SignatureCheck};
use crate::{MANIFEST_PATH, PackageError, SIGNATURE_PATH};

/// Largest `manifest.json` / `manifest.sig` read: a hostile package cannot make the
/// verifier allocate without bound.
const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// A file that does not match the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Missing { path: String },
    Altered { path: String, expected_sha256: String, actual_sha256: String, expected_size: u64, actual_size: u64 },
    Unlisted { path: String },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing { path } => write!(f, "{path}: listed in the manifest but missing"),
            Self::Altered { path, expected_sha256, actual_sha256, expected_size, actual_size } => write!(
                f,
                "{path}: altered (manifest {expected_sha256}, {expected_size} bytes; file {actual_sha256}, {actual_size} bytes)"
            ),
            Self::Unlisted { path } => write!(f, "{path}: present but not in the manifest"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub manifest: Manifest,
    /// SHA-256 (hex) of `manifest.json` as stored: what the signature covers.
    pub manifest_sha256: String,
    pub files_checked: usize,
    pub problems: Vec<Problem>,
    pub signature: SignatureCheck,
}

impl VerifyReport {
    /// Every file matches the manifest (whatever the signature says).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Every file matches, and the manifest carries a valid signature (by the expected
    /// key, when one was given).
    pub fn is_authentic(&self) -> bool {
        self.is_ok() && self.signature.is_trusted()
    }
}

/// Checks every file of the package against its manifest, streaming each entry.
pub fn verify<R: Read + Seek>(reader: R) -> Result<VerifyReport, PackageError> {
    verify_with(reader, None)
}

/// [`verify`], also checking `manifest.sig`, against `expected` when given.
pub fn verify_with<R: Read + Seek>(reader: R, expected: Option<&VerifyingKey>) -> Result<VerifyReport, PackageError> {
    let mut zip = ZipArchive::new(reader)?;
    let manifest_bytes =
        read_small(&mut zip, MANIFEST_PATH)?.ok_or_else(|| PackageError::Manifest("not in the package".to_owned()))?;
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| PackageError::Manifest(e.to_string()))?;
    let signature_bytes = read_small(&mut zip, SIGNATURE_PATH)?;
    let signature = signature::check(&manifest_bytes, signature_bytes.as_deref(), expected);
    let mut problems = Vec::new();
    let mut listed = HashSet::new();
    for item in &manifest.items {
        listed.insert(item.path.as_str());
        let entry = match zip.by_name(&item.path) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => {
                problems.push(Problem::Missing { path: item.path.clone() });
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let (sha, size) = hash_reader(entry)?;
        if sha != item.sha256 || size != item.size {
            problems.push(Problem::Altered {
                path: item.path.clone(),
                expected_sha256: item.sha256.clone(),
                actual_sha256: sha,
                expected_size: item.size,
                actual_size: size,
            });
        }
    }
    for name in zip.file_names() {
        let name = name?;
        if name != MANIFEST_PATH && name != SIGNATURE_PATH && !name.ends_with('/') && !listed.contains(name.as_ref()) {
            problems.push(Problem::Unlisted { path: name.into_owned() });
        }
    }
    let manifest_sha256 = hash_reader(&manifest_bytes[..])?.0;
    Ok(VerifyReport { files_checked: manifest.items.len(), manifest, manifest_sha256, problems, signature })
}

/// An entry read whole, refusing one larger than [`MAX_MANIFEST_BYTES`]; `None` if absent.
fn read_small<R: Read + Seek>(zip: &mut ZipArchive<R>, name: &str) -> Result<Option<Vec<u8>>, PackageError> {
    let entry = match zip.by_name(name) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = Vec::new();
    entry.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(PackageError::Manifest(format!("{name} is larger than {MAX_MANIFEST_BYTES} bytes")));
    }
    Ok(Some(bytes))
}
