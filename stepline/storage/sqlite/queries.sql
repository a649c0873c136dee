-- Stepline queries, SQLite. Parameters are named (:name); JSON is encoded in Python.
-- The PostgreSQL backend defines the same query names.

-- name: insert_event
INSERT INTO events (internal_id, id, name, data, user_data, v, ts, received_at)
VALUES (:internal_id, :id, :name, :data, :user_data, :v, :ts, :received_at);

-- name: select_event
SELECT internal_id, id, name, data, user_data, v, ts, received_at
FROM events
WHERE internal_id = :internal_id;

-- name: insert_run
INSERT INTO runs (
    id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
    pending, disable_immediate, request_version, step_count, correlation_id, task_id
)
VALUES (
    :id, :function_id, :event_id, :events, :status, :created_at, :started_at, :ended_at, :output, :error,
    :pending, :disable_immediate, :request_version, :step_count, :correlation_id, :task_id
);

-- name: select_run
SELECT id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
       pending, disable_immediate, request_version, step_count, correlation_id, task_id
FROM runs
WHERE id = :id;

-- name: select_run_for_update
-- The writer lock (BEGIN IMMEDIATE) already serialises writers: a plain read holds the run.
SELECT id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
       pending, disable_immediate, request_version, step_count, correlation_id, task_id
FROM runs
WHERE id = :id;

-- name: update_run
UPDATE runs
SET status = :status,
    started_at = :started_at,
    ended_at = :ended_at,
    output = :output,
    error = :error,
    pending = :pending,
    disable_immediate = :disable_immediate,
    request_version = :request_version,
    step_count = :step_count
WHERE id = :id;

-- name: runs_for_event
SELECT id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
       pending, disable_immediate, request_version, step_count, correlation_id, task_id
FROM runs
WHERE event_id = :event_id
ORDER BY id;

-- name: insert_idempotency_key
-- Claims the key when it is free or its reservation expired; changes no row otherwise.
INSERT INTO idempotency_keys (function_id, key, run_id, expires_at)
VALUES (:function_id, :key, :run_id, :expires_at)
ON CONFLICT (function_id, key) DO UPDATE
SET run_id = excluded.run_id, expires_at = excluded.expires_at
WHERE idempotency_keys.expires_at <= :now;

-- name: next_step_seq
UPDATE runs SET step_count = step_count + 1
WHERE id = :id AND status IN ('queued', 'running')
RETURNING step_count - 1;

-- name: record_checkpoint
-- A step that ran inline, at the run's next sequence number (the caller then runs next_step_seq
-- to move the counter); no row when the run has ended or the step was already recorded.
INSERT INTO steps (run_id, step_id, name, kind, result, seq, attempts, started_at, ended_at)
SELECT :run_id, :step_id, :name, :kind, :result, step_count, :attempts, :started_at, :ended_at
FROM runs
WHERE id = :run_id AND status IN ('queued', 'running')
ON CONFLICT DO NOTHING
RETURNING seq;

-- name: mark_run_started
UPDATE runs SET status = 'running', started_at = :now
WHERE id = :id AND status = 'queued'
RETURNING task_id;

-- name: insert_step
INSERT INTO steps (run_id, step_id, name, kind, result, seq, attempts, started_at, ended_at)
VALUES (:run_id, :step_id, :name, :kind, :result, :seq, :attempts, :started_at, :ended_at)
ON CONFLICT (run_id, step_id) DO NOTHING;

-- name: select_steps
SELECT run_id, step_id, name, kind, result, seq, attempts, started_at, ended_at
FROM steps
WHERE run_id = :run_id
ORDER BY seq, step_id;

-- name: enqueue_item
-- The item inherits its run's concurrency keys (none for a run without limits).
INSERT INTO queue (
    id, run_id, kind, step_id, attempt, available_at, claims, payload, created_at, ckey1, climit1, ckey2, climit2
)
SELECT :id, :run_id, :kind, :step_id, :attempt, :available_at, :claims, :payload, :created_at,
       rc.ckey1, rc.climit1, rc.ckey2, rc.climit2
FROM (SELECT 1) AS one
LEFT JOIN run_concurrency AS rc ON rc.run_id = :run_id;

-- name: complete_item
DELETE FROM queue
WHERE id = :id AND claims = :claims
RETURNING ckey1, ckey2, slot;

-- name: reschedule_item
UPDATE queue
SET kind = :kind,
    step_id = :step_id,
    attempt = :attempt,
    available_at = :available_at,
    payload = :payload,
    claims = claims + 1,
    slot = 0
WHERE id = :id AND claims = :claims
RETURNING ckey1, ckey2;

-- name: delete_item
DELETE FROM queue
WHERE id = :id
RETURNING ckey1, ckey2, slot;

-- name: delete_run_items
DELETE FROM queue
WHERE run_id = :run_id
RETURNING ckey1, ckey2, slot;

-- name: claim_items
-- Leases the oldest ready items (ready time or expired lease) in one statement; the
-- subquery reads only the queue_ready index. RETURNING order is arbitrary: callers sort.
-- Items under a concurrency limit keep their ready time in parked_at until the store admits
-- them (in the same transaction), so that one statement still does the claim.
UPDATE queue
SET available_at = :lease_until,
    claims = claims + 1,
    slot = 0,
    parked_at = CASE WHEN ckey1 IS NOT NULL AND kind IN ('discover', 'step') THEN available_at END
WHERE id IN (
    SELECT id
    FROM queue INDEXED BY queue_ready
    WHERE available_at <= :now
    ORDER BY available_at, id
    LIMIT :limit
)
RETURNING id, run_id, kind, step_id, attempt, available_at, claims, payload, created_at,
          ckey1, climit1, ckey2, climit2, parked_at AS ready_at;

-- name: extend_lease
UPDATE queue
SET available_at = :lease_until
WHERE id = :id AND claims = :claims;

-- name: next_available_at
SELECT min(available_at)
FROM queue;

-- name: count_queue
SELECT count(*)
FROM queue;

-- name: insert_pause
INSERT INTO pauses (
    id, run_id, step_id, kind, event_name, expression, event, correlation_id, expires_at, created_at,
    timeout_item_id, step_name
)
VALUES (
    :id, :run_id, :step_id, :kind, :event_name, :expression, :event, :correlation_id, :expires_at,
    :created_at, :timeout_item_id, :step_name
);

-- name: pauses_for_event
SELECT id, run_id, step_id, kind, event_name, expression, event, correlation_id, expires_at, created_at,
       timeout_item_id, step_name
FROM pauses
WHERE event_name = :event_name AND kind IN ('wait', 'cancel')
ORDER BY id;

-- name: pause_by_correlation
SELECT id, run_id, step_id, kind, event_name, expression, event, correlation_id, expires_at, created_at,
       timeout_item_id, step_name
FROM pauses
WHERE correlation_id = :correlation_id;

-- name: select_pause
SELECT id, run_id, step_id, kind, event_name, expression, event, correlation_id, expires_at, created_at,
       timeout_item_id, step_name
FROM pauses
WHERE id = :id;

-- name: delete_pause
DELETE FROM pauses
WHERE id = :id;

-- name: delete_run_pauses
DELETE FROM pauses
WHERE run_id = :run_id;

-- name: upsert_function
INSERT INTO functions (id, app_id, name, config, updated_at)
VALUES (:id, :app_id, :name, :config, :updated_at)
ON CONFLICT (id) DO UPDATE
SET app_id = excluded.app_id,
    name = excluded.name,
    -- SET expressions read the row as it was: compare the stored configuration with the new one.
    version = CASE WHEN functions.config = excluded.config THEN functions.version ELSE functions.version + 1 END,
    config = excluded.config,
    updated_at = excluded.updated_at;

-- name: select_cron
SELECT function_id, schedule, next_fire_at
FROM crons
WHERE function_id = :function_id;

-- name: upsert_cron
INSERT INTO crons (function_id, schedule, next_fire_at)
VALUES (:function_id, :schedule, :next_fire_at)
ON CONFLICT (function_id) DO UPDATE
SET schedule = excluded.schedule,
    next_fire_at = excluded.next_fire_at;

-- name: delete_crons_except
-- An app's crons are those of its registered functions; :function_ids is a JSON array of ids to keep.
DELETE FROM crons
WHERE function_id IN (SELECT id FROM functions WHERE app_id = :app_id)
  AND function_id NOT IN (SELECT value FROM json_each(:function_ids));

-- name: advance_cron
UPDATE crons
SET next_fire_at = :new_next
WHERE function_id = :function_id AND next_fire_at = :expected_next;

-- name: due_crons
SELECT function_id, schedule, next_fire_at
FROM crons
WHERE next_fire_at <= :now
ORDER BY next_fire_at, function_id;

-- name: select_migrations
SELECT version
FROM schema_migrations
ORDER BY version;

-- name: insert_migration
INSERT INTO schema_migrations (version, name, applied_at)
VALUES (:version, :name, :applied_at);

-- name: upsert_app
INSERT INTO apps (id, url, framework, sdk, checksum, synced_at, error)
VALUES (:id, :url, :framework, :sdk, :checksum, :synced_at, :error)
ON CONFLICT (id) DO UPDATE
SET url = excluded.url, framework = excluded.framework, sdk = excluded.sdk, checksum = excluded.checksum,
    synced_at = excluded.synced_at, error = excluded.error;

-- name: select_apps
SELECT id, url, framework, sdk, checksum, synced_at, error FROM apps ORDER BY id;

-- name: select_app
SELECT id, url, framework, sdk, checksum, synced_at, error FROM apps WHERE id = :id;

-- name: select_functions
SELECT id, app_id, name, config, updated_at, version FROM functions ORDER BY id;

-- name: functions_fingerprint
-- Changes whenever a function is synced, changed or removed (records.FunctionsFingerprint): the
-- aggregate of the functions table, kept in one row by triggers (migration 0013).
SELECT functions, latest, versions FROM functions_summary;

-- name: delete_functions_except
-- :function_ids is a JSON array of the app's function ids to keep.
DELETE FROM functions
WHERE app_id = :app_id AND id NOT IN (SELECT value FROM json_each(:function_ids));

-- name: list_runs
-- The read API's pages, newest first. :lower (inclusive) and :upper (exclusive) bound the id,
-- from the cursor and the creation-time window (storage.records.IdRange). Each filter
-- combination has its own query, which reads one index range backwards and stops at :limit:
-- this one the primary key, the next ones the index they name (INDEXED BY: with statistics,
-- SQLite could prefer walking the primary key and filtering, which reads the whole table
-- when the filter matches no recent run).
SELECT id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
       pending, disable_immediate, request_version, step_count, correlation_id, task_id
FROM runs
WHERE id < :upper AND id >= :lower
ORDER BY id DESC
LIMIT :limit;

-- name: list_runs_by_function
SELECT id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
       pending, disable_immediate, request_version, step_count, correlation_id, task_id
FROM runs INDEXED BY runs_by_function
WHERE function_id = :function_id AND id < :upper AND id >= :lower
ORDER BY id DESC
LIMIT :limit;

-- name: list_runs_by_status
SELECT id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
       pending, disable_immediate, request_version, step_count, correlation_id, task_id
FROM runs INDEXED BY runs_by_status
WHERE status = :status AND id < :upper AND id >= :lower
ORDER BY id DESC
LIMIT :limit;

-- name: list_runs_by_function_status
SELECT id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
       pending, disable_immediate, request_version, step_count, correlation_id, task_id
FROM runs INDEXED BY runs_by_function_status
WHERE function_id = :function_id AND status = :status AND id < :upper AND id >= :lower
ORDER BY id DESC
LIMIT :limit;

-- name: list_runs_by_event
-- An event starts a handful of runs: found through runs_by_event, the other filters checked on them.
SELECT id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
       pending, disable_immediate, request_version, step_count, correlation_id, task_id
FROM runs INDEXED BY runs_by_event
WHERE event_id = :event_id
  AND (:function_id IS NULL OR function_id = :function_id)
  AND (:status IS NULL OR status = :status)
  AND id < :upper AND id >= :lower
ORDER BY id DESC
LIMIT :limit;

-- name: list_events
-- Newest first by internal_id (a ULID), below the cursor :upper: the primary key read backwards.
SELECT internal_id, id, name, data, user_data, v, ts, received_at
FROM events
WHERE internal_id < :upper
ORDER BY internal_id DESC
LIMIT :limit;

-- name: list_events_by_name
SELECT internal_id, id, name, data, user_data, v, ts, received_at
FROM events INDEXED BY events_by_name
WHERE name = :name AND internal_id < :upper
ORDER BY internal_id DESC
LIMIT :limit;

-- name: events_by_public_id
SELECT internal_id, id, name, data, user_data, v, ts, received_at
FROM events INDEXED BY events_by_public_id
WHERE id = :id
ORDER BY internal_id DESC
LIMIT :limit;

-- tasks

-- name: insert_task
-- An id already taken (a client retrying its enqueue) inserts nothing.
INSERT INTO tasks (
    id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
    started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
) VALUES (
    :id, :kind, :owner, :status, :event_id, :run_id, :progress, :message, :result, :error, :created_at,
    :updated_at, :started_at, :ended_at, :pending_deadline, :pending_timeout_ms, :quota_feature,
    :refund_on_failure, :version
)
ON CONFLICT (id) DO NOTHING;

-- name: select_task
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE id = :id;

-- name: lock_task_id
-- SQLite runs one write transaction at a time: two enqueues of one id are already exclusive.
SELECT 1;

-- name: select_task_for_update
-- SQLite's write transaction already excludes every other writer.
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE id = :id;

-- name: update_task
UPDATE tasks
SET status = :status,
    run_id = :run_id,
    progress = :progress,
    message = :message,
    result = :result,
    error = :error,
    updated_at = :updated_at,
    started_at = :started_at,
    ended_at = :ended_at,
    pending_deadline = :pending_deadline,
    version = version + 1
WHERE id = :id;

-- name: start_task
UPDATE tasks
SET status = 'running', started_at = coalesce(started_at, :now), updated_at = :now, version = version + 1
WHERE id = :id AND status = 'pending';

-- name: task_progress
-- Progress only moves forward, so a function replayed from the top cannot move it back; a repeat
-- of the last report changes nothing (no version bump, no stream frame).
UPDATE tasks
SET progress = :progress, message = :message, updated_at = :now, version = version + 1
WHERE id = :id AND status IN ('pending', 'running')
  AND (progress IS NULL OR progress < :progress
       OR (progress = :progress AND message IS NOT :message));

-- name: due_pending_tasks
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE status = 'pending' AND pending_deadline <= :now
ORDER BY pending_deadline
LIMIT :limit;

-- name: next_pending_deadline
SELECT min(pending_deadline) FROM tasks WHERE status = 'pending';

-- name: list_tasks
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE id < :upper
ORDER BY id DESC
LIMIT :limit;

-- name: list_tasks_by_owner
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE owner = :owner AND id < :upper AND (:kind IS NULL OR kind = :kind)
ORDER BY id DESC
LIMIT :limit;

-- name: list_tasks_by_owner_status
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE owner = :owner AND status = :status AND id < :upper AND (:kind IS NULL OR kind = :kind)
ORDER BY id DESC
LIMIT :limit;

-- name: list_tasks_by_kind
-- Without an owner, a kind's own index (tasks_by_kind) serves. With one, the owner's queries
-- check the kind on the owner's rows ("kind IS NULL OR ...", which no index serves).
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE kind = :kind AND id < :upper
ORDER BY id DESC
LIMIT :limit;

-- name: list_tasks_by_kind_status
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE kind = :kind AND status = :status AND id < :upper
ORDER BY id DESC
LIMIT :limit;

-- name: list_tasks_by_status
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE status = :status AND id < :upper
ORDER BY id DESC
LIMIT :limit;

-- name: lock_quota
-- SQLite runs one write transaction at a time: counting and inserting are already exclusive.
SELECT 1;

-- name: count_quota_uses
SELECT count(*), min(used_at)
FROM quota_uses
WHERE feature = :feature AND owner = :owner AND used_at > :since;

-- name: insert_quota_use
INSERT INTO quota_uses (feature, owner, task_id, used_at, expires_at)
VALUES (:feature, :owner, :task_id, :used_at, :expires_at);

-- name: delete_quota_uses
DELETE FROM quota_uses WHERE task_id = :task_id;
-- name: lock_flow_key
-- The flow-control row of (function, kind, key), created empty if missing. The writer lock
-- (BEGIN IMMEDIATE) already holds it against other writers until the transaction ends.
INSERT INTO flow_keys (function_id, kind, key)
VALUES (:function_id, :kind, :key)
ON CONFLICT (function_id, kind, key) DO UPDATE SET kind = excluded.kind
RETURNING function_id, kind, key, run_id, item_id, size, opened_at, due_at;

-- name: update_flow_key
UPDATE flow_keys
SET run_id = :run_id, item_id = :item_id, size = :size, opened_at = :opened_at, due_at = :due_at
WHERE function_id = :function_id AND kind = :kind AND key = :key;

-- name: set_run_events
UPDATE runs SET events = :events WHERE id = :id;
-- name: runs_started_per_minute
-- The dashboard's overview. Ids are ULIDs, so runs made since :lower are one primary-key range.
SELECT created_at / 60000 * 60000 AS minute, 'started' AS what, count(*) AS count
FROM runs
WHERE id >= :lower
GROUP BY created_at / 60000;

-- name: runs_ended_per_minute
SELECT ended_at / 60000 * 60000 AS minute, status AS what, count(*) AS count
FROM runs INDEXED BY runs_by_ended
WHERE ended_at >= :since
GROUP BY ended_at / 60000, status;

-- name: step_timings_since
-- Only step.run results: sleeps and waits last as long as they were asked to.
SELECT ended_at, ended_at - started_at AS duration
FROM steps INDEXED BY steps_by_ended
WHERE ended_at >= :since AND kind = 'run'
ORDER BY ended_at DESC
LIMIT :limit;

-- name: ready_queue
-- Items claimable now (ready, or with an expired lease): a range of queue_ready.
SELECT count(*) AS ready, min(available_at) AS oldest_ready_at
FROM queue
WHERE available_at <= :now;

-- name: run_pauses
-- What a run waits on (the dashboard's run page), through pauses_by_run.
SELECT id, run_id, step_id, kind, event_name, expression, event, correlation_id, expires_at, created_at,
       timeout_item_id, step_name
FROM pauses
WHERE run_id = :run_id
ORDER BY id;

-- name: run_queue_items
-- A run's queued work (sleeps, retries, next call), through queue_by_run.
SELECT id, run_id, kind, step_id, attempt, available_at, claims, payload, created_at
FROM queue
WHERE run_id = :run_id
ORDER BY id;
-- Claim-time flow control (concurrency slots, parking, throttle); see postgres/queries.sql.
-- SQLite has one writer, so no key locks: each claim or release is one write transaction.

-- name: renew_item
UPDATE queue
SET kind = :kind,
    step_id = :step_id,
    attempt = :attempt,
    available_at = :available_at,
    payload = :payload,
    claims = claims + 1
WHERE id = :id AND claims = :claims;

-- name: insert_run_concurrency
INSERT INTO run_concurrency (run_id, ckey1, climit1, ckey2, climit2)
VALUES (:run_id, :first_key, :first_limit, :second_key, :second_limit);

-- name: count_slots
SELECT k.value AS key,
       (SELECT count(*) FROM queue INDEXED BY queue_slots1
        WHERE ckey1 = k.value AND slot AND available_at > :now)
     + (SELECT count(*) FROM queue INDEXED BY queue_slots2
        WHERE ckey2 = k.value AND slot AND ckey2 IS NOT NULL AND available_at > :now) AS used
FROM json_each(:keys) AS k;

-- name: admit_items
-- The ids are found through the primary key (an uncorrelated IN list); the claims token is then
-- checked on each of those rows only.
UPDATE queue
SET slot = 1,
    parked_at = NULL
WHERE id IN (SELECT value FROM json_each(:ids))
  AND claims = (SELECT c.value FROM json_each(:ids) AS i JOIN json_each(:claims) AS c ON c.key = i.key
                WHERE i.value = queue.id)
RETURNING id;

-- name: park_items
UPDATE queue
SET available_at = :parked,
    parked_at = (SELECT r.value FROM json_each(:ids) AS i JOIN json_each(:ready_ats) AS r ON r.key = i.key
                 WHERE i.value = queue.id),
    parked_on = (SELECT k.value FROM json_each(:ids) AS i JOIN json_each(:blocking_keys) AS k ON k.key = i.key
                 WHERE i.value = queue.id)
WHERE id IN (SELECT value FROM json_each(:ids))
  AND claims = (SELECT c.value FROM json_each(:ids) AS i JOIN json_each(:claims) AS c ON c.key = i.key
                WHERE i.value = queue.id);

-- name: return_items
UPDATE queue
SET available_at = (SELECT r.value FROM json_each(:ids) AS i JOIN json_each(:ready_ats) AS r ON r.key = i.key
                    WHERE i.value = queue.id),
    parked_at = NULL
WHERE id IN (SELECT value FROM json_each(:ids))
  AND claims = (SELECT c.value FROM json_each(:ids) AS i JOIN json_each(:claims) AS c ON c.key = i.key
                WHERE i.value = queue.id);

-- name: unpark_items
UPDATE queue
SET available_at = parked_at,
    parked_at = NULL,
    parked_on = NULL
WHERE id IN (
    SELECT id FROM queue INDEXED BY queue_parked
    WHERE parked_on = :key
    ORDER BY parked_at, id
    LIMIT :limit
);

-- name: advance_throttle
INSERT INTO throttle_keys (key, tat)
VALUES (:key, :now + :interval)
ON CONFLICT (key) DO UPDATE
SET tat = max(throttle_keys.tat, :now) + :interval
RETURNING tat;

-- name: select_task_changes
-- The task as it was after each change newer than the version a stream last sent, oldest first.
SELECT task FROM task_changes
WHERE task_id = :task_id AND version > :after
ORDER BY version
LIMIT :limit;

-- name: delete_task_changes
DELETE FROM task_changes WHERE changed_at < :before;

-- Retention (engine/retention.py, storage/purge.py): finished history older than the retention
-- period, deleted one batch per write transaction. The expired_* queries name a batch of doomed
-- rows; the delete_* queries delete by those ids. The statuses are the terminal ones of
-- records.RunStatus and records.TaskStatus. "+status" keeps SQLite's planner off the status
-- indexes, which would read every finished row and sort them: the ended_at indexes read only
-- the oldest, in order.

-- name: expired_runs
-- Runs that ended before :before, oldest first (runs_by_ended), except those whose task has not
-- ended (it may still read its run).
SELECT id
FROM runs
WHERE ended_at < :before AND +status IN ('completed', 'failed', 'cancelled', 'skipped')
  AND (task_id IS NULL
       OR NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.id = runs.task_id AND tasks.status IN ('pending', 'running')))
ORDER BY ended_at
LIMIT :limit;

-- name: delete_runs_steps
DELETE FROM steps WHERE run_id IN (SELECT value FROM json_each(:ids));

-- name: delete_runs_items
-- Leftovers only: a run's items are deleted when it ends, but for those a plain completed run
-- leaves. Their leases expired long ago, so they hold no concurrency slot.
DELETE FROM queue WHERE run_id IN (SELECT value FROM json_each(:ids));

-- name: delete_runs_pauses
DELETE FROM pauses WHERE run_id IN (SELECT value FROM json_each(:ids));

-- name: delete_runs
-- run_concurrency rows go with their runs (ON DELETE CASCADE).
DELETE FROM runs WHERE id IN (SELECT value FROM json_each(:ids));

-- name: expired_tasks
-- Tasks that ended before :before, oldest first (tasks_by_ended), except those a run that has
-- not ended still drives (an on_failure handler, through runs_by_task).
SELECT id
FROM tasks
WHERE ended_at < :before AND ended_at IS NOT NULL AND +status IN ('complete', 'failed', 'cancelled')
  AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.task_id = tasks.id AND runs.status IN ('queued', 'running'))
ORDER BY ended_at
LIMIT :limit;

-- name: delete_tasks_changes
DELETE FROM task_changes WHERE task_id IN (SELECT value FROM json_each(:ids));

-- name: delete_tasks
-- Quota uses stay: they count until their own window passes (purge_quota_uses).
DELETE FROM tasks WHERE id IN (SELECT value FROM json_each(:ids));

-- name: expired_events
-- Events received before :before that no remaining run refers to (runs_by_event) and no task that
-- has not ended does. An internal_id is a ULID made on receipt: :before_id (the smallest ULID of
-- :before) bounds a primary-key range. A task's event is received when the task is created, so
-- only tasks created before :before can hold such an event: that set is read once per batch.
SELECT internal_id AS id
FROM events
WHERE internal_id < :before_id AND received_at < :before
  AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.event_id = events.internal_id)
  AND internal_id NOT IN (
      SELECT event_id FROM tasks WHERE status IN ('pending', 'running') AND created_at < :before
  )
ORDER BY internal_id
LIMIT :limit;

-- name: delete_events
DELETE FROM events WHERE internal_id IN (SELECT value FROM json_each(:ids));

-- name: purge_idempotency_keys
-- Reservations whose window passed mean nothing any more (a claim takes them over).
DELETE FROM idempotency_keys
WHERE (function_id, key) IN (
    SELECT function_id, key
    FROM idempotency_keys
    WHERE expires_at <= :now
    ORDER BY expires_at
    LIMIT :limit
);

-- name: purge_quota_uses
-- A use past its own window can count toward no later check made with that window; keeping it
-- for the retention period too covers a window lengthened up to that period.
DELETE FROM quota_uses
WHERE (feature, owner, used_at, task_id) IN (
    SELECT feature, owner, used_at, task_id
    FROM quota_uses
    WHERE expires_at <= :now AND used_at < :before
    ORDER BY expires_at
    LIMIT :limit
);

-- Flow-control state (flow_keys, throttle_keys) is not history: retention deletes a row once it
-- is equivalent to no row at all, whatever the period. Ingest upserts a missing row empty (zeros
-- and NULLs) and decides from it as from any other, so deleting such a row changes no later
-- decision. The conditions below say when that holds, per kind (engine/flow_ingest.py,
-- engine/throttle.py); time only moves forward and a run's status only moves from queued to
-- running to a terminal one, so a row that qualifies at :now qualifies at every later time.
-- No index serves these: an index on due_at or tat would cost every rate-limited, debounced,
-- batched or throttled run one more index write, while a pass reads the table once a minute,
-- stopping at :limit rows. With retention on the table holds only keys in use: rate-limit and
-- throttle keys for about a period after their last run, singletons while their run lasts,
-- debounce and batch keys while their window is open. Measured on 2 cores: a batch finding
-- nothing in 1.1 million live keys (100,000 of them singletons holding a run) held the writer
-- 215 ms; a backlog (the first pass after an upgrade) of 555,555 spent keys behind 444,445 live
-- ones went in 1,112 batches, 91 s in all, none holding the writer over 201 ms.

-- name: purge_flow_keys
-- rate_limit: the GCRA arrival time has passed (due_at <= :now): the next run reckons from
--   max(due_at, now) = now, as from an empty row (due_at 0).
-- singleton: no run holds the key, or its run ended or is gone: the next run goes ahead and
--   takes the key either way.
-- debounce, batch: no pending run or open batch: none was opened, or its window closed (due_at
--   <= :now), or its run is no longer queued (it started, was skipped or cancelled). The next
--   event then opens a new one and overwrites every field, as on an empty row.
-- Other kinds (none yet) stay. SQLite writes one transaction at a time: no lock to take.
DELETE FROM flow_keys
WHERE (function_id, kind, key) IN (
    SELECT function_id, kind, key
    FROM flow_keys
    WHERE (kind = 'rate_limit' AND due_at <= :now)
       OR (kind = 'singleton'
           AND (run_id IS NULL
                OR NOT EXISTS (SELECT 1 FROM runs
                               WHERE runs.id = flow_keys.run_id AND runs.status IN ('queued', 'running'))))
       OR (kind IN ('debounce', 'batch')
           AND (run_id IS NULL OR due_at <= :now
                OR NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = flow_keys.run_id AND runs.status = 'queued')))
    LIMIT :limit
);

-- name: purge_throttle_keys
-- A theoretical arrival time that has passed (tat <= :now): advance_throttle sets
-- max(tat, now) + interval = now + interval, what it inserts for a missing key, and the start
-- time (burst included) is reckoned from that new tat alone.
DELETE FROM throttle_keys
WHERE key IN (
    SELECT key
    FROM throttle_keys
    WHERE tat <= :now
    LIMIT :limit
);
