"""The retention verbs (``Store.purge_*``) on each backend: what goes, what stays, batches."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import sqlite3
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from stepline.engine import clock as clock_
from stepline.engine import retention
from stepline.storage import open_store, records, store
from tests.storage.test_store import make_event, make_item, make_pause, make_run, make_step

DAY = 86_400_000
HOUR = 3_600_000
NOW = 1_750_000_000_000
BEFORE = NOW - 7 * DAY
"""The cutoff of a 7-day retention at ``NOW``."""

_serial = itertools.count(1)
FINISHED = (
    records.RunStatus.COMPLETED,
    records.RunStatus.FAILED,
    records.RunStatus.CANCELLED,
    records.RunStatus.SKIPPED,
)


def ulid_at(millis: int) -> str:
    """A ULID-shaped id made at ``millis`` (what the engine gives events and runs)."""
    return records.IdRange.floor(millis)[:10] + f"{next(_serial):016d}"


def ended_run(
    ended_at: int, status: records.RunStatus = records.RunStatus.COMPLETED, **changes: Any
) -> records.RunRecord:
    return make_run(
        id=ulid_at(ended_at - HOUR),
        status=status,
        created_at=ended_at - HOUR,
        started_at=ended_at - HOUR,
        ended_at=ended_at,
        **changes,
    )


def make_task(created_at: int, event_id: str, **changes: Any) -> records.TaskRecord:
    task = records.TaskRecord(
        id=ulid_at(created_at),
        kind="tailor",
        owner="alice",
        status=records.TaskStatus.PENDING,
        event_id=event_id,
        created_at=created_at,
        updated_at=created_at,
        pending_deadline=created_at + 600_000,
        pending_timeout_ms=600_000,
    )
    return dataclasses.replace(task, **changes)


async def count(database_url: str, table: str, where: str = "TRUE", *params: object) -> int:
    """Rows of ``table`` matching ``where`` (``?`` placeholders), read on a connection of its own."""
    query = f"SELECT count(*) FROM {table} WHERE {where}"
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            return int(conn.execute(query, params).fetchone()[0])
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(sql.SQL(query.replace("?", "%s")), params)
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])


async def insert(db: store.Store, *rows: records.EventRecord | records.RunRecord | records.TaskRecord) -> None:
    async with db.transaction() as tx:
        for row in rows:
            if isinstance(row, records.EventRecord):
                await tx.insert_event(row)
            elif isinstance(row, records.RunRecord):
                await tx.insert_run(row)
            else:
                assert await tx.insert_task(row)


async def purge_all(db: store.Store, verb: str, *args: int, limit: int = 100) -> dict[str, int]:
    """Call ``db.<verb>(*args, limit)`` until a batch comes back short; the rows per table."""
    totals: dict[str, int] = {}
    while True:
        purged: records.Purged = await getattr(db, verb)(*args, limit)
        for table, deleted in purged.rows.items():
            totals[table] = totals.get(table, 0) + deleted
        if not purged.full:
            return totals


async def test_old_finished_runs_go_with_their_steps_items_pauses_and_keys(db: store.Store, database_url: str) -> None:
    old = [ended_run(NOW - 8 * DAY, status) for status in FINISHED]
    async with db.transaction() as tx:
        for run in old:
            await tx.insert_run(run)
            await tx.record_step(make_step(run.id, "s1", 0))
            await tx.record_step(make_step(run.id, "s2", 1))
        await tx.insert_run_concurrency([records.RunConcurrency(old[0].id, "fn:key", 2)])
        await tx.enqueue(make_item(NOW + DAY, run_id=old[0].id))  # a leftover timer
        await tx.insert_pause(make_pause(run_id=old[1].id, kind=records.PauseKind.CANCEL))

    purged = await purge_all(db, "purge_runs", BEFORE)

    assert purged == {"runs": 4, "steps": 8, "queue": 1, "pauses": 1}
    for run in old:
        assert await db.get_run(run.id) is None
        assert await db.list_steps(run.id) == []
    assert await count(database_url, "run_concurrency") == 0
    assert await count(database_url, "queue") == 0
    assert await count(database_url, "pauses") == 0


async def test_recent_and_unfinished_runs_stay_with_everything_they_have(db: store.Store) -> None:
    recent = ended_run(NOW - 6 * DAY)
    just_before_cutoff = ended_run(BEFORE)  # ended exactly at the cutoff: not older than the period
    running = make_run(
        id=ulid_at(NOW - 30 * DAY),
        status=records.RunStatus.RUNNING,
        created_at=NOW - 30 * DAY,
        started_at=NOW - 30 * DAY,
    )
    queued = make_run(id=ulid_at(NOW - 30 * DAY), created_at=NOW - 30 * DAY)
    keep = [recent, just_before_cutoff, running, queued]
    async with db.transaction() as tx:
        for run in keep:
            await tx.insert_run(run)
            await tx.record_step(make_step(run.id, "s1", 0, started_at=NOW - 20 * DAY, ended_at=NOW - 20 * DAY))
        await tx.enqueue(make_item(NOW + 30 * DAY, run_id=running.id))  # a long sleep
        await tx.insert_pause(make_pause(run_id=running.id))

    assert await purge_all(db, "purge_runs", BEFORE) == {}

    for run in keep:
        assert await db.get_run(run.id) == run
        assert len(await db.list_steps(run.id)) == 1
    assert len(await db.run_queue_items(running.id)) == 1
    assert len(await db.run_pauses(running.id)) == 1


async def test_a_run_whose_task_has_not_ended_stays(db: store.Store) -> None:
    event = make_event(internal_id=ulid_at(NOW - 9 * DAY), received_at=NOW - 9 * DAY)
    task = make_task(NOW - 9 * DAY, event.internal_id, status=records.TaskStatus.RUNNING)
    failed = ended_run(NOW - 8 * DAY, records.RunStatus.FAILED, event_id=event.internal_id, task_id=task.id)
    await insert(db, event, failed, dataclasses.replace(task, run_id=failed.id))

    assert await purge_all(db, "purge_runs", BEFORE) == {}
    assert await db.get_run(failed.id) is not None


async def test_purging_runs_goes_batch_by_batch_until_none_is_left(db: store.Store) -> None:
    runs = [ended_run(NOW - 8 * DAY - index) for index in range(7)]
    await insert(db, *runs)

    first = await db.purge_runs(BEFORE, 3)
    # oldest first: runs[6] ended first
    assert [await db.get_run(run.id) is None for run in runs] == [False] * 4 + [True] * 3
    rest = [await db.purge_runs(BEFORE, 3) for _ in range(3)]

    batches = [first, *rest]
    assert [(batch.rows.get("runs", 0), batch.full) for batch in batches] == [
        (3, True),
        (3, True),
        (1, False),
        (0, False),
    ]
    assert await db.list_runs() == []


async def test_old_ended_tasks_go_with_their_changes_and_leave_their_quota_uses(
    db: store.Store, database_url: str
) -> None:
    event = make_event(internal_id=ulid_at(NOW - 9 * DAY), received_at=NOW - 9 * DAY)
    done = make_task(NOW - 9 * DAY, event.internal_id, quota_feature="tailor")
    await insert(db, event, done)
    async with db.transaction() as tx:
        quota = records.QuotaRequest("tailor", "alice", 5, 30 * DAY)
        assert await tx.consume_quota(quota, done.id, NOW - 9 * DAY) is None
        await tx.update_task(dataclasses.replace(done, status=records.TaskStatus.RUNNING, updated_at=NOW - 9 * DAY))
        ended = dataclasses.replace(done, status=records.TaskStatus.COMPLETE, ended_at=NOW - 8 * DAY, result={"ok": 1})
        await tx.update_task(ended)
    assert await count(database_url, "task_changes", "task_id = ?", done.id) == 2

    assert await purge_all(db, "purge_tasks", BEFORE) == {"tasks": 1, "task_changes": 2}

    assert await db.get_task(done.id) is None
    assert await count(database_url, "quota_uses", "task_id = ?", done.id) == 1


async def test_tasks_that_have_not_ended_ended_recently_or_drive_a_live_run_stay(db: store.Store) -> None:
    event = make_event(internal_id=ulid_at(NOW - 20 * DAY), received_at=NOW - 20 * DAY)
    pending = make_task(NOW - 20 * DAY, event.internal_id, pending_deadline=NOW + DAY)
    running = make_task(NOW - 20 * DAY, event.internal_id, status=records.TaskStatus.RUNNING)
    recent = make_task(NOW - 20 * DAY, event.internal_id, status=records.TaskStatus.FAILED, ended_at=NOW - DAY)
    failing = make_task(NOW - 20 * DAY, event.internal_id, status=records.TaskStatus.FAILED, ended_at=NOW - 9 * DAY)
    handler = make_run(
        id=ulid_at(NOW - 9 * DAY),
        status=records.RunStatus.RUNNING,
        event_id=event.internal_id,
        task_id=failing.id,  # an on_failure handler still running
    )
    await insert(db, event, pending, running, recent, failing, handler)

    assert await purge_all(db, "purge_tasks", BEFORE) == {}
    for task in (pending, running, recent, failing):
        assert await db.get_task(task.id) is not None


async def test_old_events_no_remaining_run_or_live_task_refers_to_go(db: store.Store) -> None:
    def old_event(days: int) -> records.EventRecord:
        return make_event(internal_id=ulid_at(NOW - days * DAY), received_at=NOW - days * DAY)

    orphan, of_recent_run, of_old_run, of_pending_task, of_ended_task = (old_event(days) for days in (9, 9, 9, 9, 9))
    recent = make_event(internal_id=ulid_at(NOW - DAY), received_at=NOW - DAY)
    recent_run = ended_run(NOW - DAY, event_id=of_recent_run.internal_id)
    old_run = ended_run(NOW - 8 * DAY, event_id=of_old_run.internal_id)
    pending = make_task(NOW - 9 * DAY, of_pending_task.internal_id, pending_deadline=NOW + DAY)
    ended = make_task(
        NOW - 9 * DAY, of_ended_task.internal_id, status=records.TaskStatus.CANCELLED, ended_at=NOW - 2 * DAY
    )
    await insert(db, orphan, of_recent_run, of_old_run, of_pending_task, of_ended_task, recent)
    await insert(db, recent_run, old_run, pending, ended)

    # The old run still refers to its event: it goes first, then its event with the others.
    assert await purge_all(db, "purge_events", BEFORE) == {"events": 2}
    assert await purge_all(db, "purge_runs", BEFORE) == {"runs": 1}
    assert await purge_all(db, "purge_events", BEFORE) == {"events": 1}

    for gone in (orphan, of_ended_task, of_old_run):
        assert await db.get_event(gone.internal_id) is None
    for kept in (of_recent_run, of_pending_task, recent):
        assert await db.get_event(kept.internal_id) == kept


async def test_expired_idempotency_keys_go_and_their_keys_can_be_claimed_again(db: store.Store) -> None:
    async with db.transaction() as tx:
        assert await tx.claim_idempotency_key("app-fn", "expired", "run-a", NOW - 2 * DAY, NOW - DAY)
        assert await tx.claim_idempotency_key("app-fn", "live", "run-b", NOW - 2 * DAY, NOW + DAY)

    assert await purge_all(db, "purge_idempotency_keys", NOW) == {"idempotency_keys": 1}

    async with db.transaction() as tx:
        assert await tx.claim_idempotency_key("app-fn", "expired", "run-c", NOW, NOW + DAY)
        assert not await tx.claim_idempotency_key("app-fn", "live", "run-d", NOW, NOW + DAY)


async def test_quota_uses_stay_until_their_own_window_has_passed(db: store.Store, database_url: str) -> None:
    month = records.QuotaRequest("report", "alice", 1, 30 * DAY)
    hourly = records.QuotaRequest("chat", "alice", 1, HOUR)
    async with db.transaction() as tx:
        assert await tx.consume_quota(month, "task-month", NOW - 10 * DAY) is None  # counts 20 more days
        assert await tx.consume_quota(hourly, "task-old", NOW - 8 * DAY) is None  # window and period passed
        assert await tx.consume_quota(hourly, "task-day", NOW - DAY) is None  # window passed, period not

    assert await purge_all(db, "purge_quota_uses", NOW, BEFORE) == {"quota_uses": 1}

    assert await count(database_url, "quota_uses", "task_id = ?", "task-old") == 0
    async with db.transaction() as tx:
        # The month's use still counts: a second use is refused until it is 30 days old.
        assert await tx.consume_quota(month, "task-again", NOW) == 20 * DAY


async def test_a_retention_pass_deletes_everything_expired_in_order(db: store.Store) -> None:
    event = make_event(internal_id=ulid_at(NOW - 9 * DAY), received_at=NOW - 9 * DAY)
    run = ended_run(NOW - 8 * DAY, event_id=event.internal_id)
    await insert(db, event, run)
    async with db.transaction() as tx:
        await tx.record_step(make_step(run.id, "s1", 0))

    deleted = await retention.Retention(db, clock_.FakeClock(NOW), retention.DEFAULT, run_batch=1, batch=1).purge()

    assert deleted == {"runs": 1, "steps": 1, "events": 1}
    assert await db.get_event(event.internal_id) is None


async def test_concurrent_passes_on_postgres_share_the_work_without_failing(postgres_url: str) -> None:
    first, second = await open_store(postgres_url), await open_store(postgres_url)
    try:
        runs = [ended_run(NOW - 8 * DAY - index) for index in range(300)]
        async with first.transaction() as tx:
            await tx.insert_runs(runs)
            for run in runs:
                await tx.record_step(make_step(run.id, "s1", 0))
                await tx.insert_event(make_event(internal_id=ulid_at(NOW - 9 * DAY), received_at=NOW - 9 * DAY))
                await tx.claim_idempotency_key("app-fn", run.id, run.id, NOW - 2 * DAY, NOW - DAY)
                await tx.advance_throttle(run.id, NOW - DAY, 1_000)
                row = await tx.lock_flow_key("app-fn", "rate_limit", run.id)
                row.due_at = NOW - DAY
                await tx.update_flow_key(row)

        passes = [
            retention.Retention(db, clock_.FakeClock(NOW), retention.DEFAULT, run_batch=7, batch=11).purge()
            for db in (first, second, first, second)
        ]
        results = await asyncio.gather(*passes)

        totals: dict[str, int] = {}
        for result in results:
            for table, deleted in result.items():
                totals[table] = totals.get(table, 0) + deleted
        assert totals == {
            "runs": 300,
            "steps": 300,
            "events": 300,
            "idempotency_keys": 300,
            "flow_keys": 300,
            "throttle_keys": 300,
        }
        assert await count(postgres_url, "runs") == 0
        assert await count(postgres_url, "events") == 0
    finally:
        await first.close()
        await second.close()


# Flow-control state: rows equivalent to none go, whatever the period; live ones stay.


async def flow_key(db: store.Store, kind: str, key: str, **fields: Any) -> None:
    """Write the ``flow_keys`` row of ``(app-fn, kind, key)`` as ingest does (lock, then update)."""
    async with db.transaction() as tx:
        row = await tx.lock_flow_key("app-fn", kind, key)
        for name, value in fields.items():
            setattr(row, name, value)
        await tx.update_flow_key(row)


async def keys_left(database_url: str, table: str) -> set[str]:
    """The ``kind/key`` (``flow_keys``) or ``key`` (``throttle_keys``) of the rows left in ``table``."""
    query = "SELECT kind || '/' || key FROM flow_keys" if table == "flow_keys" else "SELECT key FROM throttle_keys"
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            return {str(row[0]) for row in conn.execute(query)}
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(sql.SQL(query))
        return {str(row[0]) for row in await cursor.fetchall()}


async def test_flow_keys_equivalent_to_none_go_and_live_ones_stay(db: store.Store, database_url: str) -> None:
    queued = make_run(id=ulid_at(NOW - HOUR), created_at=NOW - HOUR)
    running = make_run(id=ulid_at(NOW - HOUR), status=records.RunStatus.RUNNING, started_at=NOW - HOUR)
    waiting = make_run(id=ulid_at(NOW - HOUR), created_at=NOW - HOUR)  # a debounced run, due later
    batching = make_run(id=ulid_at(NOW - HOUR), created_at=NOW - HOUR)  # an open batch
    ended = ended_run(NOW - HOUR)
    skipped = ended_run(NOW - HOUR, records.RunStatus.SKIPPED)  # a debounced run a later one replaced
    started = make_run(id=ulid_at(NOW - HOUR), status=records.RunStatus.RUNNING, started_at=NOW - HOUR)
    await insert(db, queued, running, waiting, batching, ended, skipped, started)
    # rate limits: the GCRA arrival time
    await flow_key(db, "rate_limit", "drained", due_at=NOW - 1)
    await flow_key(db, "rate_limit", "drained-now", due_at=NOW)
    await flow_key(db, "rate_limit", "unused")  # locked, then the run was turned away earlier
    await flow_key(db, "rate_limit", "in-window", due_at=NOW + 1)
    # singletons: the run holding the key
    await flow_key(db, "singleton", "free")
    await flow_key(db, "singleton", "ended", run_id=ended.id)
    await flow_key(db, "singleton", "deleted", run_id=ulid_at(NOW - 9 * DAY))  # its run purged
    await flow_key(db, "singleton", "running", run_id=running.id)
    await flow_key(db, "singleton", "queued", run_id=queued.id)
    # debounce: the pending run and when it is due
    await flow_key(db, "debounce", "pending", run_id=waiting.id, opened_at=NOW - 5_000, due_at=NOW + 5_000)
    await flow_key(db, "debounce", "due", run_id=queued.id, opened_at=NOW - 10_000, due_at=NOW)
    await flow_key(db, "debounce", "replaced", run_id=skipped.id, opened_at=NOW - 5_000, due_at=NOW + 5_000)
    await flow_key(db, "debounce", "empty")
    # batches: the open batch run, its start item, size and timeout
    open_batch = {"item_id": "item-1", "size": 2, "opened_at": NOW - 1_000}
    await flow_key(db, "batch", "open", run_id=batching.id, due_at=NOW + 4_000, **open_batch)
    await flow_key(db, "batch", "flushed", size=3, opened_at=NOW - 1_000)  # full: run and item cleared
    await flow_key(db, "batch", "timed-out", run_id=queued.id, due_at=NOW - 1, **open_batch)
    await flow_key(db, "batch", "claimed", run_id=started.id, due_at=NOW + 4_000, **open_batch)
    await flow_key(db, "someday", "unknown")  # a kind this version does not know: kept

    assert await purge_all(db, "purge_flow_keys", NOW) == {"flow_keys": 12}

    assert await keys_left(database_url, "flow_keys") == {
        "rate_limit/in-window",
        "singleton/running",
        "singleton/queued",
        "debounce/pending",
        "batch/open",
        "someday/unknown",
    }
    async with db.transaction() as tx:  # the kept rows are intact
        assert (await tx.lock_flow_key("app-fn", "rate_limit", "in-window")).due_at == NOW + 1
        assert await tx.lock_flow_key("app-fn", "batch", "open") == records.FlowKeyRecord(
            "app-fn", "batch", "open", batching.id, "item-1", 2, NOW - 1_000, NOW + 4_000
        )


async def test_a_flow_key_goes_once_its_run_ends_or_its_window_closes(db: store.Store, database_url: str) -> None:
    holder = make_run(id=ulid_at(NOW - HOUR), status=records.RunStatus.RUNNING, started_at=NOW - HOUR)
    pending = make_run(id=ulid_at(NOW - HOUR), created_at=NOW - HOUR)
    await insert(db, holder, pending)
    await flow_key(db, "singleton", "k", run_id=holder.id)
    await flow_key(db, "debounce", "k", run_id=pending.id, opened_at=NOW, due_at=NOW + 10_000)
    await flow_key(db, "rate_limit", "k", due_at=NOW + 10_000)

    assert await purge_all(db, "purge_flow_keys", NOW) == {}
    async with db.transaction() as tx:
        ended = dataclasses.replace(holder, status=records.RunStatus.COMPLETED, ended_at=NOW + 1)
        await tx.update_run(ended)
    assert await purge_all(db, "purge_flow_keys", NOW + 1) == {"flow_keys": 1}
    assert await purge_all(db, "purge_flow_keys", NOW + 9_999) == {}
    assert await purge_all(db, "purge_flow_keys", NOW + 10_000) == {"flow_keys": 2}
    assert await keys_left(database_url, "flow_keys") == set()


async def test_throttle_keys_whose_arrival_time_passed_go_and_the_rate_is_unchanged(
    db: store.Store, database_url: str
) -> None:
    interval = 30_000
    async with db.transaction() as tx:
        assert await tx.advance_throttle("drained", NOW - 2 * interval, interval) == NOW - interval
        assert await tx.advance_throttle("drained-now", NOW - interval, interval) == NOW
        for _ in range(3):  # a backlog: the third start is due 60 s from now
            tat = await tx.advance_throttle("busy", NOW, interval)
        assert tat == NOW + 3 * interval

    assert await purge_all(db, "purge_throttle_keys", NOW) == {"throttle_keys": 2}

    assert await keys_left(database_url, "throttle_keys") == {"busy"}
    async with db.transaction() as tx:
        # What the rows would have given: max(tat, now) + interval.
        assert await tx.advance_throttle("drained", NOW, interval) == NOW + interval
        assert await tx.advance_throttle("drained-now", NOW, interval) == NOW + interval
        assert await tx.advance_throttle("busy", NOW, interval) == NOW + 4 * interval


async def test_flow_and_throttle_keys_go_batch_by_batch(db: store.Store) -> None:
    for index in range(7):
        await flow_key(db, "rate_limit", f"user-{index}", due_at=NOW - index)
    await flow_key(db, "rate_limit", "live", due_at=NOW + 1)
    async with db.transaction() as tx:
        for index in range(7):
            await tx.advance_throttle(f"user-{index}", NOW - HOUR, 1_000)
        await tx.advance_throttle("live", NOW, 1_000)

    for verb, table in (("purge_flow_keys", "flow_keys"), ("purge_throttle_keys", "throttle_keys")):
        batches = [await getattr(db, verb)(NOW, 3) for _ in range(4)]
        assert [(batch.rows.get(table, 0), batch.full) for batch in batches] == [
            (3, True),
            (3, True),
            (1, False),
            (0, False),
        ], verb


async def test_a_pass_deletes_spent_flow_state_whatever_the_period(db: store.Store, database_url: str) -> None:
    await flow_key(db, "rate_limit", "drained", due_at=NOW - 1)
    await flow_key(db, "rate_limit", "live", due_at=NOW + 1)
    async with db.transaction() as tx:
        await tx.advance_throttle("drained", NOW - HOUR, 1_000)
        await tx.advance_throttle("live", NOW, 1_000)

    deleted = await retention.Retention(db, clock_.FakeClock(NOW), timedelta(days=365), batch=1).purge()

    assert deleted == {"flow_keys": 1, "throttle_keys": 1}
    assert await keys_left(database_url, "flow_keys") == {"rate_limit/live"}
    assert await keys_left(database_url, "throttle_keys") == {"live"}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_flow_key_an_ingest_holds_is_skipped_and_keeps_what_it_decided(
    db: store.Store, second_store: store.Store, database_url: str
) -> None:
    """The purge neither waits on nor deletes a row that an ingest has locked (SKIP LOCKED), and
    sees what the ingest wrote once it commits."""
    holder = make_run(id=ulid_at(NOW), created_at=NOW)
    await flow_key(db, "singleton", "k")  # free: equivalent to none
    await flow_key(db, "rate_limit", "other", due_at=NOW - 1)
    async with db.transaction() as tx:
        assert await tx.advance_throttle("t", NOW - HOUR, 1_000) == NOW - HOUR + 1_000
    async with db.transaction() as tx:
        row = await tx.lock_flow_key("app-fn", "singleton", "k")
        throttled = await tx.advance_throttle("t", NOW - HOUR, 1_000)  # locked too, still drained by NOW
        purged = await asyncio.wait_for(second_store.purge_flow_keys(NOW, 100), timeout=10)
        throttle_purged = await asyncio.wait_for(second_store.purge_throttle_keys(NOW, 100), timeout=10)
        await tx.insert_run(holder)
        row.run_id = holder.id
        await tx.update_flow_key(row)

    assert throttled == NOW - HOUR + 2_000
    assert purged.rows == {"flow_keys": 1}  # the other key only
    assert throttle_purged.rows == {}
    assert await purge_all(second_store, "purge_flow_keys", NOW) == {}
    assert await keys_left(database_url, "flow_keys") == {"singleton/k"}
    assert await purge_all(second_store, "purge_throttle_keys", NOW) == {"throttle_keys": 1}
