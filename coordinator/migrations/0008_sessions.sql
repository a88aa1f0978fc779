-- dispatch coordinator schema, version 8: node sessions with epochs (a task's events count
-- only from the session it belongs to), stored logs capped per task, event history stored as
-- changes (converted from the old bodies in code, see store/sqlite/legacy.rs), commands named
-- by kind, and idempotent requests.
ALTER TABLE tasks ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN log_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN live INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN session_addr TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN session_started_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN kind TEXT NOT NULL DEFAULT '';
CREATE TABLE requests (
    id         TEXT PRIMARY KEY NOT NULL,
    task_id    TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX requests_age ON requests (created_ms);
CREATE INDEX questions_unanswered ON questions (task_id, seq) WHERE answer IS NULL;
CREATE INDEX tasks_ended ON tasks (ended_ms) WHERE ended_ms > 0;
CREATE INDEX commands_acked ON commands (acked_ms) WHERE acked_ms IS NOT NULL;
