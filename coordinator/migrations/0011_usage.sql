-- dispatch coordinator schema, version 11: what a structured worker stream reports. Tokens and
-- cost per worker run (JSON: attempt → totals; '' for none) and the stream's last activity
-- line. The lines themselves are events of kind 'activity' (kept, like 'log', when history is
-- compacted).
ALTER TABLE tasks ADD COLUMN usage TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN activity TEXT NOT NULL DEFAULT '';
-- Where a task goes, once, when its CLI cannot start for quota or login (JSON: targets,
-- patterns, whether it was used and what happened; '' for none).
ALTER TABLE tasks ADD COLUMN fallback TEXT NOT NULL DEFAULT '';
-- A node an admin cordoned (`dispatch nodes drain`): it takes no new task until uncordoned.
ALTER TABLE nodes ADD COLUMN cordoned INTEGER NOT NULL DEFAULT 0;
-- The W3C traceparent of a task's submit span, which its later spans join ('' for none).
ALTER TABLE tasks ADD COLUMN trace TEXT NOT NULL DEFAULT '';
