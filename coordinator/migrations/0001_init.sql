-- dispatch coordinator schema, version 1.
CREATE TABLE tasks (
    id            TEXT PRIMARY KEY NOT NULL,
    state         TEXT NOT NULL,
    title         TEXT NOT NULL,
    prompt        TEXT NOT NULL,
    worker_prompt TEXT NOT NULL,
    plan_md       TEXT NOT NULL,
    node          TEXT NOT NULL DEFAULT '',
    remote        TEXT NOT NULL DEFAULT '',
    backend       TEXT NOT NULL DEFAULT '',
    model         TEXT NOT NULL DEFAULT '',
    workdir       TEXT NOT NULL DEFAULT '',
    after_id      TEXT NOT NULL DEFAULT '',
    priority      INTEGER NOT NULL DEFAULT 0,
    reason        TEXT NOT NULL DEFAULT '',
    exit_code     INTEGER,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL,
    started_ms    INTEGER NOT NULL DEFAULT 0,
    ended_ms      INTEGER NOT NULL DEFAULT 0,
    -- highest agent event seq committed for this task (events are gap free)
    last_seq      INTEGER NOT NULL DEFAULT 0,
    submit_order  INTEGER NOT NULL
);
CREATE INDEX tasks_state ON tasks (state, priority DESC, submit_order);
CREATE INDEX tasks_node ON tasks (node, state);

-- Every event an agent reported, exactly once per (task, seq). Plan snapshots are the
-- events of kind 'plan'; log output the events of kind 'log'.
CREATE TABLE events (
    task_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    at_ms   INTEGER NOT NULL,
    body    BLOB NOT NULL,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
CREATE INDEX events_kind ON events (task_id, kind, seq);

CREATE TABLE nodes (
    name         TEXT PRIMARY KEY NOT NULL,
    labels       TEXT NOT NULL,
    backends     TEXT NOT NULL,
    capacity     INTEGER NOT NULL,
    version      TEXT NOT NULL,
    hostname     TEXT NOT NULL,
    last_seen_ms INTEGER NOT NULL
);

-- Commands to nodes: stored before they are sent, resent until acked.
CREATE TABLE commands (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    node       TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    body       BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    acked_ms   INTEGER
);
CREATE INDEX commands_pending ON commands (node, acked_ms, id);

CREATE TABLE questions (
    task_id     TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    text        TEXT NOT NULL,
    asked_ms    INTEGER NOT NULL,
    answer      TEXT,
    answered_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
