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
