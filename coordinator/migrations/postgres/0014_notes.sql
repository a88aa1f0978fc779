-- dispatch coordinator schema, version 14 (SQLite's 0014_notes.sql): the notes sent to a
-- task's worker, kept on the task (JSON: [{text, author, at_ms}], oldest first; "" for none).
ALTER TABLE tasks ADD COLUMN notes TEXT NOT NULL DEFAULT '';
