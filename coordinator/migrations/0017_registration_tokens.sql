-- dispatch coordinator schema, version 17: registration tokens. A node token made with
-- `dispatch token create --node NAME --uses N` registers at most N nodes: each one's first
-- session mints it a token of its own (created_by `registration:ID`), and `uses` counts them.
ALTER TABLE tokens ADD COLUMN uses_max INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
