-- dispatch coordinator schema, version 22: one-time answer links. `secrets` holds the key
-- that signs them (made at the first start, shared by replicas); `answer_links` the links
-- handed out — bound to one question of one task, until they expire — and when each was used
-- (a link answers once).
CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE answer_links (
    id         TEXT PRIMARY KEY,
    task_id    TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    used_ms    BIGINT
);
CREATE INDEX answer_links_expiry ON answer_links (expires_ms);
