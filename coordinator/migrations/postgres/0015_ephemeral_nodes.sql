-- dispatch coordinator schema, version 15 (SQLite's 0015_ephemeral_nodes.sql): a node that says
-- it is ephemeral is forgotten once it has gone and its tasks are settled.
ALTER TABLE nodes ADD COLUMN ephemeral BOOLEAN NOT NULL DEFAULT FALSE;
