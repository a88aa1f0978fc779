-- dispatch coordinator schema, version 3: worktree isolation.
ALTER TABLE tasks ADD COLUMN worktree INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN branch TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN cleaned INTEGER NOT NULL DEFAULT 0;
