-- Tracked tasks: what an end user waits on, created with its event in one transaction.
-- runs.task_id links a run to the task it drives (its main run or its on_failure handler).
ALTER TABLE runs ADD COLUMN task_id TEXT;
CREATE INDEX runs_by_task ON runs (task_id) WHERE task_id IS NOT NULL;

CREATE TABLE tasks (
    id                 TEXT PRIMARY KEY,
    kind               TEXT NOT NULL,
    owner              TEXT NOT NULL,
    status             TEXT NOT NULL,
    event_id           TEXT NOT NULL,
    run_id             TEXT,
    progress           REAL,
    message            TEXT,
    result             TEXT,
    error              TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    started_at         INTEGER,
    ended_at           INTEGER,
    pending_deadline   INTEGER NOT NULL,
    pending_timeout_ms INTEGER NOT NULL,
    quota_feature      TEXT,
    refund_on_failure  INTEGER NOT NULL DEFAULT 0,
    version            INTEGER NOT NULL DEFAULT 1
);
-- Clients list their tasks newest first, optionally by status.
CREATE INDEX tasks_by_owner ON tasks (owner, id);
CREATE INDEX tasks_by_owner_status ON tasks (owner, status, id);
CREATE INDEX tasks_by_status ON tasks (status, id);
-- The sweeper reads only pending tasks whose deadline passed.
CREATE INDEX tasks_pending_due ON tasks (pending_deadline) WHERE status = 'pending';

-- One row per quota use; a use older than its window no longer counts. Deleted on refund.
CREATE TABLE quota_uses (
    feature  TEXT NOT NULL,
    owner    TEXT NOT NULL,
    task_id  TEXT NOT NULL,
    used_at  INTEGER NOT NULL,
    PRIMARY KEY (feature, owner, used_at, task_id)
) WITHOUT ROWID;
CREATE INDEX quota_uses_by_task ON quota_uses (task_id);
