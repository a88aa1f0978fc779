-- dispatch coordinator schema, version 2: worker runs per task (a blocked task that gets an
-- answer starts a new worker).
ALTER TABLE tasks ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
CREATE INDEX questions_open ON questions (answered_ms, asked_ms);
