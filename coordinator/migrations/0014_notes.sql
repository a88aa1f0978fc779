-- dispatch coordinator schema, version 14: the notes sent to a task's worker (`dispatch note`),
-- kept on the task (JSON: [{text, author, at_ms}], oldest first; "" for none).
ALTER TABLE tasks ADD COLUMN notes TEXT NOT NULL DEFAULT '';
