-- Playbooks tag an action with their case number (`ExternalId`) and find it again with
-- `$filter=externalId eq '…'`: one tenant's tagged actions, newest first. Untagged
-- actions (most of them) stay out of the index.
CREATE INDEX actions_by_tenant_external_id ON machine_actions (tenant_id, external_id, created_at DESC, id DESC)
    WHERE external_id IS NOT NULL;
INSERT INTO sqlite_stat1 (tbl, idx, stat)
    SELECT 'machine_actions', 'actions_by_tenant_external_id', '100000 10000 2 2 1'
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_stat1 WHERE idx = 'actions_by_tenant_external_id');
