-- dispatch coordinator schema, version 16 (SQLite's 0016_token_lifecycle.sql): a token may
-- expire (0: never), and says when it was last used (written in batches, not per call).
ALTER TABLE tokens ADD COLUMN expires_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN last_used_ms BIGINT NOT NULL DEFAULT 0;
