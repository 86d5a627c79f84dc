//! Package storage behind `object_store`: a local directory by default; an
//! S3-compatible bucket slots in as another `ObjectStore`. Uploads stream through a
//! hash and a byte count, and are multipart uploads, so a half-written package is never
//! visible under its key.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Parts in flight per upload: bounds memory to a few multipart chunks.
const MAX_PARTS_IN_FLIGHT: usize = 2;

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
}

#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
}

impl Blobs {
    pub fn local(dir: &std::path::Path) -> Result<Self, object_store::Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| object_store::Error::Generic { store: "local", source: Box::new(e) })?;
        Ok(Self { store: Arc::new(LocalFileSystem::new_with_prefix(dir)?) })
    }

    /// Where one upload attempt of a tenant's package is stored. Each attempt has its own
    /// key, so a losing concurrent attempt can never overwrite or delete the kept one.
    pub fn package_key(tenant: &str, action_id: Uuid) -> String {
        format!("{tenant}/{action_id}/{}.zip", Uuid::new_v4())
    }

    /// Streams `body` into `key`, keeping it only if it has exactly `expected_size`
    /// bytes with SHA-256 `expected_sha256`; otherwise nothing stays stored.
    pub async fn put_verified<E: std::fmt::Display>(
        &self,
        key: &str,
        body: impl Stream<Item = Result<Bytes, E>>,
        expected_size: u64,
        expected_sha256: &str,
        limit: u64,
    ) -> Result<(), IngestError> {
        if expected_size > limit {
            return Err(IngestError::TooLarge { limit });
        }
        let path = Path::from(key);
        let mut upload = WriteMultipart::new(self.store.put_multipart(&path).await?);
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        let mut body = std::pin::pin!(body);
        let outcome: Result<(), IngestError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| IngestError::Interrupted(e.to_string()))?;
                received += chunk.len() as u64;
                if received > expected_size {
                    return Err(IngestError::SizeMismatch { expected: expected_size, actual: received });
                }
                hasher.update(&chunk);
                upload.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await?;
                upload.put(chunk);
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            let _ = upload.abort().await;
            return Err(e);
        }
        let actual = hex::encode(hasher.finalize());
        let mismatch = if received != expected_size {
            Some(IngestError::SizeMismatch { expected: expected_size, actual: received })
        } else if !actual.eq_ignore_ascii_case(expected_sha256) {
            Some(IngestError::HashMismatch { expected: expected_sha256.to_owned(), actual })
        } else {
            None
        };
        if let Some(e) = mismatch {
            let _ = upload.abort().await;
            return Err(e);
        }
        upload.finish().await?;
        Ok(())
    }

    /// The stored object's size and its bytes as a stream.
    pub async fn get(
        &self,
        key: &str,
    ) -> Result<(u64, BoxStream<'static, object_store::Result<Bytes>>), object_store::Error> {
        let result = self.store.get(&Path::from(key)).await?;
        Ok((result.meta.size, result.into_stream()))
    }

    pub async fn delete(&self, key: &str) -> Result<(), object_store::Error> {
        match self.store.delete(&Path::from(key)).await {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            other => other,
        }
    }
}
