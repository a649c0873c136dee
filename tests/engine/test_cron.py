"""Cron triggers fire on the fake clock, once per tick, across engine restarts and engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import stepline
from stepline.storage.records import RunStatus
from stepline.testing import FakeClock, TestEngine
from tests.engine.support import get_run

START = datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC)
"""30 s past a 5-minute boundary, so that tick counts do not depend on the wall clock."""


def _clock() -> FakeClock:
    return FakeClock(start_ms=int(START.timestamp() * 1000))


def _ticker(client: stepline.Stepline, fired: list[dict[str, Any]]) -> Any:
    @client.function(id="ticker", trigger=stepline.on_cron("*/5 * * * *"))
    async def ticker(ctx: stepline.Context) -> str:
        fired.append({"run_id": ctx.run_id, "name": ctx.event.name, "data": ctx.event.data})
        return "tick"

    return ticker


async def test_cron_fires_on_schedule(database_url: str) -> None:
    client = stepline.Stepline(app_id="cron-basic")
    fired: list[dict[str, Any]] = []
    ticker = _ticker(client, fired)

    async with TestEngine(client, [ticker], database_url=database_url, clock=_clock()) as engine:
        await engine.run_until_idle()
        assert fired == []
        await engine.advance(timedelta(minutes=4))  # 00:04:30
        assert fired == []
        await engine.advance(timedelta(minutes=7))  # 00:11:30: ticks at 00:05 and 00:10
        runs = [await get_run(engine, item["run_id"]) for item in fired]

    assert len(fired) == 2
    assert [item["name"] for item in fired] == ["inngest/scheduled.timer"] * 2
    assert [item["data"]["scheduledAt"] for item in fired] == ["2030-01-01T00:05:00Z", "2030-01-01T00:10:00Z"]
    assert all(item["data"]["cron"] == "*/5 * * * *" for item in fired)
    assert [run.event["name"] for run in runs] == ["inngest/scheduled.timer"] * 2
    assert all(run.status is RunStatus.COMPLETED and run.output == "tick" for run in runs)
    assert len({run.id for run in runs}) == 2


async def test_cron_does_not_double_fire_after_restart(database_url: str) -> None:
    client = stepline.Stepline(app_id="cron-restart")
    fired: list[dict[str, Any]] = []
    ticker = _ticker(client, fired)
    clock = _clock()

    async with TestEngine(client, [ticker], database_url=database_url, clock=clock) as engine:
        await engine.advance(timedelta(minutes=6))  # 00:06:30: the 00:05 tick
    assert len(fired) == 1

    async with TestEngine(client, [ticker], database_url=database_url, clock=clock) as engine:
        await engine.run_until_idle()
        assert len(fired) == 1, "registering again fired the schedule again"
        await engine.advance(timedelta(minutes=5))  # 00:11:30: the 00:10 tick
    assert [item["data"]["scheduledAt"] for item in fired] == ["2030-01-01T00:05:00Z", "2030-01-01T00:10:00Z"]


async def test_two_engines_on_one_database_fire_each_tick_once(database_url: str) -> None:
    client = stepline.Stepline(app_id="cron-two")
    fired: list[dict[str, Any]] = []
    ticker = _ticker(client, fired)
    clock = _clock()

    async with (
        TestEngine(client, [ticker], database_url=database_url, clock=clock) as first,
        TestEngine(client, [ticker], database_url=database_url, clock=clock) as second,
    ):
        clock.advance(timedelta(minutes=5))  # 00:05:30: one tick is due for both engines
        await first.run_until_idle()
        await second.run_until_idle()
        clock.advance(timedelta(minutes=5))  # 00:10:30
        await second.run_until_idle()
        await first.run_until_idle()

    assert [item["data"]["scheduledAt"] for item in fired] == ["2030-01-01T00:05:00Z", "2030-01-01T00:10:00Z"]


async def test_missed_ticks_fire_once_after_downtime(database_url: str) -> None:
    client = stepline.Stepline(app_id="cron-missed")
    fired: list[dict[str, Any]] = []
    ticker = _ticker(client, fired)
    clock = _clock()

    async with TestEngine(client, [ticker], database_url=database_url, clock=clock) as engine:
        await engine.run_until_idle()
    clock.advance(timedelta(minutes=30))  # 00:30:30: six ticks passed while no engine ran

    async with TestEngine(client, [ticker], database_url=database_url, clock=clock) as engine:
        await engine.run_until_idle()
        assert len(fired) == 1
        await engine.advance(timedelta(minutes=5))  # 00:35:30: the 00:35 tick

    assert len(fired) == 2
    assert fired[-1]["data"]["scheduledAt"] == "2030-01-01T00:35:00Z"


async def test_changed_schedule_takes_effect_on_restart(database_url: str) -> None:
    fired: list[dict[str, Any]] = []
    clock = _clock()
    first_client = stepline.Stepline(app_id="cron-change")
    async with TestEngine(first_client, [_ticker(first_client, fired)], database_url=database_url, clock=clock) as e:
        await e.advance(timedelta(minutes=6))  # 00:06:30: the 00:05 tick
    assert len(fired) == 1

    second_client = stepline.Stepline(app_id="cron-change")

    @second_client.function(id="ticker", trigger=stepline.on_cron("0 * * * *"))
    async def hourly(ctx: stepline.Context) -> str:
        fired.append({"run_id": ctx.run_id, "name": ctx.event.name, "data": ctx.event.data})
        return "tock"

    async with TestEngine(second_client, [hourly], database_url=database_url, clock=clock) as engine:
        await engine.advance(timedelta(minutes=50))  # 00:56:30: no */5 tick any more
        assert len(fired) == 1
        await engine.advance(timedelta(minutes=5))  # 01:01:30: the hourly tick

    assert [item["data"]["scheduledAt"] for item in fired] == ["2030-01-01T00:05:00Z", "2030-01-01T01:00:00Z"]


async def test_removed_cron_function_stops_firing(database_url: str) -> None:
    fired: list[dict[str, Any]] = []
    clock = _clock()
    client = stepline.Stepline(app_id="cron-removed")
    ticker = _ticker(client, fired)

    @client.function(id="other", trigger=stepline.on_event("test/other"))
    async def other(ctx: stepline.Context) -> None:
        return None

    async with TestEngine(client, [ticker, other], database_url=database_url, clock=clock) as engine:
        await engine.advance(timedelta(minutes=6))
    async with TestEngine(client, [other], database_url=database_url, clock=clock) as engine:
        await engine.advance(timedelta(minutes=30))

    assert len(fired) == 1


async def test_cron_in_a_time_zone(database_url: str) -> None:
    client = stepline.Stepline(app_id="cron-tz")
    fired: list[str] = []

    @client.function(id="morning", trigger=stepline.on_cron("0 9 * * *", tz="Europe/Paris"))
    async def morning(ctx: stepline.Context) -> None:
        fired.append(ctx.event.data["scheduledAt"])

    async with TestEngine(client, [morning], database_url=database_url, clock=_clock()) as engine:
        await engine.advance(timedelta(hours=7, minutes=59))  # 07:59:30Z = 08:59:30 in Paris
        assert fired == []
        await engine.advance(timedelta(minutes=1))

    assert fired == ["2030-01-01T08:00:00Z"]
