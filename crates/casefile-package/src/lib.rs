//! The casefile investigation package: a zip with one folder per collector, a
//! `manifest.json` that lists every file with its SHA-256, size, collector, status and
//! duration, and a `CollectionSummaryReport` a person reads without tools.
//!
//! The writer streams: each file is hashed as it is written into the zip, so memory does
//! not grow with file sizes. The verifier re-reads a package and names every file that
//! does not match its manifest. Agent, server and CLI share both.

pub mod archive;
#[doc(hidden)]
pub mod corpus;
mod hashing;
pub mod manifest;
pub mod signature;
mod summary;
pub mod verify;
pub mod view;
pub mod writer;

pub use archive::Limits;
pub use hashing::hash_reader;
pub use manifest::{CollectorRun, ItemStatus, Manifest, ManifestHost, ManifestItem};
pub use signature::SignatureCheck;
pub use verify::{Problem, VerifyReport, verify, verify_with, verify_with_limits};
pub use writer::{ItemOutcome, ItemSink, PackageWriter};

/// Names of the files at the package root that the writer adds itself.
pub const MANIFEST_PATH: &str = "manifest.json";
pub const SIGNATURE_PATH: &str = "manifest.sig";
pub const SUMMARY_HTML_PATH: &str = "CollectionSummaryReport.html";
pub const SUMMARY_CSV_PATH: &str = "CollectionSummaryReport.csv";

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("reading or writing the package failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the zip container is invalid: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("manifest.json is missing or unreadable: {0}")]
    Manifest(String),
    /// The zip is not one the package writer could have made (truncated, not a zip,
    /// records outside its directory).
    #[error("the zip is refused: {0}")]
    Malformed(String),
    /// One entry is refused; `entry` is its name as stored.
    #[error("entry {entry:?} is refused: {why}")]
    Refused { entry: String, why: String },
    #[error("the collection was cancelled")]
    Cancelled,
}

impl PackageError {
    /// The error an [`archive::EntryReader`] failed with: the [`PackageError`] it carries
    /// (a refused entry), else an I/O failure.
    pub fn from_entry_read(e: std::io::Error) -> Self {
        if !e.get_ref().is_some_and(|inner| inner.is::<PackageError>()) {
            return Self::Io(e);
        }
        let kind = e.kind();
        match e.into_inner().map(|inner| inner.downcast::<PackageError>()) {
            Some(Ok(inner)) => *inner,
            Some(Err(other)) => Self::Io(std::io::Error::new(kind, other)),
            None => Self::Io(kind.into()),
        }
    }
}
