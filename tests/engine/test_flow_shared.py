"""Ingest-time flow control with two engines sending at once to one database: the limits hold
because the decisions are made under row locks in the database, not in either process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import timedelta

import pytest

import stepline
from stepline.engine import clock as clock_
from stepline.storage import records
from stepline.storage.records import RunStatus

SENDS = 24


def define(**options: object) -> tuple[stepline.Stepline, stepline.Function]:
    client = stepline.Stepline(app_id="flow-shared")

    @client.function(id="fn", trigger=stepline.on_event("shared/ev"), **options)  # type: ignore[arg-type]
    async def fn(ctx: stepline.Context) -> None:
        return None

    return client, fn


@pytest.fixture
async def engines(database_url: str) -> AsyncIterator[Callable[..., asyncio.Future[list[records.RunRecord]]]]:
    """``send_concurrently(**options)``: two engines on the database, ``SENDS`` events sent at once
    through both (one event per transaction), then every run of the function."""
    async with AsyncExitStack() as stack:

        async def send_concurrently(**options: object) -> list[records.RunRecord]:
            client, fn = define(**options)
            clock = clock_.FakeClock()
            pair = [
                await stack.enter_async_context(
                    stepline.Engine(client, [fn], database_url=database_url, clock=clock, background=False)
                )
                for _ in range(2)
            ]
            await asyncio.gather(
                *(pair[n % 2].send(stepline.Event("shared/ev", {"n": n, "group": "g"})) for n in range(SENDS))
            )
            return await pair[0].store.list_runs(limit=500)

        yield lambda **options: asyncio.ensure_future(send_concurrently(**options))


def by_status(runs: list[records.RunRecord]) -> dict[RunStatus, int]:
    counts: dict[RunStatus, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    return counts


async def test_rate_limit_holds_across_engines(engines: Callable[..., asyncio.Future[list[records.RunRecord]]]) -> None:
    runs = await engines(rate_limit=stepline.RateLimit(limit=3, period=timedelta(hours=1)))
    assert by_status(runs) == {RunStatus.QUEUED: 3, RunStatus.SKIPPED: SENDS - 3}


async def test_singleton_holds_across_engines(engines: Callable[..., asyncio.Future[list[records.RunRecord]]]) -> None:
    runs = await engines(singleton=stepline.Singleton(mode="skip", key="event.data.group"))
    assert by_status(runs) == {RunStatus.QUEUED: 1, RunStatus.SKIPPED: SENDS - 1}


async def test_singleton_cancel_leaves_one_run_across_engines(
    engines: Callable[..., asyncio.Future[list[records.RunRecord]]],
) -> None:
    runs = await engines(singleton=stepline.Singleton(mode="cancel"))
    assert by_status(runs) == {RunStatus.QUEUED: 1, RunStatus.CANCELLED: SENDS - 1}


async def test_debounce_leaves_one_pending_run_across_engines(
    engines: Callable[..., asyncio.Future[list[records.RunRecord]]],
) -> None:
    runs = await engines(debounce=stepline.Debounce(period=timedelta(seconds=30)))
    assert by_status(runs) == {RunStatus.QUEUED: 1, RunStatus.SKIPPED: SENDS - 1}


async def test_batches_take_every_event_once_across_engines(
    engines: Callable[..., asyncio.Future[list[records.RunRecord]]],
) -> None:
    runs = await engines(batch_events=stepline.Batch(max_size=5, timeout=timedelta(seconds=30)))
    sizes = sorted(len(run.events) for run in runs)
    numbers = sorted(event["data"]["n"] for run in runs for event in run.events)
    assert numbers == list(range(SENDS))  # none lost, none twice
    assert max(sizes) <= 5
    assert sizes == [4, 5, 5, 5, 5]  # each batch filled before the next opened


async def test_batches_of_events_locking_keys_in_opposite_orders_all_get_through(database_url: str) -> None:
    client, fn = define(rate_limit=stepline.RateLimit(limit=1000, period=timedelta(hours=1), key="event.data.group"))
    clock = clock_.FakeClock()
    async with AsyncExitStack() as stack:
        pair = [
            await stack.enter_async_context(
                stepline.Engine(client, [fn], database_url=database_url, clock=clock, background=False)
            )
            for _ in range(2)
        ]
        groups = ["a", "b", "c", "d"]
        sends = [
            pair[n % 2].send([stepline.Event("shared/ev", {"group": g}) for g in (groups if n % 2 else groups[::-1])])
            for n in range(SENDS)
        ]
        results = await asyncio.gather(*sends)
        runs = await pair[0].store.list_runs(limit=500)

    assert all(len(result.run_ids) == len(groups) for result in results)
    assert by_status(runs) == {RunStatus.QUEUED: SENDS * len(groups)}
