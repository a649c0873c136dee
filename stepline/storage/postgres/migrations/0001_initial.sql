-- Stepline schema, PostgreSQL. The twin of sqlite/migrations/0001_initial.sql: same tables,
-- columns and index names. Times are epoch milliseconds (BIGINT); JSON is JSONB.
-- Id columns use COLLATE "C": ULIDs sort bytewise, as in SQLite, whatever the database
-- locale, and btree comparisons are plain memcmp.

CREATE TABLE events (
    internal_id TEXT COLLATE "C" PRIMARY KEY,
    id          TEXT COLLATE "C" NOT NULL,
    name        TEXT NOT NULL,
    data        JSONB NOT NULL,
    user_data   JSONB NOT NULL DEFAULT '{}',
    v           TEXT,
    ts          BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX events_by_name ON events (name, internal_id);

CREATE TABLE functions (
    id         TEXT COLLATE "C" PRIMARY KEY,
    app_id     TEXT COLLATE "C" NOT NULL,
    name       TEXT NOT NULL,
    config     JSONB NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX functions_by_app ON functions (app_id);

-- A run row is rewritten at every step (pending, step_count, request_version); those
-- updates touch no indexed column, so leaving 10% free per page lets them stay HOT.
CREATE TABLE runs (
    id                TEXT COLLATE "C" PRIMARY KEY,
    function_id       TEXT COLLATE "C" NOT NULL,
    event_id          TEXT COLLATE "C" NOT NULL,
    events            JSONB NOT NULL,
    status            TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    started_at        BIGINT,
    ended_at          BIGINT,
    output            JSONB,
    error             JSONB,
    pending           JSONB NOT NULL DEFAULT '[]',
    disable_immediate BOOLEAN NOT NULL DEFAULT FALSE,
    request_version   INTEGER NOT NULL DEFAULT -1,
    step_count        INTEGER NOT NULL DEFAULT 0,
    correlation_id    TEXT COLLATE "C"
) WITH (fillfactor = 90);
CREATE INDEX runs_by_function ON runs (function_id, id);
CREATE INDEX runs_by_status ON runs (status, id);
CREATE INDEX runs_by_event ON runs (event_id);

CREATE TABLE steps (
    run_id     TEXT COLLATE "C" NOT NULL,
    step_id    TEXT COLLATE "C" NOT NULL,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    result     JSONB NOT NULL,
    seq        INTEGER NOT NULL,
    attempts   INTEGER NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at   BIGINT NOT NULL,
    PRIMARY KEY (run_id, step_id)
);

-- Finished items are deleted, so the table holds only live work. Claiming reads
-- queue_ready: items whose available_at (ready time, or lease expiry) has passed.
-- Every claim, lease extension and reschedule moves available_at, which queue_ready
-- indexes, so those updates are never HOT; fillfactor 80 still keeps the new row version
-- on the same heap page (fewer pages dirtied, less scattering as millions of items churn).
-- The table churns constantly (insert, update, delete), so autovacuum runs on a small
-- fraction of dead rows instead of the default 20%, keeping queue_ready lean.
CREATE TABLE queue (
    id           TEXT COLLATE "C" PRIMARY KEY,
    run_id       TEXT COLLATE "C" NOT NULL,
    kind         TEXT NOT NULL,
    step_id      TEXT COLLATE "C",
    attempt      INTEGER NOT NULL DEFAULT 0,
    available_at BIGINT NOT NULL,
    claims       INTEGER NOT NULL DEFAULT 0,
    payload      JSONB NOT NULL DEFAULT '{}',
    created_at   BIGINT NOT NULL
) WITH (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);
CREATE INDEX queue_ready ON queue (available_at, id);
CREATE INDEX queue_by_run ON queue (run_id);

CREATE TABLE pauses (
    id              TEXT COLLATE "C" PRIMARY KEY,
    run_id          TEXT COLLATE "C" NOT NULL,
    step_id         TEXT COLLATE "C" NOT NULL,
    kind            TEXT NOT NULL,
    event_name      TEXT,
    expression      TEXT,
    event           JSONB,
    correlation_id  TEXT COLLATE "C",
    expires_at      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    timeout_item_id TEXT COLLATE "C" NOT NULL,
    step_name       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX pauses_by_event ON pauses (event_name, id) WHERE event_name IS NOT NULL;
CREATE UNIQUE INDEX pauses_by_correlation ON pauses (correlation_id) WHERE correlation_id IS NOT NULL;
CREATE INDEX pauses_by_run ON pauses (run_id);

CREATE TABLE idempotency_keys (
    function_id TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    run_id      TEXT COLLATE "C" NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (function_id, key)
);

CREATE TABLE crons (
    function_id  TEXT COLLATE "C" PRIMARY KEY,
    schedule     TEXT NOT NULL,
    next_fire_at BIGINT NOT NULL
);
CREATE INDEX crons_due ON crons (next_fire_at);
