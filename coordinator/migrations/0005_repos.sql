-- dispatch coordinator schema, version 5: remote workspaces (repository URL, branch, commit).
ALTER TABLE tasks ADD COLUMN repo_url TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN repo_branch TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN repo_commit TEXT NOT NULL DEFAULT '';
