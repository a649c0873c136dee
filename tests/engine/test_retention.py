"""Retention in the engine: finished history older than the period goes, on a fake clock."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

import pytest

import stepline
from stepline.engine import observe, retention
from stepline.storage.records import RunStatus
from stepline.testing import FakeClock, TestEngine
from tests.engine.flow_support import with_flow
from tests.engine.support import get_run, start

DAY = timedelta(days=1)


def two_functions(client: stepline.Stepline) -> list[Any]:
    @client.function(id="quick", trigger=stepline.on_event("test/quick"))
    async def quick(ctx: stepline.Context) -> int:
        first = await ctx.step.run("first", lambda: 1)
        second = await ctx.step.run("second", lambda: 2)
        return first + second

    @client.function(id="sleeper", trigger=stepline.on_event("test/sleeper"))
    async def sleeper(ctx: stepline.Context) -> str:
        await ctx.step.run("before", lambda: "x")
        await ctx.step.sleep("month", timedelta(days=30))
        return "woke"

    return [quick, sleeper]


async def test_a_finished_run_goes_with_its_steps_and_event_and_a_sleeping_one_stays(database_url: str) -> None:
    client = stepline.Stepline(app_id="retention-runs")

    async with TestEngine(client, two_functions(client), database_url=database_url) as engine:
        quick_id = await start(engine, "test/quick")
        sleeper_id = await start(engine, "test/sleeper")
        await engine.run_until_idle()
        quick = await engine.store.get_run(quick_id)
        sleeping = await get_run(engine, sleeper_id)
        sleeping_record = await engine.store.get_run(sleeper_id)
        assert quick is not None
        assert sleeping_record is not None
        assert quick.status is RunStatus.COMPLETED
        assert sleeping.status is RunStatus.RUNNING

        engine.fake_clock.advance(6 * DAY)
        early = await engine.purge_history()
        assert "runs" not in early
        assert "events" not in early
        assert early.get("idempotency_keys") == 2  # the event ids' 24-hour keys: expired, gone
        engine.fake_clock.advance(2 * DAY)
        deleted = await engine.purge_history()

        assert deleted["runs"] == 1
        assert deleted["steps"] == 2
        assert await engine.get_run(quick_id) is None
        assert await engine.store.list_steps(quick_id) == []
        assert await engine.store.get_event(quick.event_id) is None
        assert await engine.get_run(sleeper_id) == sleeping
        assert await engine.store.get_event(sleeping_record.event_id) is not None

        await engine.advance(30 * DAY)  # the sleeper wakes and finishes, its history intact
        assert (await get_run(engine, sleeper_id)).output == "woke"


async def test_retention_off_deletes_nothing(database_url: str) -> None:
    client = stepline.Stepline(app_id="retention-off")
    clock = FakeClock()
    engine = stepline.Engine(
        client, two_functions(client), database_url=database_url, clock=clock, background=False, retention="off"
    )

    async with engine:
        sent = await engine.send(stepline.Event("test/quick", {}))
        await engine.run_until_idle()
        clock.advance(400 * DAY)

        assert await engine.purge_history() == {}
        run = await engine.get_run(sent.run_ids[0])
        assert run is not None
        assert run.status is RunStatus.COMPLETED
        assert len(run.steps) == 2
        record = await engine.store.get_run(run.id)
        assert record is not None
        assert await engine.store.get_event(record.event_id) is not None
    assert engine.retention is None


async def test_a_quota_still_holds_after_its_task_is_deleted(database_url: str) -> None:
    client = stepline.Stepline(app_id="retention-quota")
    monthly = stepline.Quota(feature="report", limit=1, window=timedelta(days=30))
    hourly = stepline.Quota(feature="chat", limit=1, window=timedelta(hours=1))

    async with TestEngine(client, [], database_url=database_url) as engine:
        report = await client.tasks.enqueue(
            kind="report", owner="bob", event=stepline.Event("test/nobody", {}), quota=monthly
        )
        await client.tasks.enqueue(kind="chat", owner="bob", event=stepline.Event("test/nobody", {}), quota=hourly)
        await engine.advance(8 * DAY)  # the sweeper fails both pending tasks after 10 minutes
        failed = await client.tasks.get(report.id)
        assert failed is not None
        assert failed.status == "failed"

        deleted = await engine.purge_history()

        assert deleted["tasks"] == 2
        assert deleted["quota_uses"] == 1  # the hour's use; the month's counts 22 more days
        assert await client.tasks.get(report.id) is None
        with pytest.raises(stepline.QuotaExceeded) as refused:
            await client.tasks.enqueue(
                kind="report", owner="bob", event=stepline.Event("test/nobody", {}), quota=monthly
            )
        assert refused.value.retry_after == 22 * 86_400
        await client.tasks.enqueue(kind="chat", owner="bob", event=stepline.Event("test/nobody", {}), quota=hourly)


async def test_the_background_pass_runs_after_start_survives_a_failure_and_stops_cleanly(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(retention, "FIRST_PASS_S", 0.0)
    monkeypatch.setattr(retention, "INTERVAL_S", 0.05)
    caplog.set_level(logging.INFO, logger="stepline.engine")
    client = stepline.Stepline(app_id="retention-loop")
    clock = FakeClock()
    failures_before = observe.REGISTRY.get_sample_value("stepline_retention_failures_total") or 0.0

    async with stepline.Engine(client, two_functions(client), database_url=database_url, clock=clock) as engine:
        sent = await engine.send(stepline.Event("test/quick", {}))
        run = await engine.wait_for_run(sent.run_ids[0], timeout=10)
        purge_runs = engine.store.purge_runs
        calls = 0

        async def fails_once(before: int, limit: int) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("the database went away")
            return await purge_runs(before, limit)

        monkeypatch.setattr(engine.store, "purge_runs", fails_once)
        clock.advance(8 * DAY)
        deadline = time.monotonic() + 10
        # The pass logs once it is through every table (the run goes first).
        while "retention deleted finished history" not in caplog.text:
            assert time.monotonic() < deadline, "no background pass deleted anything"
            await asyncio.sleep(0.02)
        assert await engine.get_run(run.id) is None
        stopping = time.monotonic()

    assert time.monotonic() - stopping < 5
    assert calls >= 2
    assert observe.REGISTRY.get_sample_value("stepline_retention_failures_total") == failures_before + 1
    assert "deleting finished history failed" in caplog.text
    assert "retention deleted finished history older than 1w: " in caplog.text


# Flow-control state: a pass deletes a key's row only when that changes nothing a user sees.


async def test_a_rate_limit_limits_alike_after_a_pass_whether_its_key_went_or_stayed(database_url: str) -> None:
    client = stepline.Stepline(app_id="retention-rate")

    @client.function(
        id="digest",
        trigger=stepline.on_event("test/digest"),
        rate_limit=stepline.RateLimit(limit=2, period=timedelta(hours=1), key="event.data.user"),
    )
    async def digest(ctx: stepline.Context) -> None:
        return None

    async with TestEngine(client, [digest], database_url=database_url) as engine:

        async def started(user: str, events: int) -> list[int]:
            sent = [await engine.send(stepline.Event("test/digest", {"user": user})) for _ in range(events)]
            return [len(result.run_ids) for result in sent]

        assert await started("busy", 2) == [1, 1]  # one start per 30 min, two at once: full for an hour
        assert await started("quiet", 1) == [1]  # room for one more until 30 min from now
        await engine.run_until_idle()
        assert "flow_keys" not in await engine.purge_history()
        assert await started("busy", 1) == [0]

        await engine.advance(timedelta(minutes=31))
        assert (await engine.purge_history()).get("flow_keys") == 1  # quiet's state has drained

        assert await started("busy", 2) == [1, 0]  # its kept row: only 31 of the 60 minutes regained
        assert await started("quiet", 3) == [1, 1, 0]  # as a key never used


async def test_a_singleton_key_goes_once_its_run_has_ended(database_url: str) -> None:
    client = stepline.Stepline(app_id="retention-singleton")

    @client.function(
        id="sync",
        trigger=stepline.on_event("test/sync"),
        singleton=stepline.Singleton(mode="skip", key="event.data.account"),
    )
    async def sync(ctx: stepline.Context) -> None:
        await ctx.step.sleep("pause", timedelta(minutes=10))

    async with TestEngine(client, [sync], database_url=database_url) as engine:
        first = await start(engine, "test/sync", {"account": "a"})
        await engine.run_until_idle()
        assert "flow_keys" not in await engine.purge_history()  # its run is sleeping
        assert (await engine.send(stepline.Event("test/sync", {"account": "a"}))).run_ids == []

        await engine.advance(timedelta(minutes=11))
        assert (await get_run(engine, first)).status is RunStatus.COMPLETED
        assert (await engine.purge_history()).get("flow_keys") == 1

        again = await start(engine, "test/sync", {"account": "a"})
        assert (await engine.send(stepline.Event("test/sync", {"account": "a"}))).run_ids == []
        await engine.advance(timedelta(minutes=11))
        assert (await get_run(engine, again)).status is RunStatus.COMPLETED


async def test_debounce_and_batch_keys_stay_while_open_and_go_once_they_fired(database_url: str) -> None:
    client = stepline.Stepline(app_id="retention-windows")
    seen: list[int] = []
    batches: list[list[int]] = []

    @client.function(
        id="reindex",
        trigger=stepline.on_event("test/edit"),
        debounce=stepline.Debounce(period=timedelta(seconds=10), key="event.data.doc"),
    )
    async def reindex(ctx: stepline.Context) -> None:
        seen.append(ctx.event.data["v"])

    @client.function(
        id="bulk",
        trigger=stepline.on_event("test/row"),
        batch_events=stepline.Batch(max_size=3, timeout=timedelta(seconds=5)),
    )
    async def bulk(ctx: stepline.Context) -> None:
        batches.append([event.data["n"] for event in ctx.events])

    async with TestEngine(client, [reindex, bulk], database_url=database_url) as engine:
        await engine.send(stepline.Event("test/edit", {"doc": "a", "v": 1}))
        for n in (0, 1):
            await engine.send(stepline.Event("test/row", {"n": n}))
        await engine.advance(timedelta(seconds=4))
        assert "flow_keys" not in await engine.purge_history()  # a pending run, an open batch

        await engine.send(stepline.Event("test/edit", {"doc": "a", "v": 2}))  # replaces v1
        await engine.send(stepline.Event("test/row", {"n": 2}))  # fills the batch: it starts now
        await engine.run_until_idle()
        assert batches == [[0, 1, 2]]
        assert (await engine.purge_history()).get("flow_keys") == 1  # the flushed batch's
        await engine.advance(timedelta(seconds=11))
        assert seen == [2]
        assert (await engine.purge_history()).get("flow_keys") == 1  # the fired debounce's

        await engine.send(stepline.Event("test/edit", {"doc": "a", "v": 3}))
        for n in (3, 4):
            await engine.send(stepline.Event("test/row", {"n": n}))
        await engine.advance(timedelta(seconds=11))

    assert seen == [2, 3]
    assert batches == [[0, 1, 2], [3, 4]]


async def test_a_throttle_key_goes_once_its_arrival_time_passed_and_starts_keep_their_pace(
    database_url: str,
) -> None:
    client = stepline.Stepline(app_id="retention-throttle")

    @client.function(id="work", trigger=stepline.on_event("test/work"))
    async def work(ctx: stepline.Context) -> None:
        return None

    throttled = with_flow(work, throttle={"limit": 1, "period": "1m"})
    async with TestEngine(client, [throttled], database_url=database_url) as engine:
        t0 = engine.fake_clock.now_ms()
        sent = (await engine.send([stepline.Event("test/work") for _ in range(2)])).run_ids
        assert "throttle_keys" not in await engine.purge_history()  # the next start is 2 min away
        sent += (await engine.send(stepline.Event("test/work"))).run_ids
        await engine.advance(timedelta(minutes=3))
        assert (await engine.purge_history()).get("throttle_keys") == 1
        sent += (await engine.send(stepline.Event("test/work"))).run_ids
        await engine.run_until_idle()
        runs = [await get_run(engine, run_id) for run_id in sent]

    assert [None if run.started_at is None else run.started_at - t0 for run in runs] == [0, 60_000, 120_000, 180_000]
