-- Cancellation of running collections: the request is recorded first; the action ends
-- `Cancelled` when the agent confirms that it stopped.
ALTER TABLE machine_actions ADD COLUMN cancel_requested_at INTEGER;

-- OData filters run in the database: index what clients filter on, newest first.
DROP INDEX actions_by_tenant_created;
CREATE INDEX actions_by_tenant_created ON machine_actions (tenant_id, created_at DESC, id DESC);
CREATE INDEX actions_by_tenant_machine ON machine_actions (tenant_id, machine_id, created_at DESC);
CREATE INDEX actions_by_tenant_status ON machine_actions (tenant_id, status, created_at DESC);
CREATE INDEX actions_by_tenant_type ON machine_actions (tenant_id, type, created_at DESC);
CREATE INDEX actions_by_tenant_requestor ON machine_actions (tenant_id, requestor COLLATE NOCASE, created_at DESC);
CREATE INDEX actions_cancel_requested ON machine_actions (machine_id) WHERE cancel_requested_at IS NOT NULL AND status = 'InProgress';
CREATE INDEX actions_pending_created ON machine_actions (created_at) WHERE status = 'Pending';

CREATE INDEX packages_live_by_stored ON packages (stored_at) WHERE deleted_at IS NULL;
