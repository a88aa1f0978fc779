-- dispatch coordinator schema, version 18: tool approvals. A question a worker's tool call
-- raised (its CLI's hook asked, the policy said ask) carries the call: JSON {attempt, call,
-- tool, input_json, cwd, rule} ("" for the worker's own ipc/ questions).
ALTER TABLE questions ADD COLUMN tool_call TEXT NOT NULL DEFAULT '';
