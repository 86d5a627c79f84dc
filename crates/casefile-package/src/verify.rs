//! Re-reads a package and checks every file against `manifest.json`.

use std::collections::HashSet;
use std::io::{Read, Seek};

use zip::ZipArchive;

use crate::hashing::hash_reader;
use crate::manifest::Manifest;
use crate::{MANIFEST_PATH, PackageError};

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
    pub files_checked: usize,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every file of the package against its manifest, streaming each entry.
pub fn verify<R: Read + Seek>(reader: R) -> Result<VerifyReport, PackageError> {
    let mut zip = ZipArchive::new(reader)?;
    let manifest: Manifest = {
        let entry = zip.by_name(MANIFEST_PATH).map_err(|e| PackageError::Manifest(e.to_string()))?;
        serde_json::from_reader(entry).map_err(|e| PackageError::Manifest(e.to_string()))?
    };
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
        if name != MANIFEST_PATH && !name.ends_with('/') && !listed.contains(name.as_ref()) {
            problems.push(Problem::Unlisted { path: name.into_owned() });
        }
    }
    Ok(VerifyReport { files_checked: manifest.items.len(), manifest, problems })
}
