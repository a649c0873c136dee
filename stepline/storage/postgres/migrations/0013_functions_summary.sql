-- The fingerprint of the synced functions (records.FunctionsFingerprint: how many, the latest
-- sync, the sum of their versions) is kept in one row, so that checking a task plan against it
-- costs one primary-key read instead of an aggregate over every function: that check runs on
-- every enqueue, and with a few hundred functions the scan cost more than the rest of the check.
-- The twin of sqlite/migrations/0013_functions_summary.sql.
--
-- A deferred constraint trigger recomputes the row when a transaction that changed `functions`
-- commits. At commit it runs after every statement of the transaction, and it takes the row's
-- lock before it reads the table, so two syncs committing at once take turns and the second
-- counts the first's functions (under READ COMMITTED each statement of the trigger function
-- reads with a new snapshot, taken once the lock is held). The trigger fires once per changed
-- row; a setting local to the transaction lets only the first firing recompute.
CREATE TABLE functions_summary (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    functions BIGINT NOT NULL,
    latest    BIGINT NOT NULL,
    versions  BIGINT NOT NULL
);
INSERT INTO functions_summary (id, functions, latest, versions)
SELECT 1, count(*), coalesce(max(updated_at), 0), coalesce(sum(version), 0) FROM functions;

CREATE FUNCTION stepline_summarise_functions() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('stepline.functions_summarised', TRUE) IS DISTINCT FROM pg_current_xact_id()::TEXT THEN
        PERFORM set_config('stepline.functions_summarised', pg_current_xact_id()::TEXT, TRUE);
        PERFORM 1 FROM functions_summary WHERE id = 1 FOR UPDATE;
        UPDATE functions_summary
        SET (functions, latest, versions) = (
            SELECT count(*), coalesce(max(updated_at), 0), coalesce(sum(version), 0) FROM functions
        )
        WHERE id = 1;
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER functions_summarised
AFTER INSERT OR UPDATE OR DELETE ON functions
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION stepline_summarise_functions();

-- stepline_create_task(plan) reads the fingerprint from that row. Otherwise the function of
-- migration 0012, unchanged (its header and 0009's say what it matches in queries.sql).
CREATE OR REPLACE FUNCTION stepline_create_task(plan JSONB) RETURNS JSONB
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    task_doc JSONB := plan -> 'task';
    task_key TEXT := plan -> 'task' ->> 'id';
    quota JSONB := plan -> 'quota';
    event_doc JSONB := plan -> 'event';
    now_ms BIGINT := (plan ->> 'now')::BIGINT;
    existing tasks%ROWTYPE;
    used BIGINT;
    oldest BIGINT;
    planned JSONB;
    run_doc JSONB;
    item_doc JSONB;
    claimed INTEGER;
    started TEXT[] := '{}';
    planned_from JSONB := plan -> 'functions';
    functions_now BIGINT;
    latest_now BIGINT;
    versions_now BIGINT;
BEGIN
    IF planned_from IS NOT NULL AND planned_from <> 'null'::JSONB THEN
        SELECT functions, latest, versions
        INTO functions_now, latest_now, versions_now
        FROM functions_summary;
        IF functions_now <> (planned_from ->> 'count')::BIGINT
           OR latest_now <> (planned_from ->> 'latest')::BIGINT
           OR versions_now <> (planned_from ->> 'versions')::BIGINT THEN
            RETURN jsonb_build_object('stale', TRUE);
        END IF;
    END IF;
    IF (plan ->> 'serialise')::BOOLEAN THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(task_key, 7428));
    END IF;
    SELECT * INTO existing FROM tasks WHERE id = task_key FOR UPDATE;
    IF FOUND THEN
        RETURN jsonb_build_object('existing', to_jsonb(existing));
    END IF;

    IF EXISTS (SELECT 1 FROM pauses WHERE event_name = event_doc ->> 'name' AND kind IN ('wait', 'cancel')) THEN
        RETURN jsonb_build_object('listeners', TRUE);
    END IF;

    IF quota IS NOT NULL AND quota <> 'null'::JSONB THEN
        PERFORM pg_advisory_xact_lock(hashtextextended((quota ->> 'feature') || chr(31) || (quota ->> 'owner'), 7427));
        SELECT count(*), min(used_at) INTO used, oldest
        FROM quota_uses
        WHERE feature = quota ->> 'feature' AND owner = quota ->> 'owner'
          AND used_at > now_ms - (quota ->> 'window_ms')::BIGINT;
        IF used >= (quota ->> 'limit')::BIGINT THEN
            RETURN jsonb_build_object(
                'quota_wait_ms',
                CASE WHEN oldest IS NULL THEN (quota ->> 'window_ms')::BIGINT
                     ELSE greatest(1, oldest + (quota ->> 'window_ms')::BIGINT - now_ms) END
            );
        END IF;
    END IF;

    FOR planned IN SELECT value FROM jsonb_array_elements(plan -> 'runs') LOOP
        run_doc := planned -> 'run';
        item_doc := planned -> 'item';
        INSERT INTO idempotency_keys (function_id, key, run_id, expires_at)
        VALUES (run_doc ->> 'function_id', planned ->> 'key', run_doc ->> 'id', (planned ->> 'expires_at')::BIGINT)
        ON CONFLICT (function_id, key) DO UPDATE
        SET run_id = excluded.run_id, expires_at = excluded.expires_at
        WHERE idempotency_keys.expires_at <= now_ms;
        GET DIAGNOSTICS claimed = ROW_COUNT;
        CONTINUE WHEN claimed = 0;
        INSERT INTO runs (
            id, function_id, event_id, events, status, created_at, started_at, ended_at, output, error,
            pending, disable_immediate, request_version, step_count, correlation_id, task_id
        ) VALUES (
            run_doc ->> 'id', run_doc ->> 'function_id', run_doc ->> 'event_id', run_doc -> 'events',
            run_doc ->> 'status', (run_doc ->> 'created_at')::BIGINT, (run_doc ->> 'started_at')::BIGINT,
            (run_doc ->> 'ended_at')::BIGINT, nullif(run_doc -> 'output', 'null'::JSONB),
            nullif(run_doc -> 'error', 'null'::JSONB), run_doc -> 'pending',
            (run_doc ->> 'disable_immediate')::BOOLEAN, (run_doc ->> 'request_version')::INTEGER,
            (run_doc ->> 'step_count')::INTEGER, run_doc ->> 'correlation_id',
            -- the first run started drives the task
            CASE WHEN cardinality(started) = 0 THEN task_key END
        );
        INSERT INTO queue (id, run_id, kind, step_id, attempt, available_at, claims, payload, created_at)
        VALUES (
            item_doc ->> 'id', item_doc ->> 'run_id', item_doc ->> 'kind', item_doc ->> 'step_id',
            (item_doc ->> 'attempt')::INTEGER, (item_doc ->> 'available_at')::BIGINT,
            (item_doc ->> 'claims')::INTEGER, item_doc -> 'payload', (item_doc ->> 'created_at')::BIGINT
        );
        started := started || (run_doc ->> 'id');
    END LOOP;

    IF jsonb_array_length(plan -> 'runs') > 0 AND cardinality(started) = 0 THEN
        -- every key was taken: the claims wrote nothing, and nothing else is written
        RETURN jsonb_build_object('started', to_jsonb(started));
    END IF;

    -- Written once the task is certain, so that every refusal above leaves no trace even
    -- when the call is its own transaction.
    IF quota IS NOT NULL AND quota <> 'null'::JSONB THEN
        INSERT INTO quota_uses (feature, owner, task_id, used_at, expires_at)
        VALUES (quota ->> 'feature', quota ->> 'owner', task_key, now_ms, now_ms + (quota ->> 'window_ms')::BIGINT);
    END IF;
    INSERT INTO events (internal_id, id, name, data, user_data, v, ts, received_at)
    VALUES (
        event_doc ->> 'internal_id', event_doc ->> 'id', event_doc ->> 'name', event_doc -> 'data',
        event_doc -> 'user_data', event_doc ->> 'v', (event_doc ->> 'ts')::BIGINT,
        (event_doc ->> 'received_at')::BIGINT
    );
    INSERT INTO tasks (
        id, kind, owner, status, event_id, run_id, progress, message, result, error, created_at, updated_at,
        started_at, ended_at, pending_deadline, pending_timeout_ms, quota_feature, refund_on_failure, version
    ) VALUES (
        task_key, task_doc ->> 'kind', task_doc ->> 'owner', task_doc ->> 'status', task_doc ->> 'event_id',
        started[1], (task_doc ->> 'progress')::DOUBLE PRECISION, task_doc ->> 'message',
        nullif(task_doc -> 'result', 'null'::JSONB), nullif(task_doc -> 'error', 'null'::JSONB),
        (task_doc ->> 'created_at')::BIGINT, (task_doc ->> 'updated_at')::BIGINT,
        (task_doc ->> 'started_at')::BIGINT, (task_doc ->> 'ended_at')::BIGINT,
        (task_doc ->> 'pending_deadline')::BIGINT, (task_doc ->> 'pending_timeout_ms')::BIGINT,
        task_doc ->> 'quota_feature', (task_doc ->> 'refund_on_failure')::BOOLEAN,
        (task_doc ->> 'version')::INTEGER
    );  -- an id taken meanwhile (impossible under its lock) fails the call: nothing is written

    IF cardinality(started) > 0 THEN
        PERFORM pg_notify('stepline_work', '');  -- delivered at commit, as the store's NOTIFY
    END IF;
    RETURN jsonb_build_object('started', to_jsonb(started));
END;
$$;
