-- dispatch coordinator schema, version 15: a node that says it is ephemeral (a Kubernetes pod,
-- `dispatch-agent --ephemeral`) is forgotten once it has gone and its tasks are settled.
ALTER TABLE nodes ADD COLUMN ephemeral INTEGER NOT NULL DEFAULT 0;
