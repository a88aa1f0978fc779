-- dispatch coordinator schema, version 13: the bytes of plan history (stored edits of plan.md)
-- kept for a task, bounded like its output.
ALTER TABLE tasks ADD COLUMN plan_bytes INTEGER NOT NULL DEFAULT 0;
