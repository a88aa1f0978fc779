-- dispatch coordinator schema, version 7: a task's prompt and worker prompt live in their own
-- table. The task row is rewritten on every batch of events from its worker; with the texts in
-- it, a row of a few KiB spilled into overflow pages that each of those writes copied again.
CREATE TABLE task_texts (
    task_id TEXT PRIMARY KEY NOT NULL REFERENCES tasks (id),
    prompt TEXT NOT NULL,
    worker_prompt TEXT NOT NULL
);
INSERT INTO task_texts (task_id, prompt, worker_prompt) SELECT id, prompt, worker_prompt FROM tasks;
ALTER TABLE tasks DROP COLUMN prompt;
ALTER TABLE tasks DROP COLUMN worker_prompt;
