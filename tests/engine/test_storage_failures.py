"""A storage failure while the executor processes an item (the database restarted under it, a
statement failed): the item goes to a claimer again soon, not after its whole lease, and an
item that keeps failing backs off. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import timedelta
from typing import Any

import pytest

import stepline
from stepline import errors
from stepline.engine.engine import Engine
from stepline.storage import records

LEASE = timedelta(seconds=30)


async def ended(engine: Engine, run_id: str) -> records.RunRecord:
    """The run once it ended, read with ``get_run`` (``engine.wait_for_run`` reads through the
    verb the tests make fail)."""
    deadline = time.monotonic() + LEASE.total_seconds() + 10
    while (run := await engine.store.get_run(run_id)) is None or not run.status.is_terminal:
        assert time.monotonic() < deadline, f"run {run_id} did not end"
        await asyncio.sleep(0.02)
    return run


async def timed_run(engine: Engine) -> tuple[records.RunRecord, float]:
    """Send the event of ``counting_function``: its run once it ended, and the seconds that took."""
    started = time.monotonic()
    sent = await engine.send(stepline.Event("test/record", {}))
    run = await ended(engine, sent.run_ids[0])
    return run, time.monotonic() - started


def assert_done_after_one_failure(run: records.RunRecord, calls: list[str], failures: int) -> None:
    assert failures == 1
    assert run.status is records.RunStatus.COMPLETED
    assert run.output == "done"
    assert calls == ["work"]  # the step ran once: the failure came before it


def counting_engine(database_url: str, app_id: str, calls: list[str], lease: timedelta = LEASE) -> Engine:
    """An engine whose one function appends to ``calls`` each time its step runs."""
    client = stepline.Stepline(app_id=app_id)
    return stepline.Engine(client, [counting_function(client, calls)], database_url=database_url, lease=lease)


def counting_function(client: stepline.Stepline, calls: list[str]) -> Any:
    @client.function(id="record", trigger=stepline.on_event("test/record"))
    async def record(ctx: stepline.Context) -> str:
        async def work() -> str:
            calls.append("work")
            return "done"

        return await ctx.step.run("work", work)

    return record


async def test_an_item_whose_processing_failed_is_retried_in_a_second_not_after_its_lease(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    async with counting_engine(database_url, "storage-failures", calls) as engine:
        read = engine.store.get_run_with_steps
        failures = 0

        async def fails_once(run_id: str) -> Any:
            nonlocal failures
            if failures == 0:
                failures += 1
                raise errors.StorageError("PostgreSQL at db: select_run failed: the connection was cut")
            return await read(run_id)

        monkeypatch.setattr(engine.store, "get_run_with_steps", fails_once)
        run, took = await timed_run(engine)

    assert_done_after_one_failure(run, calls, failures)
    assert took < 5, f"the run waited {took:.1f} s: the failed item waited out its lease"


async def test_an_item_that_keeps_failing_backs_off(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    attempts: list[float] = []
    async with counting_engine(database_url, "storage-failures-backoff", calls) as engine:
        read = engine.store.get_run_with_steps

        async def fails_three_times(run_id: str) -> Any:
            attempts.append(time.monotonic())
            if len(attempts) <= 3:
                raise errors.StorageError("PostgreSQL at db: select_run failed: statement timeout")
            return await read(run_id)

        monkeypatch.setattr(engine.store, "get_run_with_steps", fails_three_times)
        sent = await engine.send(stepline.Event("test/record", {}))
        run = await ended(engine, sent.run_ids[0])

    assert run.status is records.RunStatus.COMPLETED
    assert calls == ["work"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    # 1 s, 2 s, 4 s after the first, second and third failures (each found by a poll, at most 1 s late)
    assert len(gaps) == 3, gaps
    for gap, delay in zip(gaps, (1.0, 2.0, 4.0), strict=True):
        assert delay - 0.1 <= gap < delay + 1.6, gaps


async def test_a_heartbeat_under_way_when_an_item_fails_does_not_undo_its_early_retry(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat reads the in-flight leases, then extends them; an item that fails between
    the two has its lease shortened for an early retry. Extending it after that shortening would
    put the retry back a whole lease."""
    lease = timedelta(seconds=6)  # a heartbeat every 2 s
    calls: list[str] = []
    async with counting_engine(database_url, "storage-failures-heartbeat", calls, lease) as engine:
        read = engine.store.get_run_with_steps
        extend = engine.store.extend_leases
        heartbeat_under_way = asyncio.Event()
        failures = 0

        async def fails_during_the_first_heartbeat(run_id: str) -> Any:
            nonlocal failures
            if failures == 0:
                failures += 1
                await heartbeat_under_way.wait()
                raise errors.StorageError("PostgreSQL at db: select_run failed: the connection was cut")
            return await read(run_id)

        async def slow_first_extension(leases: Any, until: int) -> Any:
            if not heartbeat_under_way.is_set():  # the heartbeat's: the failure happens meanwhile
                heartbeat_under_way.set()
                await asyncio.sleep(0.5)
            return await extend(leases, until)

        monkeypatch.setattr(engine.store, "get_run_with_steps", fails_during_the_first_heartbeat)
        monkeypatch.setattr(engine.store, "extend_leases", slow_first_extension)
        run, took = await timed_run(engine)

    assert_done_after_one_failure(run, calls, failures)
    # First heartbeat at 2 s, the retry 1 s after the failure (found by a poll at most 1 s late);
    # the whole lease again would be past 8 s.
    assert took < 5.5, f"the run took {took:.1f} s: the heartbeat extended the shortened lease"
