-- An import whose zip the tenant already holds is refused as a replay: find it by hash.
CREATE INDEX packages_live_by_sha256 ON packages (tenant_id, sha256) WHERE deleted_at IS NULL;
