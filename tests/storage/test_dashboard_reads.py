"""The store verbs the dashboard adds, on each backend: a run's pauses and queue items, the ready
queue, runs per minute and step timings."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from stepline.storage import open_store, queries, records, store
from tests.server import support
from tests.server.support import NOW_MS, Seed


async def test_a_runs_pauses_and_queue_items(db: store.Store) -> None:
    [run, other] = await support.seed(
        db, [Seed(status=records.RunStatus.RUNNING), Seed(status=records.RunStatus.RUNNING)]
    )
    pause = records.PauseRecord(
        id=support.id_at(NOW_MS + 1),
        run_id=run.id,
        step_id="s" * 40,
        kind=records.PauseKind.WAIT,
        expires_at=NOW_MS + 60_000,
        created_at=NOW_MS + 1,
        timeout_item_id="timeout-1",
        event_name="shop/approved",
        expression="async.data.id == event.data.id",
        step_name="approval",
    )
    sleep = records.QueueItem(
        id=support.id_at(NOW_MS + 2),
        run_id=run.id,
        kind=records.ItemKind.WAKE,
        available_at=NOW_MS + 30_000,
        step_id="t" * 40,
        payload={"name": "nap"},
        created_at=NOW_MS + 2,
    )
    elsewhere = records.QueueItem(
        id=support.id_at(NOW_MS + 3),
        run_id=other.id,
        kind=records.ItemKind.DISCOVER,
        available_at=NOW_MS,
        created_at=NOW_MS + 3,
    )
    async with db.transaction() as tx:
        await tx.insert_pause(pause)
        await tx.enqueue_many([sleep, elsewhere])

    assert await db.run_pauses(run.id) == [pause]
    assert await db.run_pauses(other.id) == []
    assert [item.id for item in await db.run_queue_items(run.id)] == [sleep.id]
    assert (await db.run_queue_items(run.id))[0].payload == {"name": "nap"}

    assert await db.ready_queue(NOW_MS - 1) == records.ReadyQueue(0, None)
    assert await db.ready_queue(NOW_MS + 5) == records.ReadyQueue(1, NOW_MS)
    assert await db.ready_queue(NOW_MS + 40_000) == records.ReadyQueue(2, NOW_MS)


async def test_runs_per_minute_and_step_timings(db: store.Store) -> None:
    minute = 60_000
    start = NOW_MS - NOW_MS % minute
    seeds = [
        Seed(at=start + 5),  # completed: ends 2 ms later
        Seed(at=start + minute + 7, status=records.RunStatus.FAILED),
        Seed(at=start + minute + 9, status=records.RunStatus.RUNNING),
        Seed(at=start - 5),  # before the window
    ]
    runs = await support.seed(db, seeds)
    steps = [
        records.StepRecord(runs[0].id, "a" * 40, "a", "run", {"data": 1}, 0, 1, start + 10, start + 40),
        records.StepRecord(runs[0].id, "b" * 40, "b", "sleep", None, 1, 1, start + 40, start + 9_040),
        records.StepRecord(runs[1].id, "c" * 40, "c", "run", {"error": {}}, 0, 2, start + minute, start + minute + 900),
        records.StepRecord(runs[3].id, "d" * 40, "d", "run", {"data": 1}, 0, 1, start - 10, start - 2),
    ]
    async with db.transaction() as tx:
        for step in steps:
            assert await tx.record_step(step)

    counts = sorted((c.minute, c.what, c.count) for c in await db.runs_per_minute(start))
    assert counts == [
        (start, "completed", 1),
        (start, "started", 1),
        (start + minute, "failed", 1),
        (start + minute, "started", 2),
    ]
    timings = await db.step_timings(start, 10)
    assert timings == [records.StepTiming(start + minute + 900, 900), records.StepTiming(start + 40, 30)]
    assert await db.step_timings(start, 1) == timings[:1]


DASHBOARD_QUERIES: dict[str, tuple[dict[str, object], str]] = {
    "runs_started_per_minute": ({"lower": "01"}, "USING INDEX sqlite_autoindex_runs_1 (id>?)"),
    "runs_ended_per_minute": ({"since": 1}, "USING COVERING INDEX runs_by_ended (ended_at>?)"),
    "step_timings_since": ({"since": 1, "limit": 5}, "USING INDEX steps_by_ended (ended_at>?)"),
    "ready_queue": ({"now": 1}, "USING COVERING INDEX queue_ready (available_at<?)"),
    "run_pauses": ({"run_id": "x"}, "USING INDEX pauses_by_run (run_id=?)"),
    "run_queue_items": ({"run_id": "x"}, "USING INDEX queue_by_run (run_id=?)"),
}


async def test_sqlite_reads_each_dashboard_query_from_its_index(tmp_path: Path) -> None:
    path = tmp_path / "plans.db"
    await (await open_store(f"sqlite:///{path}")).close()
    named = queries.load_queries("sqlite")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for name, (params, index) in DASHBOARD_QUERIES.items():
            plan = [str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + named[name], dict(params))]
            assert any(index in step for step in plan), f"{name}: {plan}"
            assert not any(step.startswith("SCAN") for step in plan), f"{name}: {plan}"
