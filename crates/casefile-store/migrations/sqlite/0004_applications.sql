-- Application registrations: the clients of the token endpoint (OAuth2 client
-- credentials), one tenant each. The secret is kept only as an argon2 PHC string;
-- `roles` is a JSON list of application permission names. Names are unique per tenant,
-- compared without letter case, as the admin API and the CLI look them up.
CREATE TABLE applications (
    client_id          TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL,
    name               TEXT NOT NULL COLLATE NOCASE,
    secret_hash        TEXT NOT NULL,
    roles              TEXT NOT NULL DEFAULT '[]',
    created_at         INTEGER NOT NULL,
    secret_rotated_at  INTEGER,
    disabled_at        INTEGER
);
CREATE UNIQUE INDEX applications_by_tenant_name ON applications (tenant_id, name COLLATE NOCASE);
