-- dispatch coordinator schema, version 21: budgets. A task's budget (JSON: its limit and the
-- step a "yes" raises it by; "" for none), a token's budgets (JSON: the task budget and the
-- daily budget of submits made with it; "" for none), and what each user spent per UTC day
-- (written by the event path only, as usage comes in).
ALTER TABLE tasks ADD COLUMN budget TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN budgets TEXT NOT NULL DEFAULT '';
CREATE TABLE spend_days (
    owner      TEXT NOT NULL,
    day        BIGINT NOT NULL,
    usd_micros BIGINT NOT NULL DEFAULT 0,
    tokens     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, day)
);
