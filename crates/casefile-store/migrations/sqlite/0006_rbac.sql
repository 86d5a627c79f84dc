-- Roles and device groups for delegated users. A machine's device group is stored with it
-- (recomputed when groups, its name or its tags change), so lists filter in the database.
CREATE TABLE rbac_roles (
    tenant_id    TEXT NOT NULL,
    name         TEXT NOT NULL COLLATE NOCASE,
    permissions  TEXT NOT NULL DEFAULT '[]',
    users        TEXT NOT NULL DEFAULT '[]',
    groups       TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE device_groups (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NOT NULL,
    name         TEXT NOT NULL COLLATE NOCASE,
    rank         INTEGER NOT NULL,
    rules        TEXT NOT NULL,
    user_groups  TEXT NOT NULL DEFAULT '[]',
    UNIQUE (tenant_id, name)
);

-- Who sees "Ungrouped devices (default)": that group is no row of its own (it cannot be
-- deleted or ranked), only its user groups are kept; none means every user.
CREATE TABLE ungrouped_access (
    tenant_id    TEXT PRIMARY KEY,
    user_groups  TEXT NOT NULL DEFAULT '[]'
);

ALTER TABLE machines ADD COLUMN rbac_group_id INTEGER;
CREATE INDEX machines_by_tenant_group ON machines (tenant_id, rbac_group_id);
