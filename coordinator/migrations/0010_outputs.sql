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
-- What a worktree or workspace task changed, once it ended (JSON: branch, base, head,
-- counts, delivery, bundle size and how much of it is stored; '' for none), and how its branch
-- comes home ('' for the node's default).
ALTER TABLE tasks ADD COLUMN changes TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN deliver TEXT NOT NULL DEFAULT '';
CREATE TABLE task_diffs (
    task_id TEXT PRIMARY KEY NOT NULL REFERENCES tasks (id),
    diff    TEXT NOT NULL
) WITHOUT ROWID;
-- The git bundle of a task's branch, in the chunks its node sent.
CREATE TABLE task_bundles (
    task_id TEXT NOT NULL REFERENCES tasks (id),
    offset  INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (task_id, offset)
) WITHOUT ROWID;
