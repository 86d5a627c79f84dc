-- Coordination between replicas (issue 11, "Replicas").

-- Rate-limit windows shared by every replica: one row per caller key and window length,
-- counted by one INSERT ... ON CONFLICT DO UPDATE, so racing replicas never lose a call.
-- UNLOGGED: the counters are scratch data rewritten on every API call; they need no WAL
-- and no standby copy. After a database crash they start empty (quotas restart), which
-- is the only thing lost. Windows that ended are deleted by the lifecycle leader.
CREATE UNLOGGED TABLE rate_limit_windows (
    key TEXT NOT NULL,
    length_ms BIGINT NOT NULL,
    -- Microseconds since the Unix epoch, as the rest of the schema counts time.
    ends_us BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (key, length_ms)
);

CREATE INDEX rate_limit_windows_by_end ON rate_limit_windows (ends_us);
