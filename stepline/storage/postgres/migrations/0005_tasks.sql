-- Tracked tasks: what an end user waits on, created with its event in one transaction.
-- runs.task_id links a run to the task it drives (its main run or its on_failure handler).
ALTER TABLE runs ADD COLUMN task_id TEXT COLLATE "C";
CREATE INDEX runs_by_task ON runs (task_id) WHERE task_id IS NOT NULL;

-- A task row changes at every transition and progress report; only status is indexed
-- among the changing columns, so progress updates stay HOT.
CREATE TABLE tasks (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    kind               TEXT NOT NULL,
    owner              TEXT COLLATE "C" NOT NULL,
    status             TEXT NOT NULL,
    event_id           TEXT COLLATE "C" NOT NULL,
    run_id             TEXT COLLATE "C",
    progress           DOUBLE PRECISION,
    message            TEXT,
    result             JSONB,
    error              JSONB,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    started_at         BIGINT,
    ended_at           BIGINT,
    pending_deadline   BIGINT NOT NULL,
    pending_timeout_ms BIGINT NOT NULL,
    quota_feature      TEXT,
    refund_on_failure  BOOLEAN NOT NULL DEFAULT FALSE,
    version            INTEGER NOT NULL DEFAULT 1
) WITH (fillfactor = 90);
-- Clients list their tasks newest first, optionally by status.
CREATE INDEX tasks_by_owner ON tasks (owner, id);
CREATE INDEX tasks_by_owner_status ON tasks (owner, status, id);
CREATE INDEX tasks_by_status ON tasks (status, id);
-- The sweeper reads only pending tasks whose deadline passed.
CREATE INDEX tasks_pending_due ON tasks (pending_deadline) WHERE status = 'pending';

-- One row per quota use; a use older than its window no longer counts. Deleted on refund.
CREATE TABLE quota_uses (
    feature  TEXT COLLATE "C" NOT NULL,
    owner    TEXT COLLATE "C" NOT NULL,
    task_id  TEXT COLLATE "C" NOT NULL,
    used_at  BIGINT NOT NULL,
    PRIMARY KEY (feature, owner, used_at, task_id)
);
CREATE INDEX quota_uses_by_task ON quota_uses (task_id);
