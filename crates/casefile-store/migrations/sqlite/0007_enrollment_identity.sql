-- Issue 9 items 1 and 2: enrollment tokens count their uses (single-use by default; tokens made
-- before this migration keep one use), a machine's identity can be reset by an administrator,
-- and re-enrollment proves the registered key by signing a single-use challenge.
ALTER TABLE enrollment_tokens ADD COLUMN uses_allowed INTEGER NOT NULL DEFAULT 1;
ALTER TABLE enrollment_tokens ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE enrollment_tokens ADD COLUMN last_used_at INTEGER;
CREATE INDEX enrollment_tokens_by_tenant ON enrollment_tokens (tenant_id, created_at);

-- Set by `casefile machine reset-identity`: the old key and credential are void and the next
-- enrollment by token creates the identity afresh (clearing this).
ALTER TABLE machines ADD COLUMN identity_reset_at INTEGER;

-- Challenges for re-enrollment: at most one outstanding per machine, consumed by the
-- enrollment that answers it, useless after `expires_at`.
CREATE TABLE enroll_challenges (
    machine_id   TEXT PRIMARY KEY REFERENCES machines (id),
    nonce        TEXT NOT NULL UNIQUE,
    expires_at   INTEGER NOT NULL
);
