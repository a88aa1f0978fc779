-- dispatch coordinator schema, version 4: label selectors (`--pool k=v,...`), as JSON.
ALTER TABLE tasks ADD COLUMN pool TEXT NOT NULL DEFAULT '{}';
