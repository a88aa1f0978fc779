-- dispatch coordinator schema, version 9: who may do what. Tokens (only a hash of each secret
-- is stored), the owner of every task, and an audit record of every change.
ALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL DEFAULT '';
-- The nodes a task may run on, from its submitter's token (JSON patterns; empty: any).
ALTER TABLE tasks ADD COLUMN allowed_nodes TEXT NOT NULL DEFAULT '[]';
CREATE TABLE tokens (
    id           TEXT PRIMARY KEY NOT NULL,
    kind         TEXT NOT NULL,            -- 'user' or 'node'
    name         TEXT NOT NULL,            -- the user, or the node name (a trailing * matches a prefix)
    role         TEXT NOT NULL,            -- admin, member, viewer; node for node tokens
    hash         BLOB NOT NULL,            -- SHA-256 of the secret
    nodes        TEXT NOT NULL DEFAULT '[]', -- a member's allowed nodes (JSON; empty: any)
    created_ms   INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    revoked_ms   INTEGER,
    -- Quotas of the token (0: the coordinator's default).
    submits_per_minute INTEGER NOT NULL DEFAULT 0,
    max_active   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
-- A submit counts its owner's active tasks (the active-task quota).
CREATE INDEX tasks_owner_state ON tasks (owner, state);
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    who     TEXT NOT NULL,
    action  TEXT NOT NULL,
    task_id TEXT NOT NULL DEFAULT '',
    detail  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_task ON audit (task_id, id);
-- The public key that signed a task ("" when unsigned).
ALTER TABLE tasks ADD COLUMN signer TEXT NOT NULL DEFAULT '';
-- A signed task's spec (JSON, exactly as signed) and signature, forwarded to its node.
ALTER TABLE task_texts ADD COLUMN signed_spec TEXT NOT NULL DEFAULT '';
ALTER TABLE task_texts ADD COLUMN signature BLOB NOT NULL DEFAULT x'';
