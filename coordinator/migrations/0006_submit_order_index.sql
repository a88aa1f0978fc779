-- dispatch coordinator schema, version 6: `dispatch status` lists the most recent tasks and a
-- submit takes the next submit_order; both need this index (without it each is a full scan).
CREATE INDEX tasks_submit_order ON tasks (submit_order);
