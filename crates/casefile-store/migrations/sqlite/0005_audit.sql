-- The audit trail: one row per state-changing call, token issued, refused authentication,
-- link issued and package download, and per step of a package's chain of custody.
-- Append-only: the database itself refuses to change or remove a row.
CREATE TABLE audit_log (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    at              INTEGER NOT NULL,
    tenant_id       TEXT,
    actor_kind      TEXT NOT NULL,
    actor           TEXT NOT NULL,
    event           TEXT NOT NULL,
    target          TEXT,
    outcome         TEXT NOT NULL,
    http_status     INTEGER,
    source_ip       TEXT,
    correlation_id  TEXT,
    detail          TEXT
);
CREATE INDEX audit_by_tenant_time ON audit_log (tenant_id, at);
CREATE INDEX audit_by_target ON audit_log (target, seq) WHERE target IS NOT NULL;

CREATE TRIGGER audit_log_is_append_only_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_log_is_append_only_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
