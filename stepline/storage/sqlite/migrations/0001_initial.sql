-- Stepline schema, SQLite. Times are epoch milliseconds; JSON is TEXT.

CREATE TABLE events (
    internal_id TEXT PRIMARY KEY,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    data        TEXT NOT NULL,
    user_data   TEXT NOT NULL DEFAULT '{}',
    v           TEXT,
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX events_by_name ON events (name, internal_id);

CREATE TABLE functions (
    id         TEXT PRIMARY KEY,
    app_id     TEXT NOT NULL,
    name       TEXT NOT NULL,
    config     TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX functions_by_app ON functions (app_id);

CREATE TABLE runs (
    id                TEXT PRIMARY KEY,
    function_id       TEXT NOT NULL,
    event_id          TEXT NOT NULL,
    events            TEXT NOT NULL,
    status            TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    ended_at          INTEGER,
    output            TEXT,
    error             TEXT,
    pending           TEXT NOT NULL DEFAULT '[]',
    disable_immediate INTEGER NOT NULL DEFAULT 0,
    request_version   INTEGER NOT NULL DEFAULT -1,
    step_count        INTEGER NOT NULL DEFAULT 0,
    correlation_id    TEXT
);
CREATE INDEX runs_by_function ON runs (function_id, id);
CREATE INDEX runs_by_status ON runs (status, id);
CREATE INDEX runs_by_event ON runs (event_id);

CREATE TABLE steps (
    run_id     TEXT NOT NULL,
    step_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    result     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    attempts   INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at   INTEGER NOT NULL,
    PRIMARY KEY (run_id, step_id)
) WITHOUT ROWID;

-- Finished items are deleted, so the table holds only live work. Claiming reads
-- queue_ready: items whose available_at (ready time, or lease expiry) has passed.
CREATE TABLE queue (
    id           TEXT PRIMARY KEY,
    run_id       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    step_id      TEXT,
    attempt      INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,
    claims       INTEGER NOT NULL DEFAULT 0,
    payload      TEXT NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL
);
CREATE INDEX queue_ready ON queue (available_at, id);
CREATE INDEX queue_by_run ON queue (run_id);

CREATE TABLE pauses (
    id              TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL,
    step_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    event_name      TEXT,
    expression      TEXT,
    event           TEXT,
    correlation_id  TEXT,
    expires_at      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    timeout_item_id TEXT NOT NULL,
    step_name       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX pauses_by_event ON pauses (event_name, id) WHERE event_name IS NOT NULL;
CREATE UNIQUE INDEX pauses_by_correlation ON pauses (correlation_id) WHERE correlation_id IS NOT NULL;
CREATE INDEX pauses_by_run ON pauses (run_id);

CREATE TABLE idempotency_keys (
    function_id TEXT NOT NULL,
    key         TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (function_id, key)
) WITHOUT ROWID;

CREATE TABLE crons (
    function_id  TEXT PRIMARY KEY,
    schedule     TEXT NOT NULL,
    next_fire_at INTEGER NOT NULL
);
CREATE INDEX crons_due ON crons (next_fire_at);
