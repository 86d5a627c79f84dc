//! The uploads area: resumable package uploads (issue 13, the tus protocol). An upload's
//! state lives here, not in a server's memory, so any replica (or a restarted server)
//! continues it; its chunks live in the package blob store.

use async_trait::async_trait;
use casefile_proto::time::Timestamp;
use uuid::Uuid;

use crate::*;

/// One action's upload: its announced length and SHA-256, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub action_id: Uuid,
    pub tenant_id: TenantId,
    pub machine_id: String,
    /// The whole package's size in bytes.
    pub length: u64,
    /// The whole package's SHA-256 (lower-case hex).
    pub sha256: String,
    /// Bytes received and stored so far: the next chunk starts here.
    pub offset: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A received chunk: `length` bytes at `offset`, stored under `blob_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadChunk {
    pub offset: u64,
    pub length: u64,
    pub blob_key: String,
}

/// Resumable uploads.
///
/// Scope: the agent's calls take the authenticated machine's id (an upload of another
/// machine's action is `None`, and never changes); `upload_progress` takes the tenant;
/// `ended_uploads` and `delete_upload` are for the server itself (the sweeper, and the
/// agent's own finished or ended action).
#[async_trait]
pub trait UploadStore: Send + Sync + 'static {
    /// Creates `upload` (offset 0) unless its action has one already; returns the one that
    /// is stored (the existing one, whatever its length and hash: the caller compares).
    async fn create_upload(&self, upload: &UploadRecord) -> Result<UploadRecord>;
    /// The upload of `machine_id`'s action.
    async fn upload(&self, machine_id: &str, action_id: Uuid) -> Result<Option<UploadRecord>>;
    /// Records `chunk` and moves the offset from `chunk.offset` to its end, in one
    /// transaction, only if the offset is still `chunk.offset` and the end is within the
    /// length. `false`: it was not (another chunk landed first), nothing changed.
    async fn append_upload_chunk(
        &self,
        machine_id: &str,
        action_id: Uuid,
        chunk: &UploadChunk,
        at: Timestamp,
    ) -> Result<bool>;
    /// The upload's chunks, by offset.
    async fn upload_chunks(&self, action_id: Uuid) -> Result<Vec<UploadChunk>>;
    /// Forgets the upload and its chunks; `false`: there was none.
    async fn delete_upload(&self, action_id: Uuid) -> Result<bool>;
    /// How far the tenant's action's upload got: `(offset, length)` (the action's progress).
    async fn upload_progress(&self, tenant: &TenantId, action_id: Uuid) -> Result<Option<(u64, u64)>>;
    /// Uploads whose action ended (succeeded, failed, cancelled, timed out), at most `limit`, across tenants (the sweeper removes them).
    async fn ended_uploads(&self, limit: u32) -> Result<Vec<UploadRecord>>;
}
