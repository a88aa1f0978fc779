-- dispatch coordinator schema, version 13 (SQLite's 0013_plan_history.sql): the bytes of plan
-- history kept for a task, bounded like its output.
ALTER TABLE tasks ADD COLUMN plan_bytes BIGINT NOT NULL DEFAULT 0;
