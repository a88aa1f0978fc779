-- dispatch coordinator schema, version 16: a token may expire (`dispatch token create
-- --expires 30d`; 0: never), and says when it was last used (written in batches, not per call).
ALTER TABLE tokens ADD COLUMN expires_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN last_used_ms INTEGER NOT NULL DEFAULT 0;
