//! `casefile backup` and `casefile restore`: one zip archive holding
//!
//! - `data/casefile.db`: a consistent snapshot of the database (`VACUUM INTO`, taken while
//!   the server keeps writing); it holds the signing keys, applications and the audit trail;
//! - `data/packages/...`: the stored packages (copied after the snapshot, so every package
//!   the snapshot knows is there; a package published later is carried along unreferenced),
//!   when they are in a local directory. Packages in a bucket (`[blobs] url = "s3://…"`)
//!   are not copied: the manifest names the bucket, and backup and restore say so;
//! - `data/tls/...` and `data/endpoint.json`: the generated CA and server certificate, and
//!   what the server recorded for the CLI;
//! - `config/casefile.toml`: the configuration file, when there is one;
//! - `casefile-backup.json`, last: every other entry's size and SHA-256.
//!
//! Files are streamed in and out (memory stays bounded whatever the packages weigh). A
//! restore checks every entry against the manifest, and every name, before it writes
//! anything; it then extracts beside the target and moves the result into place.

use std::io::Read;
use std::path::{Path, PathBuf};

use casefile_proto::time::Timestamp;
use casefile_store::Store;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

use super::{AdminError, Result};
use crate::config::Config;

const MANIFEST: &str = "casefile-backup.json";
const FORMAT: &str = "casefile-backup/1";
const DATABASE: &str = "data/casefile.db";
const CONFIG: &str = "config/casefile.toml";
/// Where a restore leaves the archived configuration file, inside the data directory.
pub const RESTORED_CONFIG: &str = "casefile.toml.restored";
/// A manifest larger than this is not casefile's (about 3 million entries).
const MAX_MANIFEST_BYTES: u64 = 512 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    created_at: Timestamp,
    entries: Vec<Entry>,
    /// `s3://bucket/prefix` when the packages live in a bucket and are not in the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    packages_in: Option<String>,
    /// The directory the packages were stored in, when it was not `<data_dir>/packages`:
    /// they are archived, and restored into `<data_dir>/packages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    packages_from: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Entry {
    name: String,
    size: u64,
    sha256: String,
}

/// What a backup wrote.
#[derive(Debug)]
pub struct BackupReport {
    pub path: PathBuf,
    pub entries: usize,
    pub packages: usize,
    pub bytes: u64,
    /// SHA-256 of the archive file; `casefile restore --sha256` checks it.
    pub sha256: String,
    /// The bucket holding the packages, which are not in the archive.
    pub packages_in: Option<String>,
}

/// What a restore did.
#[derive(Debug)]
pub struct RestoreReport {
    pub entries: usize,
    /// Where the data directory that was replaced (`--force`) was moved.
    pub replaced: Option<PathBuf>,
    /// The archived configuration file, restored into the data directory.
    pub config: Option<PathBuf>,
    /// The bucket the archive's packages live in (they are not in the archive).
    pub packages_in: Option<String>,
    /// The directory the packages came from, when not `<data_dir>/packages` (where this
    /// restore put them).
    pub packages_from: Option<PathBuf>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AdminError {
    let what = what.into();
    move |source| AdminError::Io { what, source }
}

pub(super) async fn backup(
    store: &dyn Store,
    config: &Config,
    output: &Path,
    config_file: Option<&Path>,
    now: Timestamp,
) -> Result<BackupReport> {
    if output.exists() {
        return Err(AdminError::Invalid(format!("{} exists: a backup never replaces a file", output.display())));
    }
    let dir = super::migration_backup_dir(config);
    crate::create_private_dir(&dir)?;
    let snapshot = dir.join(format!(".snapshot-{}.db", uuid::Uuid::new_v4()));
    store.backup_into(&snapshot).await?;
    let (config, output, config_file) = (config.clone(), output.to_owned(), config_file.map(Path::to_owned));
    let written = snapshot.clone();
    let result =
        tokio::task::spawn_blocking(move || write_archive(&config, &written, &output, config_file.as_deref(), now))
            .await
            .map_err(|e| AdminError::Invalid(format!("the backup task failed: {e}")));
    let _ = std::fs::remove_file(&snapshot);
    result?
}

fn write_archive(
    config: &Config,
    snapshot: &Path,
    output: &Path,
    config_file: Option<&Path>,
    now: Timestamp,
) -> Result<BackupReport> {
    let name =
        output.file_name().ok_or_else(|| AdminError::Invalid(format!("{} is not a file name", output.display())))?;
    let partial = output.with_file_name(format!(".{}.partial-{}", name.to_string_lossy(), uuid::Uuid::new_v4()));
    let result =
        write_entries(config, snapshot, &partial, config_file, now).and_then(|(entries, packages, packages_in)| {
            std::fs::rename(&partial, output)
                .map_err(io(format!("cannot move the archive to {}", output.display())))?;
            let (bytes, sha256) = hash_file(output)?;
            Ok(BackupReport { path: output.to_owned(), entries, packages, bytes, sha256, packages_in })
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn write_entries(
    config: &Config,
    snapshot: &Path,
    partial: &Path,
    config_file: Option<&Path>,
    now: Timestamp,
) -> Result<(usize, usize, Option<String>)> {
    let location = config.blobs.location(&config.data_dir).map_err(AdminError::Invalid)?;
    let file = private_file(partial)?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let mut entries = Vec::new();
    let zipped =
        |e: zip::result::ZipError| AdminError::Io { what: "cannot write the archive".into(), source: e.into() };
    let mut add = |zip: &mut zip::ZipWriter<_>, name: String, path: &Path, deflate: bool| -> Result<bool> {
        let mut source = match std::fs::File::open(path) {
            Ok(f) => f,
            // Deleted since it was listed (a package past its retention): not backed up.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(format!("cannot read {}", path.display()))(e)),
        };
        let method = if deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
        let options = SimpleFileOptions::default().compression_method(method).large_file(true).unix_permissions(0o600);
        zip.start_file(name.as_str(), options).map_err(zipped)?;
        let mut hashing = Hashing::new(&mut source);
        std::io::copy(&mut hashing, zip).map_err(io(format!("cannot archive {}", path.display())))?;
        let (size, sha256) = hashing.finish();
        entries.push(Entry { name, size, sha256 });
        Ok(true)
    };
    add(&mut zip, DATABASE.to_owned(), snapshot, true)?;
    let mut packages = 0;
    let mut packages_from = None;
    let packages_in = match &location {
        crate::config::BlobLocation::Dir(dir) => {
            for (rel, path) in files_under(dir)? {
                packages += usize::from(add(&mut zip, format!("data/packages/{rel}"), &path, false)?);
            }
            if *dir != config.data_dir.join("packages") {
                packages_from = Some(dir.clone());
            }
            None
        }
        // The bucket is not copied: it is as large as all evidence kept, and has its own
        // safekeeping (versioning, replication).
        bucket @ crate::config::BlobLocation::S3 { .. } => Some(bucket.to_string()),
    };
    for (rel, path) in files_under(&config.tls_dir())? {
        add(&mut zip, format!("data/tls/{rel}"), &path, true)?;
    }
    add(&mut zip, format!("data/{}", crate::Endpoint::FILE), &config.data_dir.join(crate::Endpoint::FILE), true)?;
    if let Some(file) = config_file
        && !add(&mut zip, CONFIG.to_owned(), file, true)?
    {
        return Err(AdminError::Invalid(format!("the configuration file {} is gone", file.display())));
    }
    let count = entries.len();
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        created_at: now,
        entries,
        packages_in: packages_in.clone(),
        packages_from,
    };
    zip.start_file(MANIFEST, SimpleFileOptions::default().unix_permissions(0o600)).map_err(zipped)?;
    serde_json::to_writer_pretty(&mut zip, &manifest).map_err(|e| io("cannot write the manifest")(e.into()))?;
    let file =
        zip.finish().map_err(zipped)?.into_inner().map_err(|e| io("cannot write the archive")(e.into_error()))?;
    file.sync_all().map_err(io("cannot write the archive"))?;
    Ok((count, packages, packages_in))
}

/// Regular files below `root`, as (`/`-joined relative path, path), sorted. A missing
/// root has none; symbolic links are not followed.
fn files_under(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    let mut pending = vec![(String::new(), root.to_owned())];
    while let Some((prefix, dir)) = pending.pop() {
        let listing = match std::fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(format!("cannot list {}", dir.display()))(e)),
        };
        for entry in listing {
            let entry = entry.map_err(io(format!("cannot list {}", dir.display())))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push((rel, entry.path())),
                Ok(t) if t.is_file() => found.push((rel, entry.path())),
                _ => {}
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Restores the archive at `archive` into `data_dir`. Refuses a non-empty `data_dir`
/// unless `force` (which moves it aside, never deletes it), and an archive that does not
/// verify, before writing anything.
pub fn restore(archive: &Path, data_dir: &Path, force: bool, expected_sha256: Option<&str>) -> Result<RestoreReport> {
    let bad = |why: String| AdminError::Archive { path: archive.to_owned(), why };
    // Never from under a running server: it would keep its database in the directory moved
    // aside and write new packages into the restored one.
    let _owner = super::DataDirLock::acquire_existing(data_dir)?;
    let occupied = match std::fs::read_dir(data_dir) {
        Ok(mut listing) => listing.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io(format!("cannot read {}", data_dir.display()))(e)),
    };
    if occupied && !force {
        return Err(AdminError::Invalid(format!(
            "{} is not empty: restore into an empty or new directory, or pass --force to move it aside",
            data_dir.display()
        )));
    }
    if let Some(expected) = expected_sha256 {
        let (_, actual) = hash_file(archive)?;
        if !actual.eq_ignore_ascii_case(expected.trim().trim_start_matches("sha256:")) {
            return Err(bad(format!("its SHA-256 is {actual}, not {expected}")));
        }
    }
    let file = std::fs::File::open(archive).map_err(io(format!("cannot open {}", archive.display())))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(format!("not a readable zip archive (truncated?): {e}")))?;
    let manifest = read_manifest(&mut zip).map_err(bad)?;
    verify(&mut zip, &manifest, None).map_err(bad)?;

    // Extract beside the target, so that the final move is a rename on one file system.
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(format!("cannot create {}", parent.display())))?;
    let leaf = data_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
    let staging = parent.join(format!(".{leaf}.restoring-{}", uuid::Uuid::new_v4()));
    crate::create_private_dir(&staging)?;
    // The archive is read a second time: it must still match (it could change between).
    if let Err(why) = verify(&mut zip, &manifest, Some(&staging)) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(bad(why));
    }
    // A failure from here on leaves the directory as it was and no extracted copy behind.
    let give_up = |e: AdminError| {
        let _ = std::fs::remove_dir_all(&staging);
        e
    };
    let replaced = match (occupied, data_dir.exists()) {
        (true, _) => {
            let aside = parent.join(format!("{leaf}.replaced-{}", uuid::Uuid::new_v4()));
            std::fs::rename(data_dir, &aside)
                .map_err(io(format!(
                    "cannot move {} aside (a mount point? restore into a new directory)",
                    data_dir.display()
                )))
                .map_err(give_up)?;
            Some(aside)
        }
        (false, true) => {
            std::fs::remove_dir(data_dir)
                .map_err(io(format!("cannot replace {}", data_dir.display())))
                .map_err(give_up)?;
            None
        }
        (false, false) => None,
    };
    if let Err(e) = std::fs::rename(&staging, data_dir) {
        if let Some(aside) = &replaced {
            let _ = std::fs::rename(aside, data_dir);
        }
        return Err(give_up(io(format!("cannot move the restored data to {}", data_dir.display()))(e)));
    }
    let config = data_dir.join(RESTORED_CONFIG);
    Ok(RestoreReport {
        entries: manifest.entries.len(),
        replaced,
        config: config.exists().then_some(config),
        packages_in: manifest.packages_in,
        packages_from: manifest.packages_from,
    })
}

fn read_manifest<R: Read + std::io::Seek>(zip: &mut zip::ZipArchive<R>) -> Result<Manifest, String> {
    let entry = zip.by_name(MANIFEST).map_err(|_| format!("it has no {MANIFEST}: not a casefile backup"))?;
    let mut raw = Vec::new();
    entry.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut raw).map_err(|e| format!("{MANIFEST}: {e}"))?;
    if raw.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!("{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes"));
    }
    let manifest: Manifest = serde_json::from_slice(&raw).map_err(|e| format!("{MANIFEST} is not valid: {e}"))?;
    if manifest.format != FORMAT {
        return Err(format!("format '{}' is not {FORMAT}", manifest.format));
    }
    if !manifest.entries.iter().any(|e| e.name == DATABASE) {
        return Err(format!("it holds no {DATABASE}"));
    }
    Ok(manifest)
}

/// Where an entry goes below the data directory; `None` for a name that is not one a
/// backup writes (`..`, absolute, backslashes, empty parts, outside `data/` and `config/`).
fn destination(name: &str) -> Option<PathBuf> {
    if name == CONFIG {
        return Some(PathBuf::from(RESTORED_CONFIG));
    }
    let rest = name.strip_prefix("data/")?;
    let safe = rest
        .split('/')
        .all(|part| !part.is_empty() && part != "." && part != ".." && !part.contains(['\\', '\0', ':']));
    safe.then(|| rest.split('/').collect())
}

/// Checks every entry against the manifest, streaming each through SHA-256; with `into`,
/// also writes each to its place below `into`.
fn verify<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    manifest: &Manifest,
    into: Option<&Path>,
) -> Result<(), String> {
    let expected: std::collections::HashMap<&str, &Entry> =
        manifest.entries.iter().map(|e| (e.name.as_str(), e)).collect();
    if expected.len() != manifest.entries.len() {
        return Err(format!("{MANIFEST} lists an entry twice"));
    }
    let mut seen = std::collections::HashSet::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| format!("entry {i}: {e}"))?;
        let name = entry.name().map_err(|e| format!("entry {i}: {e}"))?.into_owned();
        if name == MANIFEST {
            continue;
        }
        let Some(dest) = destination(&name).filter(|_| entry.enclosed_name().is_some()) else {
            return Err(format!(
                "the entry '{name}' is not a name a backup writes (it would land outside the data directory)"
            ));
        };
        if !entry.is_file() || entry.is_symlink() {
            return Err(format!("the entry '{name}' is not a plain file"));
        }
        let Some(want) = expected.get(name.as_str()) else {
            return Err(format!("the entry '{name}' is not in {MANIFEST}"));
        };
        if !seen.insert(name.clone()) {
            return Err(format!("the entry '{name}' appears twice"));
        }
        let mut hashing = Hashing::new(&mut entry);
        let copied = match into {
            None => std::io::copy(&mut hashing, &mut std::io::sink()),
            Some(root) => {
                let path = root.join(&dest);
                if let Some(dir) = path.parent() {
                    crate::create_private_dir(dir).map_err(|e| e.to_string())?;
                }
                let mut out = private_file(&path).map_err(|e| e.to_string())?;
                std::io::copy(&mut hashing, &mut out).and_then(|n| out.sync_all().map(|_| n))
            }
        };
        copied.map_err(|e| format!("the entry '{name}' is damaged: {e}"))?;
        let (size, sha256) = hashing.finish();
        if size != want.size || sha256 != want.sha256 {
            return Err(format!("the entry '{name}' does not match {MANIFEST} (size {size}, SHA-256 {sha256})"));
        }
    }
    if let Some(missing) = manifest.entries.iter().find(|e| !seen.contains(&e.name)) {
        return Err(format!("{MANIFEST} lists '{}', which the archive does not hold", missing.name));
    }
    Ok(())
}

fn private_file(path: &Path) -> Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(io(format!("cannot create {}", path.display())))
}

fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut file = std::fs::File::open(path).map_err(io(format!("cannot read {}", path.display())))?;
    let mut hashing = Hashing::new(&mut file);
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(io(format!("cannot read {}", path.display())))?;
    let (size, sha256) = hashing.finish();
    Ok((size, sha256))
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Self { inner, hasher: Sha256::new(), size: 0 }
    }

    fn finish(self) -> (u64, String) {
        (self.size, hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_a_backup_writes_have_a_destination() {
        assert_eq!(destination("data/packages/default/x.zip"), Some(PathBuf::from("packages/default/x.zip")));
        assert_eq!(destination("config/casefile.toml"), Some(PathBuf::from(RESTORED_CONFIG)));
        for hostile in [
            "data/../../etc/passwd",
            "data/..",
            "data/./x",
            "data//x",
            "/etc/passwd",
            "data/a\\..\\..\\b",
            "x/casefile.db",
            "config/other.toml",
            "data/",
            "data/a\0b",
        ] {
            assert_eq!(destination(hostile), None, "{hostile:?}");
        }
    }
}
