-- dispatch coordinator schema, version 12: what a worker's CLI said when its task ended. The
-- kind of trouble (auth, usage_limit, rate_limit, overloaded, server, error; '' for none) and,
-- for a usage limit, when it resets (ms since the epoch; 0 when not known).
ALTER TABLE tasks ADD COLUMN trouble TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN limit_until_ms INTEGER NOT NULL DEFAULT 0;
