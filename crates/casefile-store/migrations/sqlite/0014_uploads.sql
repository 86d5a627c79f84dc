-- Issue 13: resumable package uploads (tus). One upload per action; its offset only
-- moves forward, by a compare-and-set that also records the chunk that moved it.
CREATE TABLE uploads (
    action_id      TEXT PRIMARY KEY REFERENCES machine_actions (id),
    tenant_id      TEXT NOT NULL,
    machine_id     TEXT NOT NULL,
    length         INTEGER NOT NULL,
    sha256         TEXT NOT NULL,
    upload_offset  INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

-- The chunks received, in the package blob store under `blob_key`.
CREATE TABLE upload_chunks (
    action_id     TEXT NOT NULL REFERENCES uploads (action_id) ON DELETE CASCADE,
    chunk_offset  INTEGER NOT NULL,
    length        INTEGER NOT NULL,
    blob_key      TEXT NOT NULL,
    PRIMARY KEY (action_id, chunk_offset)
);
