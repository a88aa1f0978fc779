-- dispatch coordinator schema, version 23: the id of the token a task was submitted with ("" for
-- the local daemon's tasks and those submitted before this version), so the tool policy's
-- `tokens:` scopes name the tasks of that token.
ALTER TABLE tasks ADD COLUMN token TEXT NOT NULL DEFAULT '';
