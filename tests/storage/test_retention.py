"""The retention verbs (``Store.purge_*``) on each backend: what goes, what stays, batches."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import sqlite3
from typing import Any

import psycopg
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

        passes = [
            retention.Retention(db, clock_.FakeClock(NOW), retention.DEFAULT, run_batch=7, batch=11).purge()
            for db in (first, second, first, second)
        ]
        results = await asyncio.gather(*passes)

        totals: dict[str, int] = {}
        for result in results:
            for table, deleted in result.items():
                totals[table] = totals.get(table, 0) + deleted
        assert totals == {"runs": 300, "steps": 300, "events": 300, "idempotency_keys": 300}
        assert await count(postgres_url, "runs") == 0
        assert await count(postgres_url, "events") == 0
    finally:
        await first.close()
        await second.close()
