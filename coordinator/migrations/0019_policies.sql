-- dispatch coordinator schema, version 19: the tool policy admins set with `dispatch policy
-- set` (the `policy:` section's schema, as YAML); tasks run under it and the config file's
-- together.
CREATE TABLE policies (
    name       TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
