-- Stepline queries, PostgreSQL (psycopg named placeholders). Every name here is also
-- defined in sqlite/queries.sql; tests/storage/test_postgres.py checks the sets match.

-- name: insert_event
INSERT INTO events (internal_id, id, name, data, user_data, v, ts, received_at)
VALUES (%(internal_id)s, %(id)s, %(name)s, %(data)s, %(user_data)s, %(v)s, %(ts)s, %(received_at)s);

-- name: insert_run
INSERT INTO runs (
    id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
    pending, disable_immediate, request_version, step_count, correlation_id, task_id
) VALUES (
    %(id)s, %(function_id)s, %(event_id)s, %(events)s, %(status)s, %(created_at)s, %(started_at)s,
    %(ended_at)s, %(output)s, %(error)s, %(pending)s, %(disable_immediate)s, %(request_version)s,
    %(step_count)s, %(correlation_id)s, %(task_id)s
);

-- name: insert_idempotency_key
-- Claims the key when it is free or its reservation expired; changes no row otherwise.
INSERT INTO idempotency_keys (function_id, key, run_id, expires_at)
VALUES (%(function_id)s, %(key)s, %(run_id)s, %(expires_at)s)
ON CONFLICT (function_id, key) DO UPDATE
SET run_id = excluded.run_id, expires_at = excluded.expires_at
WHERE idempotency_keys.expires_at <= %(now)s;

-- name: next_step_seq
-- Unused here: record_checkpoint does this in the same statement. SQLite needs it as a second
-- statement, and both files define the same names.
UPDATE runs SET step_count = step_count + 1
WHERE id = %(id)s AND status IN ('queued', 'running')
RETURNING step_count - 1 AS seq;

-- name: record_checkpoint
-- A step that ran inline, at the run's next sequence number, in one statement; no row when the
-- run has ended or the step was already recorded.
WITH next AS (
    UPDATE runs SET step_count = step_count + 1
    WHERE id = %(run_id)s AND status IN ('queued', 'running')
    RETURNING step_count - 1 AS seq
)
INSERT INTO steps (run_id, step_id, name, kind, result, seq, attempts, started_at, ended_at)
SELECT %(run_id)s, %(step_id)s, %(name)s, %(kind)s, %(result)s, next.seq, %(attempts)s, %(started_at)s,
       %(ended_at)s
FROM next
ON CONFLICT DO NOTHING
RETURNING seq;

-- name: mark_run_started
-- One statement: the run starts and, if it drives a pending task, the task with it.
WITH started AS (
    UPDATE runs SET status = 'running', started_at = %(now)s
    WHERE id = %(id)s AND status = 'queued'
    RETURNING task_id
)
UPDATE tasks
SET status = 'running', started_at = coalesce(tasks.started_at, %(now)s), updated_at = %(now)s,
    version = tasks.version + 1
FROM started
WHERE tasks.id = started.task_id AND tasks.status = 'pending';

-- name: select_run
SELECT id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
       pending, disable_immediate, request_version, step_count, correlation_id, task_id
FROM runs
WHERE id = %(id)s;

-- name: select_run_for_update
SELECT id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
       pending, disable_immediate, request_version, step_count, correlation_id, task_id
FROM runs
WHERE id = %(id)s
FOR UPDATE;

-- name: update_run
UPDATE runs
SET status = %(status)s,
    started_at = %(started_at)s,
    ended_at = %(ended_at)s,
    output = %(output)s,
    error = %(error)s,
    pending = %(pending)s,
    disable_immediate = %(disable_immediate)s,
    request_version = %(request_version)s,
    step_count = %(step_count)s
WHERE id = %(id)s;

-- name: insert_step
INSERT INTO steps (run_id, step_id, name, kind, result, seq, attempts, started_at, ended_at)
VALUES (
    %(run_id)s, %(step_id)s, %(name)s, %(kind)s, %(result)s, %(seq)s, %(attempts)s, %(started_at)s,
    %(ended_at)s
)
ON CONFLICT DO NOTHING;

-- name: enqueue_item
-- The item inherits its run's concurrency keys (run_concurrency, written when the run was
-- created); a run without limits has no row there and its item none.
INSERT INTO queue (
    id, run_id, kind, step_id, attempt, available_at, claims, payload, created_at, ckey1, climit1, ckey2, climit2
)
SELECT %(id)s, %(run_id)s, %(kind)s, %(step_id)s, %(attempt)s, %(available_at)s, %(claims)s, %(payload)s,
       %(created_at)s, rc.ckey1, rc.climit1, rc.ckey2, rc.climit2
FROM (SELECT 1) AS one
LEFT JOIN run_concurrency AS rc ON rc.run_id = %(run_id)s;

-- name: complete_item
-- Returns the concurrency keys of a slot the item held, which the store then frees.
DELETE FROM queue
WHERE id = %(id)s AND claims = %(claims)s
RETURNING ckey1, ckey2, slot;

-- name: reschedule_item
UPDATE queue
SET kind = %(kind)s,
    step_id = %(step_id)s,
    attempt = %(attempt)s,
    available_at = %(available_at)s,
    payload = %(payload)s,
    claims = claims + 1,
    slot = FALSE
WHERE id = %(id)s AND claims = %(claims)s
RETURNING ckey1, ckey2;

-- name: delete_item
DELETE FROM queue
WHERE id = %(id)s
RETURNING ckey1, ckey2, slot;

-- name: delete_run_items
DELETE FROM queue
WHERE run_id = %(run_id)s
RETURNING ckey1, ckey2, slot;

-- name: insert_pause
INSERT INTO pauses (
    id, run_id, step_id, kind, event_name, expression, event, correlation_id, expires_at, created_at,
    timeout_item_id, step_name
) VALUES (
    %(id)s, %(run_id)s, %(step_id)s, %(kind)s, %(event_name)s, %(expression)s, %(event)s,
    %(correlation_id)s, %(expires_at)s, %(created_at)s, %(timeout_item_id)s, %(step_name)s
);

-- name: pauses_for_event
SELECT id, run_id, step_id, kind, event_name, expression, event, correlation_id, expires_at, created_at,
       timeout_item_id, step_name
FROM pauses
WHERE event_name = %(event_name)s AND kind IN ('wait', 'cancel')
ORDER BY id;

-- name: pause_by_correlation
SELECT id, run_id, step_id, kind, event_name, expression, event, correlation_id, expires_at, created_at,
       timeout_item_id, step_name
FROM pauses
WHERE correlation_id = %(correlation_id)s;

-- name: select_pause
SELECT id, run_id, step_id, kind, event_name, expression, event, correlation_id, expires_at, created_at,
       timeout_item_id, step_name
FROM pauses
WHERE id = %(id)s;

-- name: delete_pause
DELETE FROM pauses
WHERE id = %(id)s;

-- name: delete_run_pauses
DELETE FROM pauses
WHERE run_id = %(run_id)s;

-- name: upsert_function
INSERT INTO functions (id, app_id, name, config, updated_at)
VALUES (%(id)s, %(app_id)s, %(name)s, %(config)s, %(updated_at)s)
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
WHERE function_id = %(function_id)s;

-- name: upsert_cron
INSERT INTO crons (function_id, schedule, next_fire_at)
VALUES (%(function_id)s, %(schedule)s, %(next_fire_at)s)
ON CONFLICT (function_id) DO UPDATE
SET schedule = excluded.schedule,
    next_fire_at = excluded.next_fire_at;

-- name: delete_crons_except
-- The cron rows of the app's functions (known from the functions table, since a composite
-- function id cannot be split reliably when app ids contain '-') minus the ones kept.
DELETE FROM crons
WHERE function_id IN (SELECT id FROM functions WHERE app_id = %(app_id)s)
  AND NOT (function_id = ANY(%(function_ids)s::text[]));

-- name: advance_cron
UPDATE crons
SET next_fire_at = %(new_next)s
WHERE function_id = %(function_id)s AND next_fire_at = %(expected_next)s;

-- name: claim_items
-- One statement. The inner query walks queue_ready from the oldest ready (or lease-expired)
-- item, skipping rows another claimer has locked, and collects the ids in claim order into
-- one array; the update then reaches exactly those rows through the primary key. Going
-- through a one-row array keeps the plan an index lookup even when PostgreSQL switches to
-- a generic plan for this prepared statement (where a join on the picked rows would hash
-- the whole queue). rank is the position in claim order: RETURNING order is arbitrary.
WITH picked AS (
    SELECT array_agg(id ORDER BY available_at, id) AS ids,
           array_agg(available_at ORDER BY available_at, id) AS ats
    FROM (
        SELECT id, available_at
        FROM queue
        WHERE available_at <= %(now)s
        ORDER BY available_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS ready
)
UPDATE queue
SET available_at = %(lease_until)s,
    claims = queue.claims + 1,
    slot = FALSE
FROM picked
WHERE queue.id = ANY(picked.ids)
RETURNING queue.id, queue.run_id, queue.kind, queue.step_id, queue.attempt, queue.available_at,
          queue.claims, queue.payload, queue.created_at, array_position(picked.ids, queue.id) AS rank,
          queue.ckey1, queue.climit1, queue.ckey2, queue.climit2,
          picked.ats[array_position(picked.ids, queue.id)] AS ready_at;

-- The claim leases every item it picks with slot = FALSE (a tentative lease). Items under a
-- concurrency limit (ckey1 set, kind discover or step) are then admitted (slot = TRUE) or
-- parked by the store, holding the keys' locks: see admit_items and park_items.

-- name: extend_lease
UPDATE queue
SET available_at = %(lease_until)s
FROM unnest(%(ids)s::text[], %(claims)s::integer[]) AS held (id, claims)
WHERE queue.id = held.id AND queue.claims = held.claims
RETURNING queue.id;

-- name: next_available_at
SELECT min(available_at) AS available_at
FROM queue;

-- name: due_crons
SELECT function_id, schedule, next_fire_at
FROM crons
WHERE next_fire_at <= %(now)s
ORDER BY next_fire_at, function_id;

-- name: select_steps
SELECT run_id, step_id, name, kind, result, seq, attempts, started_at, ended_at
FROM steps
WHERE run_id = %(run_id)s
ORDER BY seq, step_id;

-- name: select_event
SELECT internal_id, id, name, data, user_data, v, ts, received_at
FROM events
WHERE internal_id = %(internal_id)s;

-- name: runs_for_event
SELECT id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
       pending, disable_immediate, request_version, step_count, correlation_id, task_id
FROM runs
WHERE event_id = %(event_id)s
ORDER BY id;

-- name: count_queue
SELECT count(*) AS count
FROM queue;

-- name: select_migrations
SELECT version, name, applied_at
FROM schema_migrations
ORDER BY version;

-- name: insert_migration
INSERT INTO schema_migrations (version, name, applied_at)
VALUES (%(version)s, %(name)s, %(applied_at)s);

-- name: upsert_app
INSERT INTO apps (id, url, framework, sdk, checksum, synced_at, error)
VALUES (%(id)s, %(url)s, %(framework)s, %(sdk)s, %(checksum)s, %(synced_at)s, %(error)s)
ON CONFLICT (id) DO UPDATE
SET url = excluded.url, framework = excluded.framework, sdk = excluded.sdk, checksum = excluded.checksum,
    synced_at = excluded.synced_at, error = excluded.error;

-- name: select_apps
SELECT id, url, framework, sdk, checksum, synced_at, error FROM apps ORDER BY id;

-- name: select_app
SELECT id, url, framework, sdk, checksum, synced_at, error FROM apps WHERE id = %(id)s;

-- name: select_functions
SELECT id, app_id, name, config, updated_at, version FROM functions ORDER BY id;

-- name: functions_fingerprint
-- Changes whenever a function is synced, changed or removed (records.FunctionsFingerprint): the
-- aggregate of the functions table, kept in one row by triggers (migration 0013).
SELECT functions, latest, versions FROM functions_summary;

-- name: delete_functions_except
DELETE FROM functions
WHERE app_id = %(app_id)s AND NOT (id = ANY(%(function_ids)s::text[]));

-- name: list_runs
-- The read API's pages, newest first. %(lower)s (inclusive) and %(upper)s (exclusive) bound
-- the id, from the cursor and the creation-time window (storage.records.IdRange). Each filter
-- combination has its own query, shaped so that exactly one index both bounds the scan and
-- gives the order, and the scan stops at the limit: this one the primary key, the next ones
-- runs_by_function, runs_by_status, runs_by_function_status and runs_by_event. The filtered
-- ones compare rows, as in (function_id, id) < (fn, upper), and order by every column of
-- their index: with a plain function_id = fn and ORDER BY id, the primary key gives the order
-- too, and the planner may walk it backwards filtering rows, which reads the whole table when
-- the function has no recent runs. The store runs them unprepared, so that each is planned
-- for its values. (No placeholders in these comments: psycopg would bind them.)
SELECT id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
       pending, disable_immediate, request_version, step_count, correlation_id, task_id
FROM runs
WHERE id < %(upper)s AND id >= %(lower)s
ORDER BY id DESC
LIMIT %(limit)s;

-- name: list_runs_by_function
SELECT id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
       pending, disable_immediate, request_version, step_count, correlation_id, task_id
FROM runs
WHERE (function_id, id) < (%(function_id)s::text, %(upper)s::text)
  AND (function_id, id) >= (%(function_id)s::text, %(lower)s::text)
ORDER BY function_id DESC, id DESC
LIMIT %(limit)s;

-- name: list_runs_by_status
SELECT id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
       pending, disable_immediate, request_version, step_count, correlation_id, task_id
FROM runs
WHERE (status, id) < (%(status)s::text, %(upper)s::text)
  AND (status, id) >= (%(status)s::text, %(lower)s::text)
ORDER BY status DESC, id DESC
LIMIT %(limit)s;

-- name: list_runs_by_function_status
SELECT id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
       pending, disable_immediate, request_version, step_count, correlation_id, task_id
FROM runs
WHERE (function_id, status, id) < (%(function_id)s::text, %(status)s::text, %(upper)s::text)
  AND (function_id, status, id) >= (%(function_id)s::text, %(status)s::text, %(lower)s::text)
ORDER BY function_id DESC, status DESC, id DESC
LIMIT %(limit)s;

-- name: list_runs_by_event
-- An event starts a handful of runs: found through runs_by_event, the other filters checked on them.
SELECT id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
       pending, disable_immediate, request_version, step_count, correlation_id, task_id
FROM runs
WHERE event_id = %(event_id)s
  AND (%(function_id)s::text IS NULL OR function_id = %(function_id)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND id < %(upper)s AND id >= %(lower)s
ORDER BY id DESC
LIMIT %(limit)s;

-- name: list_events
-- Newest first by internal_id (a ULID), below the cursor %(upper)s: the primary key read backwards.
SELECT internal_id, id, name, data, user_data, v, ts, received_at
FROM events
WHERE internal_id < %(upper)s
ORDER BY internal_id DESC
LIMIT %(limit)s;

-- name: list_events_by_name
-- Rows compared for the same reason as list_runs_by_function: only events_by_name fits.
SELECT internal_id, id, name, data, user_data, v, ts, received_at
FROM events
WHERE (name, internal_id) < (%(name)s::text, %(upper)s::text)
  AND (name, internal_id) >= (%(name)s::text, '')
ORDER BY name DESC, internal_id DESC
LIMIT %(limit)s;

-- name: events_by_public_id
SELECT internal_id, id, name, data, user_data, v, ts, received_at
FROM events
WHERE id = %(id)s
ORDER BY internal_id DESC
LIMIT %(limit)s;

-- tasks

-- name: insert_task
-- An id already taken (a client retrying its enqueue) inserts nothing.
INSERT INTO tasks (
    id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
    started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
) VALUES (
    %(id)s, %(kind)s, %(owner)s, %(status)s, %(event_id)s, %(run_id)s, %(progress)s, %(message)s, %(result)s, %(error)s, %(created_at)s,
    %(updated_at)s, %(started_at)s, %(ended_at)s, %(pending_deadline)s, %(pending_timeout_ms)s, %(quota_feature)s,
    %(refund_on_failure)s, %(version)s
)
ON CONFLICT (id) DO NOTHING;

-- name: select_task
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE id = %(id)s;

-- name: lock_task_id
-- Held until commit: concurrent enqueues of one client-chosen id (a retry racing its first
-- attempt) run one after the other, and the later ones find the task the first one created.
SELECT pg_advisory_xact_lock(hashtextextended(%(id)s, 7428));

-- name: select_task_for_update
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE id = %(id)s
FOR UPDATE;

-- name: update_task
UPDATE tasks
SET status = %(status)s,
    run_id = %(run_id)s,
    progress = %(progress)s,
    message = %(message)s,
    result = %(result)s,
    error = %(error)s,
    updated_at = %(updated_at)s,
    started_at = %(started_at)s,
    ended_at = %(ended_at)s,
    pending_deadline = %(pending_deadline)s,
    version = version + 1
WHERE id = %(id)s;

-- name: start_task
UPDATE tasks
SET status = 'running', started_at = coalesce(started_at, %(now)s), updated_at = %(now)s, version = version + 1
WHERE id = %(id)s AND status = 'pending';

-- name: task_progress
-- Progress only moves forward, so a function replayed from the top cannot move it back; a repeat
-- of the last report changes nothing (no version bump, no stream frame).
UPDATE tasks
SET progress = %(progress)s, message = %(message)s, updated_at = %(now)s, version = version + 1
WHERE id = %(id)s AND status IN ('pending', 'running')
  AND (progress IS NULL OR progress < %(progress)s
       OR (progress = %(progress)s AND message IS DISTINCT FROM %(message)s));

-- name: due_pending_tasks
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE status = 'pending' AND pending_deadline <= %(now)s
ORDER BY pending_deadline
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: next_pending_deadline
SELECT min(pending_deadline) AS deadline FROM tasks WHERE status = 'pending';

-- name: list_tasks
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE id < %(upper)s
ORDER BY id DESC
LIMIT %(limit)s;

-- name: list_tasks_by_owner
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE owner = %(owner)s AND id < %(upper)s AND (%(kind)s::text IS NULL OR kind = %(kind)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: list_tasks_by_owner_status
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE owner = %(owner)s AND status = %(status)s AND id < %(upper)s AND (%(kind)s::text IS NULL OR kind = %(kind)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: list_tasks_by_kind
-- Without an owner, a kind's own index (tasks_by_kind) serves. With one, the owner's queries
-- check the kind on the owner's rows ("kind IS NULL OR ...", which no index serves).
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE kind = %(kind)s AND id < %(upper)s
ORDER BY id DESC
LIMIT %(limit)s;

-- name: list_tasks_by_kind_status
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE kind = %(kind)s AND status = %(status)s AND id < %(upper)s
ORDER BY id DESC
LIMIT %(limit)s;

-- name: list_tasks_by_status
SELECT id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
       started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
FROM tasks
WHERE status = %(status)s AND id < %(upper)s
ORDER BY id DESC
LIMIT %(limit)s;

-- name: lock_quota
-- Serialises quota checks of one (feature, owner) across transactions and servers until commit,
-- so concurrent enqueues can never both take the last use.
SELECT pg_advisory_xact_lock(hashtextextended(%(feature)s || chr(31) || %(owner)s, 7427));

-- name: count_quota_uses
SELECT count(*) AS count, min(used_at) AS oldest
FROM quota_uses
WHERE feature = %(feature)s AND owner = %(owner)s AND used_at > %(since)s;

-- name: insert_quota_use
-- expires_at: as stepline_create_task writes it (migration 0012), the use's time plus its window.
INSERT INTO quota_uses (feature, owner, task_id, used_at, expires_at)
VALUES (%(feature)s, %(owner)s, %(task_id)s, %(used_at)s, %(expires_at)s);

-- name: delete_quota_uses
DELETE FROM quota_uses WHERE task_id = %(task_id)s;
-- name: lock_flow_key
-- The flow-control row of (function, kind, key), created empty if missing, and row-locked
-- (the no-op update takes the lock) until the transaction ends: servers deciding for the
-- same key queue up here.
INSERT INTO flow_keys (function_id, kind, key)
VALUES (%(function_id)s, %(kind)s, %(key)s)
ON CONFLICT (function_id, kind, key) DO UPDATE SET kind = excluded.kind
RETURNING function_id, kind, key, run_id, item_id, size, opened_at, due_at;

-- name: update_flow_key
UPDATE flow_keys
SET run_id = %(run_id)s, item_id = %(item_id)s, size = %(size)s, opened_at = %(opened_at)s, due_at = %(due_at)s
WHERE function_id = %(function_id)s AND kind = %(kind)s AND key = %(key)s;

-- name: set_run_events
UPDATE runs SET events = %(events)s WHERE id = %(id)s;
-- name: runs_started_per_minute
-- The dashboard's overview. Ids are ULIDs, so runs made since the lower bound are one
-- primary-key range.
SELECT created_at / 60000 * 60000 AS minute, 'started' AS what, count(*) AS count
FROM runs
WHERE id >= %(lower)s
GROUP BY created_at / 60000;

-- name: runs_ended_per_minute
SELECT ended_at / 60000 * 60000 AS minute, status AS what, count(*) AS count
FROM runs
WHERE ended_at >= %(since)s
GROUP BY ended_at / 60000, status;

-- name: step_timings_since
-- Only step.run results: sleeps and waits last as long as they were asked to.
SELECT ended_at, ended_at - started_at AS duration
FROM steps
WHERE ended_at >= %(since)s AND kind = 'run'
ORDER BY ended_at DESC
LIMIT %(limit)s;

-- name: ready_queue
-- Items claimable now (ready, or with an expired lease): a range of queue_ready.
SELECT count(*) AS ready, min(available_at) AS oldest_ready_at
FROM queue
WHERE available_at <= %(now)s;

-- name: run_pauses
-- What a run waits on (the dashboard's run page), through pauses_by_run.
SELECT id, run_id, step_id, kind, event_name, expression, event, correlation_id, expires_at, created_at,
       timeout_item_id, step_name
FROM pauses
WHERE run_id = %(run_id)s
ORDER BY id;

-- name: run_queue_items
-- A run's queued work (sleeps, retries, next call), through queue_by_run.
SELECT id, run_id, kind, step_id, attempt, available_at, claims, payload, created_at
FROM queue
WHERE run_id = %(run_id)s
ORDER BY id;
-- Claim-time flow control (concurrency slots, parking, throttle). The plans are in
-- docs/internals/flow-control.md.

-- name: renew_item
-- reschedule_item for a holder that goes on running the item (a checkpoint): new token and
-- lease, but the concurrency slot stays held.
UPDATE queue
SET kind = %(kind)s,
    step_id = %(step_id)s,
    attempt = %(attempt)s,
    available_at = %(available_at)s,
    payload = %(payload)s,
    claims = claims + 1
WHERE id = %(id)s AND claims = %(claims)s;

-- name: insert_run_concurrency
INSERT INTO run_concurrency (run_id, ckey1, climit1, ckey2, climit2)
VALUES (%(run_id)s, %(first_key)s, %(first_limit)s, %(second_key)s, %(second_limit)s);

-- name: count_slots
-- Slots in use per key: admitted items whose lease has not expired, read from the partial
-- indexes queue_slots1/2, which hold only slot-holding items. Run holding the keys' locks.
SELECT k AS key,
       (SELECT count(*) FROM queue WHERE ckey1 = k AND slot AND available_at > %(now)s)
     + (SELECT count(*) FROM queue WHERE ckey2 = k AND slot AND ckey2 IS NOT NULL AND available_at > %(now)s)
       AS used
FROM unnest(%(keys)s::text[]) AS k;

-- name: admit_items
-- Tentatively claimed items that fit their keys' limits now hold a slot.
UPDATE queue
SET slot = TRUE
FROM unnest(%(ids)s::text[], %(claims)s::integer[]) AS held (id, claims)
WHERE queue.id = held.id AND queue.claims = held.claims
RETURNING queue.id;

-- name: park_items
-- Tentatively claimed items blocked by a key at capacity leave the ready range (available_at
-- goes to the far-future sentinel given as parked) and wait on that key's parked list
-- (parked_on), remembering their ready time in parked_at.
UPDATE queue
SET available_at = %(parked)s,
    parked_at = held.ready_at,
    parked_on = held.blocking_key
FROM unnest(%(ids)s::text[], %(claims)s::integer[], %(ready_ats)s::bigint[], %(blocking_keys)s::text[])
     AS held (id, claims, ready_at, blocking_key)
WHERE queue.id = held.id AND queue.claims = held.claims;

-- name: return_items
-- Tentatively claimed items the claimer has no room for go back, ready as they were.
UPDATE queue
SET available_at = held.ready_at
FROM unnest(%(ids)s::text[], %(claims)s::integer[], %(ready_ats)s::bigint[]) AS held (id, claims, ready_at)
WHERE queue.id = held.id AND queue.claims = held.claims;

-- name: unpark_items
-- A slot of the key was freed: the oldest items parked on the key become ready again at their
-- old ready time (so they keep their place). Run holding the key's lock. SKIP LOCKED: a row
-- locked meanwhile is being deleted (its run cancelled) and needs no unparking.
WITH parked AS (
    SELECT id
    FROM queue
    WHERE parked_on = %(key)s
    ORDER BY parked_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE queue
SET available_at = queue.parked_at,
    parked_at = NULL,
    parked_on = NULL
FROM parked
WHERE queue.id = parked.id;

-- name: advance_throttle
-- GCRA: one more start for the key. The row lock of the upsert serialises servers; the
-- store derives the start time from the returned theoretical arrival time.
INSERT INTO throttle_keys (key, tat)
VALUES (%(key)s, %(now)s + %(interval)s)
ON CONFLICT (key) DO UPDATE
SET tat = GREATEST(throttle_keys.tat, %(now)s) + %(interval)s
RETURNING tat;

-- name: select_task_changes
-- The task as it was after each change newer than the version a stream last sent, oldest first.
SELECT task FROM task_changes
WHERE task_id = %(task_id)s AND version > %(after)s
ORDER BY version
LIMIT %(limit)s;

-- name: delete_task_changes
DELETE FROM task_changes WHERE changed_at < %(before)s;

-- Retention (engine/retention.py, storage/purge.py): finished history older than the retention
-- period, deleted one batch per transaction. The expired_* queries lock a batch of doomed rows
-- with SKIP LOCKED, so servers purging at once take disjoint batches; the delete_* queries
-- delete by those ids. The statuses are the terminal ones of records.RunStatus and
-- records.TaskStatus.

-- name: expired_runs
-- Runs that ended before the cutoff, oldest first (runs_by_ended), except those whose task has
-- not ended (it may still read its run).
SELECT id
FROM runs
WHERE ended_at < %(before)s AND status IN ('completed', 'failed', 'cancelled', 'skipped')
  AND (task_id IS NULL
       OR NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.id = runs.task_id AND tasks.status IN ('pending', 'running')))
ORDER BY ended_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: delete_runs_steps
DELETE FROM steps WHERE run_id = ANY(%(ids)s::text[]);

-- name: delete_runs_items
-- Leftovers only: a run's items are deleted when it ends, but for those a plain completed run
-- leaves. Their leases expired long ago, so they hold no concurrency slot.
DELETE FROM queue WHERE run_id = ANY(%(ids)s::text[]);

-- name: delete_runs_pauses
DELETE FROM pauses WHERE run_id = ANY(%(ids)s::text[]);

-- name: delete_runs
-- run_concurrency rows go with their runs (ON DELETE CASCADE).
DELETE FROM runs WHERE id = ANY(%(ids)s::text[]);

-- name: expired_tasks
-- Tasks that ended before the cutoff, oldest first (tasks_by_ended), except those a run that has
-- not ended still drives (an on_failure handler, through runs_by_task).
SELECT id
FROM tasks
WHERE ended_at < %(before)s AND ended_at IS NOT NULL AND status IN ('complete', 'failed', 'cancelled')
  AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.task_id = tasks.id AND runs.status IN ('queued', 'running'))
ORDER BY ended_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: delete_tasks_changes
DELETE FROM task_changes WHERE task_id = ANY(%(ids)s::text[]);

-- name: delete_tasks
-- Quota uses stay: they count until their own window passes (purge_quota_uses).
DELETE FROM tasks WHERE id = ANY(%(ids)s::text[]);

-- name: expired_events
-- Events received before the cutoff that no remaining run refers to (runs_by_event) and no task
-- that has not ended does. An internal_id is a ULID made on receipt: before_id (the smallest
-- ULID of the cutoff) bounds a primary-key range, read in order until the batch is full. OFFSET 0
-- keeps the run check a probe of runs_by_event per event: as an anti join, the planner hashes
-- every run and sorts every old event for each batch. A task's event is received when the task
-- is created, so only tasks created before the cutoff can hold such an event: that set is read
-- once per batch (a hashed subplan).
SELECT internal_id AS id
FROM events
WHERE internal_id < %(before_id)s AND received_at < %(before)s
  AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.event_id = events.internal_id OFFSET 0)
  AND internal_id NOT IN (
      SELECT event_id FROM tasks WHERE status IN ('pending', 'running') AND created_at < %(before)s
  )
ORDER BY internal_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: delete_events
DELETE FROM events WHERE internal_id = ANY(%(ids)s::text[]);

-- name: purge_idempotency_keys
-- Reservations whose window passed mean nothing any more (a claim takes them over; one that
-- waits on a row locked here inserts afresh once it is gone). The rows are deleted by ctid (a
-- TID scan; a locked row cannot move): matched by key, the planner scans the whole table.
DELETE FROM idempotency_keys
WHERE ctid = ANY(ARRAY(
    SELECT ctid
    FROM idempotency_keys
    WHERE expires_at <= %(now)s
    ORDER BY expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
));

-- name: purge_quota_uses
-- A use past its own window can count toward no later check made with that window; keeping it
-- for the retention period too covers a window lengthened up to that period. By ctid, as above.
DELETE FROM quota_uses
WHERE ctid = ANY(ARRAY(
    SELECT ctid
    FROM quota_uses
    WHERE expires_at <= %(now)s AND used_at < %(before)s
    ORDER BY expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
));

-- Flow-control state (flow_keys, throttle_keys) is not history: retention deletes a row once it
-- is equivalent to no row at all, whatever the period. Ingest upserts a missing row empty (zeros
-- and NULLs) and decides from it as from any other, so deleting such a row changes no later
-- decision. The conditions below say when that holds, per kind (engine/flow_ingest.py,
-- engine/throttle.py); time only moves forward and a run's status only moves from queued to
-- running to a terminal one, so a row that qualifies now qualifies at every later time.
--
-- Ingest locks these rows with upserts, and servers purge side by side: a batch locks its rows
-- FOR UPDATE SKIP LOCKED (a row an ingest holds is skipped; an upsert waiting on a row locked
-- here inserts a fresh, empty row once it is gone) and deletes them by ctid, as the purges
-- above do. The ctid is what keeps a live row: a row an ingest changed after this statement's
-- snapshot is locked in its newest version, which the condition is re-checked on with the old
-- snapshot (a singleton's new run, inserted by that ingest, is invisible to it, so the row looks
-- free), and the newest version's ctid is returned: the delete, on the same snapshot, cannot see
-- that version and leaves the row. Matched by key instead, the delete would find the old
-- version, follow it to the new one, pass the same stale re-check and delete a live row. A row
-- nobody changed is deleted as the select found it (it stays locked): no second check needed.
--
-- No index serves these: an index on due_at or tat would cost every rate-limited, debounced,
-- batched or throttled run one more index write (the column changes on each use, so the update
-- could no longer be HOT), while a pass reads the table once a minute, stopping at the batch's
-- limit. With retention on the table holds only keys in use: rate-limit and throttle keys for
-- about a period after their last run, singletons while their run lasts, debounce and batch
-- keys while their window is open. Measured on 2 cores: a batch finding nothing in 1.1 million
-- live keys (100,000 of them singletons holding a run) took 0.35-0.6 s; a backlog of a million
-- spent keys behind 100,000 live ones went in 2,001 batches in 3.7 s, none over 54 ms.

-- name: purge_flow_keys
-- rate_limit: the GCRA arrival time has passed (due_at <= now): the next run reckons from
--   max(due_at, now) = now, as from an empty row (due_at 0).
-- singleton: no run holds the key, or its run ended or is gone: the next run goes ahead and
--   takes the key either way.
-- debounce, batch: no pending run or open batch: none was opened, or its window closed (due_at
--   <= now), or its run is no longer queued (it started, was skipped or cancelled). The next
--   event then opens a new one and overwrites every field, as on an empty row.
-- Other kinds (none yet) stay. OFFSET 0 keeps each run check a probe of runs' primary key, for
-- the few rows that hold a run: without it the planner hashes every queued or running run, reading
-- the whole runs table, for each batch.
DELETE FROM flow_keys
WHERE ctid = ANY(ARRAY(
    SELECT ctid
    FROM flow_keys
    WHERE (kind = 'rate_limit' AND due_at <= %(now)s)
       OR (kind = 'singleton'
           AND (run_id IS NULL
                OR NOT EXISTS (SELECT 1 FROM runs
                               WHERE runs.id = flow_keys.run_id AND runs.status IN ('queued', 'running') OFFSET 0)))
       OR (kind IN ('debounce', 'batch')
           AND (run_id IS NULL OR due_at <= %(now)s
                OR NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = flow_keys.run_id AND runs.status = 'queued' OFFSET 0)))
    LIMIT %(limit)s
    FOR UPDATE OF flow_keys SKIP LOCKED
));

-- name: purge_throttle_keys
-- A theoretical arrival time that has passed (tat <= now): advance_throttle sets
-- max(tat, now) + interval = now + interval, what it inserts for a missing key, and the start
-- time (burst included) is reckoned from that new tat alone. Locked and deleted by ctid, as above.
DELETE FROM throttle_keys
WHERE ctid = ANY(ARRAY(
    SELECT ctid
    FROM throttle_keys
    WHERE tat <= %(now)s
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
));
