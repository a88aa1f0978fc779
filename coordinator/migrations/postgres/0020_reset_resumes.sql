-- dispatch coordinator schema, version 20: a task whose worker hit a usage limit with a known
-- reset waits for it and resumes by itself, once; this counts those resumes.
ALTER TABLE tasks ADD COLUMN reset_resumes BIGINT NOT NULL DEFAULT 0;
