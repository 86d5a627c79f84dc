-- A claim is a short lease the agent confirms (issue 9 item 11): the long-poll answer
-- that hands an action out can be lost on the way, so an action claimed but never
-- accepted is offered again once its lease has ended. `offers` counts the hand-outs.
-- Actions claimed before this migration have no lease and count as accepted.
ALTER TABLE machine_actions ADD COLUMN lease_expires_at INTEGER;
ALTER TABLE machine_actions ADD COLUMN accepted_at INTEGER;
ALTER TABLE machine_actions ADD COLUMN offers INTEGER NOT NULL DEFAULT 0;
