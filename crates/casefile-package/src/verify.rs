//! Re-reads a package and checks every file against `manifest.json`.

use std::collections::HashSet;
use std::io::{Read, Seek};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::archive::{Archive, Limits};
use crate::manifest::Manifest;
use crate::signature::{self, SignatureCheck};
use crate::{MANIFEST_PATH, PackageError, SIGNATURE_PATH};

/// Largest `manifest.json` / `manifest.sig` read: a hostile package cannot make the
/// verifier allocate without bound.
const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// A file that does not match the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Missing {
        path: String,
    },
    Altered {
        path: String,
        expected_sha256: String,
        actual_sha256: String,
        expected_size: u64,
        actual_size: u64,
    },
    Unlisted {
        path: String,
    },
    /// The zip declares the file larger than the manifest lists it (it is not inflated).
    Oversized {
        path: String,
        expected_size: u64,
        declared_size: u64,
    },
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
            Self::Oversized { path, expected_size, declared_size } => write!(
                f,
                "{path}: altered (manifest {expected_size} bytes; the zip declares {declared_size} bytes, not inflated)"
            ),
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
    verify_with_limits(reader, expected, Limits::default())
}

/// [`verify_with`] under explicit [`Limits`]. The zip's structure is refused first (see
/// [`crate::archive`]); then every listed file is inflated once, never past its manifest
/// size, and hashed.
pub fn verify_with_limits<R: Read + Seek>(
    reader: R,
    expected: Option<&VerifyingKey>,
    limits: Limits,
) -> Result<VerifyReport, PackageError> {
    let mut zip = Archive::open(reader, limits)?;
    let manifest_bytes =
        read_small(&mut zip, MANIFEST_PATH)?.ok_or_else(|| PackageError::Manifest("not in the package".to_owned()))?;
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| PackageError::Manifest(e.to_string()))?;
    let signature_bytes = read_small(&mut zip, SIGNATURE_PATH)?;
    let signature = signature::check(&manifest_bytes, signature_bytes.as_deref(), expected);
    let mut problems = Vec::new();
    let mut listed = HashSet::new();
    for item in &manifest.items {
        if !listed.insert(item.path.as_str()) {
            return Err(PackageError::Manifest(format!("it lists {:?} twice", item.path)));
        }
        let Some(index) = zip.index_of(&item.path) else {
            problems.push(Problem::Missing { path: item.path.clone() });
            continue;
        };
        let declared = zip.entries()[index].size;
        if declared > item.size {
            // Not inflated at all: the zip itself says the file is not the one listed.
            problems.push(Problem::Oversized {
                path: item.path.clone(),
                expected_size: item.size,
                declared_size: declared,
            });
            continue;
        }
        let mut hasher = Sha256::new();
        let size = zip.stream(index, item.size, &mut |chunk| hasher.update(chunk))?;
        let sha = hex::encode(hasher.finalize());
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
    for entry in zip.entries() {
        let name = entry.name.as_str();
        if name != MANIFEST_PATH && name != SIGNATURE_PATH && !listed.contains(name) {
            problems.push(Problem::Unlisted { path: name.to_owned() });
        }
    }
    let manifest_sha256 = hex::encode(Sha256::digest(&manifest_bytes));
    Ok(VerifyReport { files_checked: manifest.items.len(), manifest, manifest_sha256, problems, signature })
}

/// An entry read whole, refusing one larger than [`MAX_MANIFEST_BYTES`]; `None` if absent.
fn read_small<R: Read + Seek>(zip: &mut Archive<R>, name: &str) -> Result<Option<Vec<u8>>, PackageError> {
    let Some(index) = zip.index_of(name) else {
        return Ok(None);
    };
    zip.read_to_vec(index, MAX_MANIFEST_BYTES).map(Some)
}
