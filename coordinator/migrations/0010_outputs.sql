-- dispatch coordinator schema, version 10: what comes home from a task. The part of its
-- output.md the coordinator keeps (the node has the whole file), and its size on the task.
CREATE TABLE task_outputs (
    task_id    TEXT PRIMARY KEY NOT NULL REFERENCES tasks (id),
    body       TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    truncated  INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
ALTER TABLE tasks ADD COLUMN output_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN output_truncated INTEGER NOT NULL DEFAULT 0;
