-- Planner statistics for a database that has not been analysed yet. Without them SQLite
-- may walk the newest-first index of a whole tenant to find one machine's actions. The
-- figures only describe the shape (a tenant holds many actions, a machine few, a status
-- many); the hourly `PRAGMA optimize` replaces them with measured ones once the data grew.
ANALYZE;
DELETE FROM sqlite_stat1 WHERE tbl IN ('machine_actions', 'machines');
INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES
    ('machine_actions', 'actions_by_tenant_created', '1000000 100000 1 1'),
    ('machine_actions', 'actions_by_tenant_machine', '1000000 100000 100 1'),
    ('machine_actions', 'actions_by_tenant_status', '1000000 100000 30000 1'),
    ('machine_actions', 'actions_by_tenant_type', '1000000 100000 100000 1'),
    ('machine_actions', 'actions_by_tenant_requestor', '1000000 100000 1000 1'),
    ('machine_actions', 'actions_by_machine_status', '1000000 100 50 1'),
    ('machine_actions', 'actions_by_status_updated', '1000000 200000 1'),
    ('machine_actions', 'one_live_action_per_machine_and_type', '1000 1 1'),
    ('machine_actions', 'actions_cancel_requested', '10 1'),
    ('machine_actions', 'actions_pending_created', '1000 1'),
    ('machines', 'machines_by_tenant_name', '100000 10000 1'),
    ('machines', 'machines_by_tenant_seen', '100000 10000 1');
