-- Claim-time flow control (concurrency, throttle). The twin of sqlite/migrations/0008_flow_claim.sql.
--
-- Queue items of a run under a concurrency limit carry up to two keys with their limits
-- (ckey1/climit1, ckey2/climit2), copied from run_concurrency when the item is enqueued.
-- slot: the item holds a concurrency slot (claimed and admitted; released when the item is
-- completed, rescheduled or deleted, or when its lease expires). An item whose key is at
-- capacity is parked on that key (parked_on): available_at moves to a far-future sentinel (out
-- of queue_ready's range, so claims never scan it again) and parked_at keeps its ready time,
-- which is restored when a slot of parked_on frees. Items of functions without limits leave every new column NULL/false,
-- so none of the partial indexes below holds them and their claims are unchanged.
ALTER TABLE queue
    ADD COLUMN ckey1 TEXT COLLATE "C",
    ADD COLUMN climit1 INTEGER,
    ADD COLUMN ckey2 TEXT COLLATE "C",
    ADD COLUMN climit2 INTEGER,
    ADD COLUMN slot BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN parked_at BIGINT,
    ADD COLUMN parked_on TEXT COLLATE "C";
CREATE INDEX queue_slots1 ON queue (ckey1, available_at) WHERE slot;
CREATE INDEX queue_slots2 ON queue (ckey2, available_at) WHERE slot AND ckey2 IS NOT NULL;
CREATE INDEX queue_parked ON queue (parked_on, parked_at, id) WHERE parked_on IS NOT NULL;

-- The concurrency keys of a run, evaluated once when the run is created.
CREATE TABLE run_concurrency (
    run_id  TEXT COLLATE "C" PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    ckey1   TEXT COLLATE "C" NOT NULL,
    climit1 INTEGER NOT NULL,
    ckey2   TEXT COLLATE "C",
    climit2 INTEGER
);

-- Throttle state per key: the GCRA "theoretical arrival time" of the next start.
CREATE TABLE throttle_keys (
    key TEXT COLLATE "C" PRIMARY KEY,
    tat BIGINT NOT NULL
);
