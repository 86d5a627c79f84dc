//! Package storage behind `object_store`: a local directory by default, or an
//! S3-compatible bucket (`[blobs] url = "s3://bucket/prefix"`).
//!
//! An upload is first received into a staging file through a hash and a byte count, so it
//! can be checked whole (size, SHA-256, then every file against the signed manifest)
//! before anything is published; only a package that passed is published: into the local
//! directory by a rename (no second copy of the bytes), into any other store as a
//! multipart upload. Either way a half-written package is never visible under its key.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::signer::{SignedUrlOptions, Signer};
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::config::{BlobLocation, BlobsConfig};

/// Parts in flight per upload: bounds memory to a few multipart chunks.
const MAX_PARTS_IN_FLIGHT: usize = 2;
/// Bytes read from a staged file per part (S3's smallest part size).
const PART: usize = 5 << 20;
/// S3 refuses a multipart upload of more parts than this.
const MAX_PARTS: u64 = 10_000;

/// The part size for a package of `size` bytes: S3's smallest, or larger where 10,000
/// parts of it would not hold the package (the default `max_bytes` is 64 GiB), rounded
/// up to whole MiB.
pub fn part_size(size: u64) -> usize {
    let needed = size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
    usize::try_from(needed).unwrap_or(usize::MAX).max(PART)
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the package is larger than the {limit} bytes this server accepts")]
    TooLarge { limit: u64 },
    #[error("the package has {actual} bytes, {expected} were announced")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("the package's SHA-256 is {actual}, {expected} was announced")]
    HashMismatch { expected: String, actual: String },
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    #[error("package storage failed: {0}")]
    Storage(#[from] object_store::Error),
    #[error("staging the upload failed: {0}")]
    Staging(#[from] std::io::Error),
}

/// An upload received whole and matching its announced size and SHA-256, not yet
/// published. Dropping it removes the staging file.
pub struct Staged {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// The same store when it is a local directory, and that directory: publishing
    /// renames into it.
    local: Option<(Arc<LocalFileSystem>, PathBuf)>,
    /// The same store when it is a bucket: presigns download URLs.
    bucket: Option<Arc<AmazonS3>>,
    /// Prepended to every key in a bucket (empty, or ending in `/`).
    prefix: String,
    staging: PathBuf,
    /// When the bucket last took a probe object: `/readyz` is asked every second or so by
    /// each load balancer, and a PUT and a DELETE per ask would be a steady, billed load.
    bucket_probed: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// Held while the viewer copies a bucket's package to local disk (`readable`).
    view_fetch: Arc<tokio::sync::Mutex<()>>,
}

/// Copies of bucket packages the viewer keeps in the staging directory.
const VIEW_COPIES: usize = 4;

/// How long a bucket that took a probe object counts as writable for `/readyz`.
const BUCKET_PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

impl Blobs {
    /// The package store `config` names (see [`BlobsConfig::location`]), uploads staged
    /// in `staging`.
    pub fn open(
        config: &BlobsConfig,
        data_dir: &std::path::Path,
        staging: &std::path::Path,
    ) -> Result<Self, BlobsError> {
        match config.location(data_dir).map_err(BlobsError::Config)? {
            BlobLocation::Dir(dir) => Ok(Self::local(&dir, staging)?),
            BlobLocation::S3 { bucket, prefix } => Ok(Self::s3(config, &bucket, &prefix, staging)?),
        }
    }

    /// Packages in `bucket` below `prefix`; credentials and anything `[blobs]` does not
    /// set from the `AWS_*` environment.
    fn s3(
        config: &BlobsConfig,
        bucket: &str,
        prefix: &str,
        staging: &std::path::Path,
    ) -> Result<Self, object_store::Error> {
        std::fs::create_dir_all(staging)
            .map_err(|e| object_store::Error::Generic { store: "staging", source: Box::new(e) })?;
        let mut builder = match &config.aws_env {
            None => AmazonS3Builder::from_env(),
            // What `from_env` does, from the given variables.
            Some(vars) => {
                vars.iter().filter(|(k, _)| k.starts_with("AWS_")).fold(AmazonS3Builder::new(), |b, (k, v)| {
                    match k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                        Ok(key) => b.with_config(key, v),
                        Err(_) => b,
                    }
                })
            }
        };
        builder = builder.with_bucket_name(bucket);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        // Set either way: `AWS_ALLOW_HTTP` must not open plain HTTP behind the check of
        // `blobs.allow_http` (loopback endpoints only).
        builder = builder.with_allow_http(config.allow_http);
        let bucket = Arc::new(builder.build()?);
        Ok(Self {
            store: bucket.clone(),
            local: None,
            bucket: Some(bucket),
            prefix: prefix.to_owned(),
            staging: staging.to_owned(),
            bucket_probed: Arc::default(),
            view_fetch: Arc::default(),
        })
    }

    /// Whether packages live in a bucket (not in a local directory).
    pub fn is_bucket(&self) -> bool {
        self.bucket.is_some()
    }

    /// Where `key` is in the store.
    fn location(&self, key: &str) -> Path {
        Path::from(format!("{}{key}", self.prefix))
    }

    /// A URL that fetches `key` straight from the bucket for `ttl`, answering with
    /// `file_name` as the attachment's name; `None` when packages are not in a bucket.
    pub async fn presigned_get(
        &self,
        key: &str,
        ttl: std::time::Duration,
        file_name: &str,
    ) -> Result<Option<url::Url>, object_store::Error> {
        let Some(bucket) = &self.bucket else { return Ok(None) };
        // A URL to a missing object would be audited as a download that never happened.
        self.store.head(&self.location(key)).await?;
        let options = SignedUrlOptions::new().with_query([
            ("response-content-type", "application/zip".to_owned()),
            ("response-content-disposition", format!("attachment; filename=\"{file_name}\"")),
        ]);
        let url = bucket.signed_url_opts(axum::http::Method::GET, &self.location(key), ttl, &options).await?;
        Ok(Some(url))
    }

    /// Packages in `dir`, uploads staged in `staging` (local to this server, private).
    pub fn local(dir: &std::path::Path, staging: &std::path::Path) -> Result<Self, object_store::Error> {
        let io = |e: std::io::Error| object_store::Error::Generic { store: "local", source: Box::new(e) };
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::create_dir_all(staging).map_err(io)?;
        // Packages are evidence: a stored one survives a power cut.
        let local = Arc::new(LocalFileSystem::new_with_prefix(dir)?.with_fsync(true));
        Ok(Self {
            store: local.clone(),
            local: Some((local, dir.to_owned())),
            bucket: None,
            prefix: String::new(),
            staging: staging.to_owned(),
            bucket_probed: Arc::default(),
            view_fetch: Arc::default(),
        })
    }

    /// Where one upload attempt of a tenant's package is stored. Each attempt has its own
    /// key, so a losing concurrent attempt can never overwrite or delete the kept one.
    pub fn package_key(tenant: &str, action_id: Uuid) -> String {
        format!("{tenant}/{action_id}/{}.zip", Uuid::new_v4())
    }

    /// Removes what interrupted uploads left: staging files, and the temporaries of a
    /// publish cut short in the local package directory (issue 9 item 13). Only for a
    /// server about to serve: the CLI opens the same data directory while a server runs.
    /// Returns how many files went.
    pub fn clear_staging(&self) -> usize {
        let mut removed = 0;
        if let Ok(entries) = std::fs::read_dir(&self.staging) {
            for entry in entries.flatten() {
                removed += usize::from(std::fs::remove_file(entry.path()).is_ok());
            }
        }
        if let Some((_, root)) = &self.local {
            removed += remove_publish_temporaries(root);
        }
        if removed > 0 {
            tracing::info!(removed, "removed leftovers of interrupted uploads");
        }
        removed
    }

    /// Receives `body` into a staging file, keeping it only if it has exactly
    /// `expected_size` bytes with SHA-256 `expected_sha256`.
    pub async fn stage<E: std::fmt::Display>(
        &self,
        body: impl Stream<Item = Result<Bytes, E>>,
        expected_size: u64,
        expected_sha256: &str,
        limit: u64,
    ) -> Result<Staged, IngestError> {
        if expected_size > limit {
            return Err(IngestError::TooLarge { limit });
        }
        let path = self.staging.join(format!("{}.zip", Uuid::new_v4()));
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options.open(&path).await?;
        // From here on, dropping `staged` removes the file, whatever happens.
        let mut staged = Staged { path, size: 0, sha256: String::new() };
        let mut hasher = Sha256::new();
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| IngestError::Interrupted(e.to_string()))?;
            staged.size += chunk.len() as u64;
            if staged.size > expected_size {
                return Err(IngestError::SizeMismatch { expected: expected_size, actual: staged.size });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.sync_all().await?;
        staged.sha256 = hex::encode(hasher.finalize());
        if staged.size != expected_size {
            return Err(IngestError::SizeMismatch { expected: expected_size, actual: staged.size });
        }
        if !staged.sha256.eq_ignore_ascii_case(expected_sha256) {
            return Err(IngestError::HashMismatch {
                expected: expected_sha256.to_owned(),
                actual: staged.sha256.clone(),
            });
        }
        Ok(staged)
    }

    /// Publishes a checked upload under `key`, all or nothing: a rename into the local
    /// directory; else one `PUT` for a package of one part, or a multipart upload with at
    /// most [`MAX_PARTS_IN_FLIGHT`] parts in memory, aborted if it fails or is dropped
    /// (no parts left behind, nothing under the key).
    pub async fn publish(&self, staged: Staged, key: &str) -> Result<(), IngestError> {
        Path::parse(key).map_err(object_store::Error::from)?;
        let location = self.location(key);
        if let Some((local, _)) = &self.local {
            let target = local.path_to_filesystem(&location)?;
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            match tokio::fs::rename(&staged.path, &target).await {
                Ok(()) => {
                    // The new name is durable once its directory is.
                    if let Some(parent) = target.parent() {
                        tokio::fs::File::open(parent).await?.sync_all().await?;
                    }
                    return Ok(());
                }
                // Staging on another file system: copy instead.
                Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut file = tokio::fs::File::open(&staged.path).await?;
        let part = part_size(staged.size);
        if staged.size <= PART as u64 {
            let mut bytes = Vec::with_capacity(staged.size as usize);
            (&mut file).take(PART as u64).read_to_end(&mut bytes).await?;
            self.store.put(&location, Bytes::from(bytes).into()).await?;
            return Ok(());
        }
        let mut upload =
            AbortOnDrop(Some(WriteMultipart::new_with_chunk_size(self.store.put_multipart(&location).await?, part)));
        let writer = upload.0.as_mut().expect("set above");
        let copied: Result<(), IngestError> = async {
            loop {
                let mut bytes = Vec::with_capacity(part);
                (&mut file).take(part as u64).read_to_end(&mut bytes).await?;
                if bytes.is_empty() {
                    return Ok(());
                }
                writer.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await?;
                writer.put(Bytes::from(bytes));
            }
        }
        .await;
        let writer = upload.0.take().expect("set above");
        if let Err(e) = copied {
            if let Err(abort) = writer.abort().await {
                tracing::error!(%location, "aborting a failed multipart upload failed; its parts stay until the bucket's lifecycle rule removes them: {abort}");
            }
            return Err(e);
        }
        // `finish` aborts the upload itself when a part or the completion fails. On a task of
        // its own, so a caller dropped while it runs cannot leave the upload pending.
        tokio::spawn(writer.finish()).await.map_err(|e| IngestError::Interrupted(e.to_string()))??;
        Ok(())
    }

    /// Proves uploads can be received and packages stored now (`/readyz`): a small file
    /// is written and removed in the staging directory and in the package store.
    pub async fn probe(&self) -> std::io::Result<()> {
        async fn probe_dir(dir: &std::path::Path) -> std::io::Result<()> {
            let path = dir.join(format!(".readyz-{}", Uuid::new_v4()));
            let written = tokio::fs::write(&path, b"probe").await;
            let removed = tokio::fs::remove_file(&path).await;
            written.and(removed)
        }
        probe_dir(&self.staging).await?;
        match &self.local {
            Some((_, root)) => probe_dir(root).await,
            None => {
                let fresh = |at: &Option<std::time::Instant>| at.is_some_and(|at| at.elapsed() < BUCKET_PROBE_EVERY);
                if fresh(&self.bucket_probed.lock().unwrap_or_else(|e| e.into_inner())) {
                    return Ok(());
                }
                let location = self.location(&format!("readyz/{}", Uuid::new_v4()));
                let put = self.store.put(&location, Bytes::from_static(b"probe").into()).await;
                let deleted = self.store.delete(&location).await;
                put.and(deleted).map_err(std::io::Error::other)?;
                // Only a success is remembered: a failing bucket is asked again every time.
                *self.bucket_probed.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
                Ok(())
            }
        }
    }

    /// The stored object's size and its bytes as a stream.
    pub async fn get(
        &self,
        key: &str,
    ) -> Result<(u64, BoxStream<'static, object_store::Result<Bytes>>), object_store::Error> {
        let result = self.store.get(&self.location(key)).await?;
        Ok((result.meta.size, result.into_stream()))
    }

    /// A local file of the stored package `key` for reading in place (the viewer, which
    /// needs to seek): the file itself in a local directory; from a bucket, a copy in the
    /// staging directory, fetched once per SHA-256 and checked against it (the last
    /// [`VIEW_COPIES`] copies are kept).
    pub async fn readable(&self, key: &str, sha256: &str) -> Result<std::path::PathBuf, std::io::Error> {
        if let Some((_, dir)) = &self.local {
            return Ok(dir.join(key));
        }
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(std::io::Error::other("the package's SHA-256 is not 64 hex digits"));
        }
        let copy = self.staging.join(format!("view-{sha256}.zip"));
        // One fetch at a time: viewers of the same package wait for its copy instead of
        // each fetching one, and the staging disk (uploads' too) holds one partial copy.
        let _fetching = self.view_fetch.lock().await;
        if let Ok(file) = std::fs::File::options().append(true).open(&copy) {
            // Kept fresh: the trim spares recently used copies.
            let _ = file.set_modified(std::time::SystemTime::now());
            return Ok(copy);
        }
        let (_, mut stream) = self.get(key).await.map_err(std::io::Error::other)?;
        let partial = self.staging.join(format!("view-{sha256}.{}.part", Uuid::new_v4()));
        let written = async {
            use futures::StreamExt as _;
            use sha2::Digest as _;
            use tokio::io::AsyncWriteExt as _;
            let mut file = tokio::fs::File::create(&partial).await?;
            let mut hash = sha2::Sha256::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(std::io::Error::other)?;
                hash.update(&chunk);
                file.write_all(&chunk).await?;
            }
            file.flush().await?;
            if hex::encode(hash.finalize()) != sha256 {
                return Err(std::io::Error::other("the stored package does not match its recorded SHA-256"));
            }
            tokio::fs::rename(&partial, &copy).await
        }
        .await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        self.trim_view_copies();
        Ok(copy)
    }

    /// Keeps the newest [`VIEW_COPIES`] viewer copies of bucket packages.
    fn trim_view_copies(&self) {
        let Ok(entries) = std::fs::read_dir(&self.staging) else { return };
        let mut copies: Vec<(std::time::SystemTime, std::path::PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("view-") && n.ends_with(".zip")))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        copies.sort_by_key(|(used, _)| std::cmp::Reverse(*used));
        // Beyond the newest few, and unused for a while: a page may be reading it now.
        let idle = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
        for (_, old) in copies.into_iter().skip(VIEW_COPIES).filter(|(used, _)| *used < idle) {
            let _ = std::fs::remove_file(old);
        }
    }

    /// Where the chunks of `tenant`'s action's resumable upload are kept (issue 13).
    pub fn upload_prefix(tenant: &str, action_id: Uuid) -> String {
        format!("uploads/{tenant}/{action_id}/")
    }

    /// A key for one attempt at the chunk at `offset`: attempts racing at one offset never
    /// share a key, so the loser's removal cannot touch the winner's bytes.
    pub fn chunk_key(tenant: &str, action_id: Uuid, offset: u64) -> String {
        format!("{}{offset:020}-{}.part", Self::upload_prefix(tenant, action_id), Uuid::new_v4())
    }

    /// Stores one chunk of a resumable upload under `key`: received through a hash into
    /// the staging directory, kept only when it has exactly `size` bytes with SHA-256
    /// `sha256`, then published as a package is (all or nothing under its key).
    pub async fn put_chunk<E: std::fmt::Display>(
        &self,
        body: impl Stream<Item = Result<Bytes, E>>,
        size: u64,
        sha256: &str,
        key: &str,
    ) -> Result<(), IngestError> {
        let staged = self.stage(body, size, sha256, size).await?;
        self.publish(staged, key).await
    }

    /// The stored objects `keys`, one after the other, as one stream (a resumable upload's
    /// chunks read back in order); each is opened only when the one before it ended.
    pub fn concatenated(&self, keys: Vec<String>) -> impl Stream<Item = Result<Bytes, object_store::Error>> + use<> {
        let this = self.clone();
        futures::stream::iter(keys)
            .then(move |key| {
                let this = this.clone();
                async move { this.store.get(&this.location(&key)).await.map(|r| r.into_stream()) }
            })
            .map(|opened| match opened {
                Ok(stream) => stream,
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten()
    }

    /// Deletes every object below `prefix` (an ended upload's chunks, including those of
    /// attempts that lost or were cut short after storing). Returns how many went.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, object_store::Error> {
        let root = self.location(prefix);
        let mut listed = self.store.list(Some(&root));
        let mut removed = 0;
        while let Some(meta) = listed.next().await {
            let meta = match meta {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(e),
            };
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    pub async fn delete(&self, key: &str) -> Result<(), object_store::Error> {
        match self.store.delete(&self.location(key)).await {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            other => other,
        }
    }
}

/// Why package storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BlobsError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

/// A multipart upload that is aborted if it is dropped before it finished (a publish
/// whose task was cancelled): its parts are not left in the bucket.
struct AbortOnDrop(Option<WriteMultipart>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(upload) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(e) = upload.abort().await {
                    tracing::error!("aborting a cancelled multipart upload failed: {e}");
                }
            });
        }
    }
}

/// Deletes the local store's staged parts (`<name>#<digits>`, as `object_store` names them
/// while it writes) below `dir`. Package keys never contain `#`.
fn remove_publish_temporaries(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => removed += remove_publish_temporaries(&path),
            Ok(t) if t.is_file() => {
                let name = entry.file_name();
                let temporary = name
                    .to_str()
                    .and_then(|n| n.rsplit_once('#'))
                    .is_some_and(|(_, suffix)| !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()));
                if temporary && std::fs::remove_file(&path).is_ok() {
                    tracing::info!(path = %path.display(), "removed the temporary of an interrupted publish");
                    removed += 1;
                }
            }
            _ => {}
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> (tempfile::TempDir, Blobs) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::local(&dir.path().join("packages"), &dir.path().join("staging")).unwrap();
        (dir, blobs)
    }

    async fn staged(blobs: &Blobs, bytes: &'static [u8]) -> Staged {
        let sha = hex::encode(Sha256::digest(bytes));
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(bytes))]);
        blobs.stage(body, bytes.len() as u64, &sha, 1 << 20).await.unwrap()
    }

    /// Issue 9 item 13: a kill during a publish leaves `<key>#<n>` in the package store;
    /// the next start removes it and nothing else.
    #[tokio::test]
    async fn leftovers_of_an_interrupted_publish_are_swept_at_start() {
        let (dir, blobs) = blobs();
        let kept = Blobs::package_key("default", Uuid::new_v4());
        blobs.publish(staged(&blobs, b"kept").await, &kept).await.unwrap();
        let packages = dir.path().join("packages");
        let action = packages.join("default").join(Uuid::new_v4().to_string());
        std::fs::create_dir_all(&action).unwrap();
        std::fs::write(action.join(format!("{}.zip#1", Uuid::new_v4())), b"half a package").unwrap();
        std::fs::write(action.join(format!("{}.zip#17", Uuid::new_v4())), b"another").unwrap();
        std::fs::write(dir.path().join("staging").join("x.zip"), b"staged").unwrap();
        assert_eq!(blobs.clear_staging(), 3);
        assert_eq!(std::fs::read_dir(&action).unwrap().count(), 0);
        assert_eq!(std::fs::read(packages.join(&kept)).unwrap(), b"kept");
        assert_eq!(blobs.clear_staging(), 0);
    }

    /// S3 allows 10,000 parts: parts grow past 5 MiB only where that would not hold the
    /// largest package, in whole MiB.
    #[test]
    fn parts_are_five_mib_until_ten_thousand_of_them_would_not_hold_the_package() {
        assert_eq!(part_size(0), PART);
        assert_eq!(part_size(12 << 20), PART);
        assert_eq!(part_size(MAX_PARTS * PART as u64), PART);
        assert_eq!(part_size(MAX_PARTS * PART as u64 + 1), 6 << 20);
        let max = crate::config::PackageConfig::default().max_bytes;
        for size in [max, 5 << 40, u64::from(u32::MAX) * 3] {
            let part = part_size(size) as u64;
            assert!(size.div_ceil(part) <= MAX_PARTS, "{size}: {part}");
            assert_eq!(part % (1 << 20), 0);
        }
    }

    /// Issue 9 item 13: the local store publishes by renaming the staged file, so a package
    /// never needs twice its size on disk.
    #[tokio::test]
    async fn a_local_publish_renames_the_staged_file() {
        let (dir, blobs) = blobs();
        let staged = staged(&blobs, b"package bytes").await;
        let staged_path = staged.path.clone();
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&staged_path).unwrap());
        let key = Blobs::package_key("default", Uuid::new_v4());
        blobs.publish(staged, &key).await.unwrap();
        let stored = dir.path().join("packages").join(&key);
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&stored).unwrap()), inode, "same file");
        assert!(!staged_path.exists());
        let (size, _) = blobs.get(&key).await.unwrap();
        assert_eq!(size, 13);
    }
}
