-- dispatch coordinator schema, version 12 (SQLite's 0012_cli_trouble.sql): what a worker's CLI
-- said when its task ended, and when a usage limit resets.
ALTER TABLE tasks ADD COLUMN trouble TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN limit_until_ms BIGINT NOT NULL DEFAULT 0;
