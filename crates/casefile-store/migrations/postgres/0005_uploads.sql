-- Issue 13: resumable package uploads (tus). One upload per action; its offset only
-- moves forward, by a compare-and-set that also records the chunk that moved it.
CREATE TABLE uploads (
    action_id      uuid PRIMARY KEY REFERENCES machine_actions (id),
    tenant_id      text NOT NULL,
    machine_id     text NOT NULL,
    length         bigint NOT NULL,
    sha256         text NOT NULL,
    upload_offset  bigint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

-- The chunks received, in the package blob store under `blob_key`.
CREATE TABLE upload_chunks (
    action_id     uuid NOT NULL REFERENCES uploads (action_id) ON DELETE CASCADE,
    chunk_offset  bigint NOT NULL,
    length        bigint NOT NULL,
    blob_key      text NOT NULL,
    PRIMARY KEY (action_id, chunk_offset)
);
