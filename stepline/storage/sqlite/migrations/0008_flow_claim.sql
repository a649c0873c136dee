-- Claim-time flow control (concurrency, throttle). The twin of postgres/migrations/0008_flow_claim.sql,
-- which explains the columns and indexes.
ALTER TABLE queue ADD COLUMN ckey1 TEXT;
ALTER TABLE queue ADD COLUMN climit1 INTEGER;
ALTER TABLE queue ADD COLUMN ckey2 TEXT;
ALTER TABLE queue ADD COLUMN climit2 INTEGER;
ALTER TABLE queue ADD COLUMN slot INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue ADD COLUMN parked_at INTEGER;
ALTER TABLE queue ADD COLUMN parked_on TEXT;
CREATE INDEX queue_slots1 ON queue (ckey1, available_at) WHERE slot;
CREATE INDEX queue_slots2 ON queue (ckey2, available_at) WHERE slot AND ckey2 IS NOT NULL;
CREATE INDEX queue_parked ON queue (parked_on, parked_at, id) WHERE parked_on IS NOT NULL;

CREATE TABLE run_concurrency (
    run_id  TEXT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    ckey1   TEXT NOT NULL,
    climit1 INTEGER NOT NULL,
    ckey2   TEXT,
    climit2 INTEGER
);

CREATE TABLE throttle_keys (
    key TEXT PRIMARY KEY,
    tat INTEGER NOT NULL
);
