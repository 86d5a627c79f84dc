-- Issue 13: the collection profile an action runs, and the progress its agent reports
-- (JSON of casefile_proto::action::Progress).
ALTER TABLE machine_actions ADD COLUMN profile text NOT NULL DEFAULT 'standard';
ALTER TABLE machine_actions ADD COLUMN progress jsonb;
