-- Flow-control state decided when events arrive (rate limits, singletons, debounce windows,
-- open batches): one row per function, option kind and evaluated key. Ingest locks the row
-- (an upsert) before deciding, so several servers on one database agree.
CREATE TABLE flow_keys (
    function_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    run_id      TEXT,
    item_id     TEXT,
    size        INTEGER NOT NULL DEFAULT 0,
    opened_at   INTEGER NOT NULL DEFAULT 0,
    due_at      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (function_id, kind, key)
) WITHOUT ROWID;
